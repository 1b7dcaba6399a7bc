"""The training spine: configs, the compiled loop, checkpoints, resume, devices, processes."""

import glob
import importlib
import os
import re
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from conftest import REPO, run_worker
from multimodal_jax import cli
from multimodal_jax import config_lib
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax import validation
from multimodal_jax.evaluation import grids
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import common

CONFIG = str(REPO / "configs" / "regression.py")


def load_config(path: str, arg: str | None = None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg), module


def tiny_config(data_dir: str, **train_overrides):
  config, _ = load_config(CONFIG, "runlocal")
  config.data.data_dir = data_dir
  config.data.builder_config = "tiny"
  config.data.batch_size = 4
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def config_flags_for(config) -> list[str]:
  """The command-line flags that reproduce `tiny_config` in a worker process."""
  flags = [f"--config={CONFIG}:runlocal", f"--config.data.data_dir={config.data.data_dir}",
           f"--config.data.builder_config={config.data.builder_config}",
           f"--config.data.batch_size={config.data.batch_size}"]
  flags += [f"--config.train.{k}={v}" for k, v in config.train.items()]
  return flags


# ---------------------------------------------------------------- configs


def all_config_variants():
  for path in sorted(glob.glob(str(REPO / "configs" / "*.py"))):
    _, module = load_config(path)
    for arg in module.VARIANTS:
      yield os.path.basename(path), arg


@pytest.mark.parametrize("name,arg", list(all_config_variants()))
def test_every_config_and_variant_loads_and_validates(name, arg):
  config, _ = load_config(str(REPO / "configs" / name), arg or None)
  assert config.is_locked
  validation.validate(config)
  with pytest.raises(AttributeError):
    config.train.num_stpes = 3  # A typo never passes silently.


def test_a_typo_in_an_unlocked_configs_method_section_fails_with_a_suggestion():
  config, _ = load_config(str(REPO / "configs" / "layout_imle.py"), "runlocal")
  config.unlock()
  validation.validate(config)  # unlocked, unchanged: valid
  for section, key, suggestion in [("imle", "num_smaples", "imle.num_samples"),
                                   ("imle.selection_distance", "pixel_wieght", "imle.selection_distance.pixel_weight")]:
    broken = ml_collections.ConfigDict(config.to_dict())
    target = broken.imle.selection_distance if "." in section else broken.imle
    target[key] = 3
    with pytest.raises(ValueError, match=rf"config\.{section}\.{key} is not a key.*did you mean {suggestion}\?"):
      validation.validate(broken)
  cgml, _ = load_config(str(REPO / "configs" / "cgml.py"), "runlocal")
  cgml.unlock()
  cgml.cgml.znet_optimizer.lerning_rate = 1e-3
  with pytest.raises(ValueError, match="did you mean cgml.znet_optimizer.learning_rate"):
    validation.validate(cgml)
  config.my_own_method = ml_collections.ConfigDict({"anything": 1})  # a user's section: theirs
  validation.validate(config)


def test_every_key_a_method_declares_is_read_by_the_package():
  source = "\n".join(p.read_text() for p in (REPO / "multimodal_jax").rglob("*.py"))
  for module in methods_base.METHODS.values():
    for section, schema in getattr(importlib.import_module(module), "CONFIG_SCHEMA", {}).items():
      for key in schema:
        reads = re.findall(rf"(?:\.{key}\b|\[\"{key}\"\]|get\(\"{key}\")", source)
        assert reads, f"{module} declares config.{section}.{key}, which nothing reads"


def test_parse_arg_types_and_unknown_names():
  arg = config_lib.parse_arg("runlocal,steps=7,data=digits", runlocal=False, steps=1, data="x")
  assert arg.runlocal is True and arg.steps == 7 and arg.data == "digits"
  with pytest.raises(ValueError, match="Unknown config argument 'stesp'"):
    config_lib.parse_arg("stesp=3", steps=1)


