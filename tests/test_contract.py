"""The contract every registered method keeps; a new method gets these tests by registering.

For each name in `methods.base.METHODS`, the method's smoke config (the first
`configs/*.py` whose `:runlocal` variant sets `config.method` to it; a method
without one fails `test_every_method_has_a_runlocal_config`) is run on the
tiny offline data:
  * each compiled step traces once over several rounds, metrics stay finite,
    and every network's learning rate is reported;
  * `sample` returns [B, N, H, W, C] in [0, 1];
  * SIGKILL after a checkpoint, then the same command again, ends bit-exactly
    where an uninterrupted run (in the test's process) ends (every array of
    the state);
  * 1 and 4 (fake CPU) devices reach the same state up to float tolerance.
Every config file's `VARIANTS` validate in tests/test_train.py.
"""

import functools
import glob

import chex
import jax
import numpy as np
import pytest

from conftest import REPO, run_worker
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.methods import base as methods_base
from test_train import load_config

# Runs of the contract: steps, and the kill point of the resume test (a round boundary of every
# method's smoke config: regression 1, imle 2, cgml 2 steps per round).
NUM_STEPS, KILL_AFTER = 8, 4


@functools.lru_cache(maxsize=None)
def smoke_config_path(method_name: str) -> str | None:
  """The first configs/*.py whose `:runlocal` config trains `method_name`."""
  for path in sorted(glob.glob(str(REPO / "configs" / "*.py"))):
    _, module = load_config(path)
    if "runlocal" in module.VARIANTS and load_config(path, "runlocal")[0].method == method_name:
      return path
  return None


def overrides(method_name: str) -> dict[str, object]:
  """The contract runs' config overrides (the in-process and the worker runs share them)."""
  config, _ = load_config(smoke_config_path(method_name), "runlocal")
  out = {"train.num_steps": NUM_STEPS, "train.checkpoint_every": KILL_AFTER, "train.log_every": 2,
         "train.sample_every": 0}
  if "time_steps" in config.get("imle", {}):
    # The step clock's host callbacks keep XLA's persistent cache (conftest.py) from storing a
    # program; without them every run of the same config after the first reuses its compilations.
    out["imle.time_steps"] = False
  return out


def smoke_config(method_name: str, data_dir: str):
  config, _ = load_config(smoke_config_path(method_name), "runlocal")
  config.data.data_dir = data_dir
  for key, value in overrides(method_name).items():
    section, name = key.split(".")
    config[section][name] = value
  return config


def worker_flags(method_name: str, data_dir: str) -> list[str]:
  return ([f"--config={smoke_config_path(method_name)}:runlocal", f"--config.data.data_dir={data_dir}"]
          + [f"--config.{key}={value}" for key, value in overrides(method_name).items()])


METHOD_NAMES = sorted(methods_base.METHODS)


def test_every_method_has_a_runlocal_config():
  missing = [name for name in METHOD_NAMES if smoke_config_path(name) is None]
  assert not missing, f"methods without a configs/*.py :runlocal variant: {missing}"


@pytest.mark.parametrize("method_name", METHOD_NAMES)
def test_steps_trace_once_metrics_finite_and_samples_in_range(method_name, data_dir, tmp_path):
  config = smoke_config(method_name, data_dir)
  method, batch_spec, data_iter = train.build_method(config, str(tmp_path))
  assert "index" in batch_spec, "batches carry each example's index"
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  chex.clear_trace_counter()
  compiled = train.CompiledSteps({k: chex.assert_max_traces(fn, n=1) for k, fn in method.steps.items()},
                                 replicated, sharded)
  state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(config.seed))
  batches = pipeline.iterate_global(data_iter, sharded)
  num_rounds = 3
  for _ in range(num_rounds):
    state = method.run_round(compiled, state, next(batches))
  scalars, first_bad = compiled.flush()
  assert first_bad is None, scalars
  assert all(np.isfinite(v) for v in scalars.values()), scalars
  assert int(state.step) == num_rounds * method.steps_per_round
  assert method.learning_rates and set(method.learning_rates) <= set(state.networks)

  x = jax.device_put(next(batches)["x"][:2], replicated)
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(1), 3))
  assert samples.shape == (2, 3) + tuple(batch_spec["y"].shape[1:])
  assert np.all(np.isfinite(samples)) and samples.min() >= 0.0 and samples.max() <= 1.0


def _state_of(npz_path) -> dict[str, np.ndarray]:
  data = np.load(npz_path)
  return {k: data[k] for k in data.files if k.startswith("state/")}


@pytest.mark.parametrize("method_name", METHOD_NAMES)
def test_sigkill_resume_is_bitwise_and_four_devices_agree(method_name, data_dir, tmp_path):
  flags = worker_flags(method_name, data_dir)
  one_device = {"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  outs = {name: tmp_path / f"{name}.npz" for name in ("resumed", "four")}
  # The uninterrupted run in this (one-device) process: the same programs as the workers', so they
  # reuse its compilations from the persistent cache, and one Python start-up less.
  assert jax.device_count() == 1, "the in-process reference run needs one device (unset XLA_FLAGS' device count)"
  state = train.train_and_evaluate(smoke_config(method_name, data_dir), str(tmp_path / "straight"))
  straight = {"state/" + jax.tree_util.keystr(path): np.asarray(leaf)
              for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}

  killed = run_worker(flags + [f"--workdir={tmp_path / 'b'}", f"--kill_after_checkpoint={KILL_AFTER}"],
                      env=one_device, wait=False)
  log, _ = killed.communicate(timeout=300)
  assert killed.returncode == -9, log[-3000:]
  assert f"Killing myself after the checkpoint at step {KILL_AFTER}" in log
  resumed = run_worker(flags + [f"--workdir={tmp_path / 'b'}", f"--out={outs['resumed']}"], env=one_device)
  assert f"Resuming from the checkpoint at step {KILL_AFTER}" in resumed.stdout

  run_worker(flags + [f"--workdir={tmp_path / 'four'}", f"--out={outs['four']}"],
             env={"XLA_FLAGS": "--xla_force_host_platform_device_count=4"})

  again, four = (_state_of(outs[k]) for k in ("resumed", "four"))
  assert straight.keys() == again.keys() == four.keys()
  assert any("networks" in k for k in straight)
  for key in straight:
    np.testing.assert_array_equal(straight[key], again[key], err_msg=f"resume changed {key}")
    # Reduction order differs on 4 devices; a GAN's alternating updates amplify that roundoff
    # (measured: 1.2e-5 on one of pix2pix's 8192 kernel entries after 6 rounds), Adam steps are ~lr = 2e-4.
    np.testing.assert_allclose(straight[key], four[key], rtol=1e-4, atol=5e-5,
                               err_msg=f"4 devices changed {key}")
  assert int(state.step) == int(np.load(outs["resumed"])["step"]) == NUM_STEPS
