"""The CPU random-bits workaround (multimodal_jax/jax_workarounds.py) changes compile time, never values.

It is installed by the programs (`cli.run`) and by this suite (conftest.py),
never by importing the package.
"""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import jax_workarounds


def test_the_suite_runs_with_the_workaround_installed():
  from jax._src.random import threefry2x32  # pylint: disable=g-import-not-at-top
  assert threefry2x32._threefry_random_bits_partitionable is jax_workarounds.flat_random_bits  # pylint: disable=protected-access
  assert jax.config.jax_threefry_partitionable  # the mode it applies to (JAX's default)


# In a fresh Python: importing the package, the loop and every method leaves JAX as
# it is; each program's entry (absl's app.run stubbed out) installs the workaround
# first. Between programs JAX's own function is put back and their flags removed.
_IMPORT_THEN_ENTER = textwrap.dedent("""\
    import importlib, runpy, sys
    from absl import app, flags
    from jax._src.random import threefry2x32
    jax_own = threefry2x32._threefry_random_bits_partitionable
    import multimodal_jax
    from multimodal_jax import jax_workarounds, train
    from multimodal_jax.methods import base
    for module in base.METHODS.values():
      importlib.import_module(module)
    assert threefry2x32._threefry_random_bits_partitionable is jax_own, "patched on import"
    entered = []
    app.run = lambda main, **kwargs: entered.append(main)
    flags_before = set(flags.FLAGS)
    for program in sys.argv[1:]:
      threefry2x32._threefry_random_bits_partitionable = jax_own
      runpy.run_module(program, run_name="__main__")
      main = entered.pop()
      assert main, program + " did not reach app.run"
      if program == "multimodal_jax.main":  # JAX is set up inside main(), once it holds the workdir's lock
        assert threefry2x32._threefry_random_bits_partitionable is jax_own, "main patched before its lock"
        flags.FLAGS(["main", "--list"])
        main(["main"])  # --list: sets the process up, prints the catalogue
      assert threefry2x32._threefry_random_bits_partitionable is jax_workarounds.flat_random_bits, program
      for name in set(flags.FLAGS) - flags_before:
        delattr(flags.FLAGS, name)
      print(program, "OK")
    """)
PROGRAMS = ["multimodal_jax.main", "multimodal_jax.evaluate", "multimodal_jax.sample"]


def test_importing_the_package_patches_nothing_and_each_program_installs_the_workaround():
  env = {k: v for k, v in os.environ.items() if k != jax_workarounds.ENV_FLAG}
  proc = subprocess.run([sys.executable, "-c", _IMPORT_THEN_ENTER, *PROGRAMS], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300, check=False)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
  assert [line for line in proc.stdout.splitlines() if line.endswith(" OK")] == [f"{p} OK" for p in PROGRAMS]


# Shapes that compile fast on JAX's own path too (the slow ones, e.g. (3, 3, 8, 10), take ~18 s).
@pytest.mark.parametrize("bit_width", [8, 16, 32])  # 64 needs jax_enable_x64
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4), (1, 6, 1, 2), (7,), ()])
def test_flat_bits_equal_jax_bits_for_every_width_and_shape(bit_width, shape):
  key = jax.random.PRNGKey(42)
  ours = jax.jit(jax_workarounds.flat_random_bits, static_argnums=(1, 2))(key, bit_width, shape)
  theirs = jax.jit(jax_workarounds.original_random_bits, static_argnums=(1, 2))(key, bit_width, shape)
  assert ours.shape == theirs.shape == shape and ours.dtype == theirs.dtype
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_public_samplers_draw_the_flat_values_reshaped():
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(np.asarray(jax.random.normal(key, (4, 3, 5))).ravel(),
                                np.asarray(jax.random.normal(key, (60,))))
  mask = jax.random.bernoulli(key, 0.3, (2, 8, 4, 3))
  np.testing.assert_array_equal(np.asarray(mask).ravel(), np.asarray(jax.random.bernoulli(key, 0.3, (192,))))
  assert jnp.issubdtype(mask.dtype, jnp.bool_)