@pytest.mark.parametrize("key,value,message", [
    ("train.num_steps", -5, r"config.train.num_steps=-5 is invalid: must be > 0"),
    ("method", "regresion", r"config.method='regresion' is invalid: valid: \[.*'regression'"),
    ("data.name", "toy_scene", r"valid: \[.*'toy_scenes'"),
    ("model.name", "resnet", r"valid: \['conv_generator', 'crn', 'rrdb', 'unet'\]"),
    ("optimizer.schedule", "linear", r"valid: \['constant', 'cosine', 'poly'\]"),
])
def test_validate_names_the_bad_key(key, value, message):
  config, _ = load_config(CONFIG)
  section, _, field = key.rpartition(".")
  (config[section] if section else config)[field] = value
  with pytest.raises(ValueError, match=message):
    validation.validate(config)


def test_validate_batch_divisible_by_devices(monkeypatch):
  config, _ = load_config(CONFIG)
  config.data.batch_size = 6
  monkeypatch.setattr(jax, "device_count", lambda: 4)
  with pytest.raises(ValueError, match=r"data.batch_size=6 .*divisible by the number of devices \(4\)"):
    validation.validate(config)


def test_typo_on_the_command_line_fails_before_compiling(tmp_path):
  proc = subprocess.run(
      [sys.executable, "-m", "multimodal_jax.main", f"--config={CONFIG}", f"--workdir={tmp_path}",
       "--config.train.num_stpes=5"], capture_output=True, text=True, timeout=120, cwd=REPO)
  assert proc.returncode != 0
  assert "num_stpes" in proc.stderr
  assert not os.path.exists(tmp_path / "checkpoints")


def test_cpu_devices_flag_shards_the_run_over_that_many_devices(tmp_path, data_dir):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  proc = subprocess.run(
      [sys.executable, "-m", "multimodal_jax.main", f"--config={CONFIG}:runlocal", f"--workdir={tmp_path}",
       "--cpu_devices=2", f"--config.data.data_dir={data_dir}", "--config.train.num_steps=2"],
      capture_output=True, text=True, timeout=300, cwd=REPO, env=env)
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "global batch 8, 2 device(s)" in proc.stdout + proc.stderr
  both = subprocess.run(
      [sys.executable, "-m", "multimodal_jax.main", f"--config={CONFIG}:runlocal", f"--workdir={tmp_path}",
       "--cpu_devices=2"], capture_output=True, text=True, timeout=120, cwd=REPO,
      env=dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=2"))
  assert both.returncode != 0 and "not both" in both.stderr


# ---------------------------------------------------------------- steps


def _synthetic_batch(batch_size=2, h=8, w=16):
  rng = np.random.default_rng(0)
  x = rng.random((batch_size, h, w, 6), dtype=np.float32)
  y = rng.random((batch_size, h, w, 3), dtype=np.float32)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def _regression(config, batch):
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  return methods_base.make_method(config, spec)


def test_regression_loss_is_mean_absolute_error_and_golden_after_one_step():
  config, _ = load_config(CONFIG, "runlocal")
  batch = _synthetic_batch()
  method = _regression(config, batch)
  state = method.init(jax.random.PRNGKey(0))
  model_apply = lambda p, x: _apply_conv_generator(config, p, x)
  expected_loss = float(jnp.mean(jnp.abs(model_apply(state.networks["generator"].params, batch["x"])
                                         - batch["y"])))
  new_state, metrics = method.steps["train"](state, batch)
  assert float(metrics["loss"]) == pytest.approx(expected_loss, rel=1e-6)
  assert int(new_state.step) == 1
  # Golden values (CPU, float32): the loss before the first update and after it.
  assert float(metrics["loss"]) == pytest.approx(0.2599515, abs=2e-6)
  _, metrics2 = method.steps["train"](new_state, batch)
  assert float(metrics2["loss"]) == pytest.approx(0.2578956, abs=2e-6)


def _apply_conv_generator(config, params, x):
  from multimodal_jax.models import conv_generator  # pylint: disable=g-import-not-at-top
  model = conv_generator.ConvGenerator(out_channels=3, features=config.model.features,
                                       num_blocks=config.model.num_blocks)
  return model.apply({"params": params}, x)


def test_compiled_step_traces_once():
  config, _ = load_config(CONFIG, "runlocal")
  batch = _synthetic_batch()
  method = _regression(config, batch)
  traced_step = chex.assert_max_traces(method.steps["train"], n=1)
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  compiled = train.CompiledSteps({"train": traced_step}, replicated, sharded)
  state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(0))
  for _ in range(3):
    state = compiled("train", state, jax.device_put(batch, sharded))
  scalars, first_bad = compiled.flush()
  assert first_bad is None and int(state.step) == 3
  assert set(scalars) == {"loss", "grad_norm"}


