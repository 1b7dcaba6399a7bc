"""Workarounds for problems of the JAX/XLA versions we run on, installed explicitly by `install()`.

Importing `multimodal_jax` patches nothing: a process-wide change to a
dependency is the program's decision. The command-line programs (`cli.run`),
the experiment scripts and the test suite (tests/conftest.py) call `install()`
first; a library user who wants the faster CPU compiles calls it once, before
compiling anything.

Flat random bits on CPU (`install_flat_random_bits`)
----------------------------------------------------
With `jax_threefry_partitionable` (JAX's default), XLA:CPU's LLVM backend takes
seconds to compile threefry random bits of some multi-dimensional shapes:
`jax.random.normal(key, (3, 3, 8, 10))`, one 3x3 conv kernel's initialiser,
compiles in 18 s on the project's 2-core CPU, (3, 8, 10) in 2.6 s, while any
1-D shape up to 10^6 entries compiles in 0.2 s (jax 0.10.2; it goes away with
`--xla_backend_optimization_level=0`, so it is LLVM's optimisation of the
unrolled rounds). Every model init and every step that draws codes or dropout
masks paid it: conditional IMLE's init compiled in 24 s instead of 0.3 s.

Partitionable threefry counts the entries of the output in row-major order, so
the bits of shape S are exactly the bits of shape (prod S,) reshaped to S. The
workaround draws them that way on CPU: identical values (tests/
test_jax_workarounds.py checks every bit width), a fraction of the compile time
(`experiments/bench_compile.py` prints both). Accelerators keep JAX's own path.
Set MULTIMODAL_JAX_FLAT_RANDOM_BITS=0 to turn it off.
"""

from __future__ import annotations

import math
import os

import jax

ENV_FLAG = "MULTIMODAL_JAX_FLAT_RANDOM_BITS"

_original = None  # JAX's partitionable random-bits function, once the workaround is installed


def _threefry_module():
  # Private JAX module: if a JAX release moves it, the workaround is skipped (values never change).
  from jax._src.random import threefry2x32  # pylint: disable=g-import-not-at-top
  return threefry2x32


def flat_random_bits(key, bit_width, shape):
  """JAX's partitionable threefry bits of `shape`, drawn as one flat vector on CPU (identical values)."""
  shape = tuple(shape)
  if (len(shape) > 1 and all(isinstance(d, int) for d in shape)
      and jax.default_backend() == "cpu"):
    return _original(key, bit_width, (math.prod(shape),)).reshape(shape)
  return _original(key, bit_width, shape)


def install() -> None:
  """Installs every workaround of this module (today `install_flat_random_bits`); idempotent."""
  install_flat_random_bits()


def install_flat_random_bits() -> bool:
  """Routes threefry's partitionable random bits through `flat_random_bits`; True when installed."""
  global _original
  if os.environ.get(ENV_FLAG, "1") == "0":
    return False
  try:
    module = _threefry_module()
    current = module._threefry_random_bits_partitionable  # pylint: disable=protected-access
  except (ImportError, AttributeError):
    return False
  if _original is None and current is not flat_random_bits:
    _original = current
  module._threefry_random_bits_partitionable = flat_random_bits  # pylint: disable=protected-access
  return True


def original_random_bits(key, bit_width, shape):
  """JAX's own partitionable bits (for the parity test and the benchmark)."""
  return (_original or _threefry_module()._threefry_random_bits_partitionable)(key, bit_width, shape)  # pylint: disable=protected-access