def test_step_rngs_depend_only_on_seed_and_step():
  base = jax.random.PRNGKey(3)
  a = common.step_rngs(base, jnp.int32(5), "noise", "dropout")
  b = common.step_rngs(base, jnp.int32(5), "noise", "dropout")
  c = common.step_rngs(base, jnp.int32(6), "noise", "dropout")
  np.testing.assert_array_equal(jax.random.key_data(a["noise"]), jax.random.key_data(b["noise"]))
  assert not np.array_equal(jax.random.key_data(a["noise"]), jax.random.key_data(c["noise"]))
  assert not np.array_equal(jax.random.key_data(a["noise"]), jax.random.key_data(a["dropout"]))


def test_sample_grid_layout():
  x = np.zeros((2, 4, 8, 3), np.float32)
  samples = np.full((2, 3, 4, 8, 1), 0.5, np.float32)
  y = np.ones((2, 4, 8, 1), np.float32)
  grid = grids.sample_grid(x, samples, y, pad=1)
  assert grid.shape == (2 * 5 + 1, 5 * 9 + 1, 3)
  np.testing.assert_allclose(grid[1:5, 1:9], 0.0)  # input
  np.testing.assert_allclose(grid[1:5, 10:18], 0.5)  # first sample, grey -> RGB
  np.testing.assert_allclose(grid[1:5, 37:45], 1.0)  # ground truth


# ---------------------------------------------------------------- the loop


def _read_events(workdir):
  from tensorflow.python.summary.summary_iterator import summary_iterator  # pylint: disable=g-import-not-at-top
  tags = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  return tags


def test_full_run_under_mock_data_writes_tensorboard_and_checkpoints(tmp_path):
  # Mock records are random values of each feature's dtype: an image-to-image
  # dataset (label maps would hold invalid class ids).
  config = tiny_config(str(tmp_path / "data"))
  config.data.name = "local_photos_sr"
  with tfds.testing.mock_data(num_examples=16):
    state = train.train_and_evaluate(config, str(tmp_path / "wd"))
  assert int(state.step) == config.train.num_steps
  tags = _read_events(str(tmp_path / "wd"))
  for tag in ("loss", "grad_norm", "learning_rate", "train_steps_per_sec", "samples"):
    assert tag in tags, (tag, sorted(tags))
  assert max(tags["loss"]) == config.train.num_steps
  assert sorted(os.listdir(tmp_path / "wd" / "checkpoints"))[-1] == str(config.train.num_steps)


def test_nonfinite_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, data_dir,
                                                                               monkeypatch):
  monkeypatch.setitem(methods_base.METHODS, "nan_at_step_5", "nan_method")
  config = tiny_config(data_dir, num_steps=8, checkpoint_every=2, log_every=4)
  config.method = "nan_at_step_5"
  with pytest.raises(FloatingPointError, match=r"at step 5 .*last good checkpoint is step 4") as raised:
    train.train_and_evaluate(config, str(tmp_path))
  assert _committed_steps(tmp_path / "checkpoints") == [2, 4]
  # The CLI prints it as its one error line, with what to do (it was a 25-line traceback).
  line = cli.user_error_message(raised.value)
  assert line == str(raised.value) and "\n" not in line and "config.optimizer.learning_rate" in line


def _committed_steps(checkpoint_dir) -> list[int]:
  """Steps of the checkpoints orbax has committed (not its temporary folders)."""
  if not os.path.exists(checkpoint_dir):
    return []
  return sorted(int(s) for s in os.listdir(checkpoint_dir) if s.isdigit())


def _params_of(npz_path):
  data = np.load(npz_path)
  return {k: data[k] for k in data.files if k.startswith("state/")}


def _assert_same_params(a, b, atol):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_allclose(a[k], b[k], atol=atol, rtol=0, err_msg=k)


def test_sigterm_saves_a_checkpoint_and_exits_cleanly(tmp_path, data_dir):
  config = tiny_config(data_dir, num_steps=100000, checkpoint_every=100000, log_every=50,
                       sample_every=0)
  proc = run_worker(config_flags_for(config) + [f"--workdir={tmp_path}"], wait=False)
  deadline = time.time() + 240
  output = []
  while time.time() < deadline:
    line = proc.stdout.readline()
    output.append(line)
    if line.startswith("[step 50/"):
      break
  proc.send_signal(signal.SIGTERM)
  rest, _ = proc.communicate(timeout=120)
  assert proc.returncode == 0, "".join(output) + rest
  assert "Preempted: saved the checkpoint at step" in rest
  steps = _committed_steps(tmp_path / "checkpoints")
  assert len(steps) == 1 and 50 <= steps[0] < 100000


def test_two_processes_train_together_on_different_shards(tmp_path, data_dir):
  import portpicker  # pylint: disable=g-import-not-at-top
  port = portpicker.pick_unused_port()
  config = tiny_config(data_dir, num_steps=4, checkpoint_every=4, log_every=2, sample_every=0)
  procs, outs = [], []
  for pid in range(2):
    outs.append(tmp_path / f"p{pid}.npz")
    procs.append(run_worker(
        config_flags_for(config) + [
            f"--workdir={tmp_path / 'wd'}", f"--out={outs[-1]}",
            f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2", f"--process_id={pid}"],
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1"}, wait=False))
  logs = [p.communicate(timeout=300)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-6000:]
  p0, p1 = np.load(outs[0]), np.load(outs[1])
  assert p0["first_x"].shape == p1["first_x"].shape == (2,) + p0["first_x"].shape[1:]
  assert not np.array_equal(p0["first_x"], p1["first_x"]), "both processes read the same examples"
  _assert_same_params(_params_of(outs[0]), _params_of(outs[1]), atol=0)
  assert int(p0["step"]) == 4


def test_final_evals_print_the_evaluation_with_its_baselines_and_write_the_grid(data_dir, tmp_path, capsys):
  """issue 40 item 13: the README's main job ends with its evaluation next to the baselines and its grid."""
  config = tiny_config(data_dir, num_steps=2, checkpoint_every=2, log_every=2, sample_every=0,
                       final_evals=("modes",))
  train.train_and_evaluate(config, str(tmp_path))
  out = capsys.readouterr().out
  final = out[out.index("Final evaluation (modes;"):]
  assert "modes (K=12, 1/K=0.083" in final
  assert "baselines on these inputs: the true modes recall 1, precision 1; any deterministic method" in final
  assert f"Sample grid (4 test inputs x 8 samples, the ground truth last): {tmp_path / 'samples.png'}" in final
  assert os.path.exists(tmp_path / "samples.png") and os.path.exists(tmp_path / "eval.json")
  assert load_config(str(REPO / "configs" / "layout_imle.py"))[0].train.final_evals  # the README's main job
  config.train.final_evals = ("modes", "nonexistent")
  with pytest.raises(ValueError, match="train.final_evals"):
    validation.validate(config)
