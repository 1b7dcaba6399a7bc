"""Faults found by trying the project as a new user would (issue #14, items 4, 5, 8, 9, 10).

Each test reproduces one fault: a config error that printed a traceback, a
budget a round overshot, orphaned data workers, an eval split smaller than
asked for, inputs read wrongly or failing late, and INFO lines burying the
progress lines.
"""

import glob
import os
import pathlib
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from multimodal_jax import evaluate as evaluate_lib
from multimodal_jax import sample as sample_lib
from multimodal_jax import validation
from multimodal_jax.data import pipeline
from multimodal_jax.models import registry as models_registry
from multimodal_jax.models import vgg as vgg_lib

REGRESSION = str(REPO / "configs" / "regression.py")


def load_config(name: str, arg: str | None = None):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("cfg", REPO / "configs" / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def run_module(module: str, *args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        timeout=timeout, cwd=REPO, **kwargs)


def tiny_flags(data_dir: str) -> list[str]:
  return [f"--config={REGRESSION}:runlocal", f"--config.data.data_dir={data_dir}",
          "--config.data.builder_config=tiny", "--config.data.batch_size=4"]


def info_lines(text: str) -> list[str]:
  """absl's INFO lines ('I1123 00:48:04.105885 ...')."""
  return [line for line in text.splitlines() if line[:1] == "I" and line[1:5].isdigit()]


# ---------------------------------------------------------------- item 4: config errors


@pytest.mark.parametrize("override,named", [
    ("--config.train.num_stpes=5", "--config.train.num_stpes: the config has no key 'num_stpes'"),
    ("--config.model.features=0", "config.model.features=0 is invalid"),
])
def test_a_config_error_is_one_line_before_anything_runs(tmp_path, override, named):
  proc = run_module("multimodal_jax.main", f"--config={REGRESSION}", f"--workdir={tmp_path / 'w'}", override)
  assert proc.returncode == 2, proc.stderr[-3000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) <= 3, proc.stderr  # Was a 59-line chained traceback (typo) / 105 lines (features=0).
  assert lines[-1].startswith("error: ") and named in lines[-1]
  assert not info_lines(proc.stderr)
  assert not (tmp_path / "w").exists()


def test_verbosity_0_restores_info_lines(tmp_path):
  proc = run_module("multimodal_jax.main", f"--config={REGRESSION}", f"--workdir={tmp_path}", "--verbosity=0",
                    "--config.model.features=0")
  assert proc.returncode == 2
  assert any("Process 0 of 1." in line for line in info_lines(proc.stderr)), proc.stderr


def test_helpfull_prints_the_docstring_unformatted():
  proc = run_module("multimodal_jax.main", "--helpfull")
  assert "~10% slower" in proc.stdout + proc.stderr  # absl %-formatted "% s" into the program's path.


@pytest.mark.parametrize("name", ["regression.py", "srim.py", "cgml.py", "layout_imle.py", "latent_codes.py",
                                  "diversity.py"])
def test_every_model_size_must_be_positive(name):
  config = load_config(name)
  validation.validate(config)
  sections = [s for s in ("model", "discriminator") if s in config and config[s].get("name")]
  checked = 0
  for section in sections:
    for key in models_registry.SIZE_FIELDS:
      if key not in config[section]:
        continue
      for bad in (0, -1):
        broken = load_config(name)
        value = broken[section][key]
        broken[section][key] = tuple([bad] * len(value)) if isinstance(value, tuple) else bad
        with pytest.raises(ValueError, match=rf"^config\.{section}\.{key}=.* must be a positive int"):
          validation.validate(broken)
      checked += 1
  assert checked >= 2  # Every config's model has at least a width and a depth.


@pytest.mark.parametrize("name,arg,steps,nearest", [
    ("srim.py", None, 70, "50 or 100"),  # Ran silently to step 100.
    ("srim.py", None, 30, "50"),  # No round fits below: only the next one is valid.
    ("cgml.py", None, 901, "900 or 906"),
    ("layout_imle.py", "runlocal", 5, "4 or 6"),
])
def test_num_steps_must_be_whole_rounds(name, arg, steps, nearest):
  config = load_config(name, arg)
  config.train.num_steps = steps
  with pytest.raises(ValueError, match=rf"^config\.train\.num_steps={steps} is invalid: must be a multiple of "
                                       rf".*; nearest valid: {nearest}$"):
    validation.validate(config)
  config.train.num_steps = int(nearest.split()[-1])
  validation.validate(config)


# ---------------------------------------------------------------- item 5: orphaned grain workers


def _descendants(pid: int) -> set[int]:
  children = {int(c) for t in glob.glob(f"/proc/{pid}/task/*/children")
              for c in pathlib.Path(t).read_text().split()}
  return children.union(*(_descendants(c) for c in children)) if children else set()


def _alive(pid: int) -> bool:
  try:
    return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
  except (FileNotFoundError, ProcessLookupError):
    return False


def _cmdline(pid: int) -> bytes:
  try:
    return pathlib.Path(f"/proc/{pid}/cmdline").read_bytes()
  except (FileNotFoundError, ProcessLookupError):
    return b""


# A trainer's data side, without the model: the train iterator of the tiny regression
# config with 2 grain workers. `-c` keeps the workers from re-importing a main module.
_DATA_PARENT = """
import sys, time
from absl import flags
from multimodal_jax import config_lib
from multimodal_jax.data import pipeline
flags.FLAGS(["parent"])  # grain reads its flags.
config = config_lib.base_config()
config.data.data_dir, config.data.builder_config, config.data.batch_size = sys.argv[1], "tiny", 4
config.data.num_workers = 2
batches = pipeline.create_train_iterator(config)
next(batches), next(batches)
print("serving", flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(not glob.glob("/proc/self/task/*/children"), reason="reads /proc/PID/task/*/children")
def test_data_workers_exit_when_their_parent_is_killed(data_dir):
  proc = subprocess.Popen([sys.executable, "-c", _DATA_PARENT, data_dir], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  everything = set()
  try:
    killer = threading.Timer(240, proc.kill)  # A hung parent must not hang the test.
    killer.start()
    lines = iter(proc.stdout.readline, "")  # A fresh data_dir prints "Building the offline dataset ..." first.
    assert "serving\n" in lines, "the parent died before its workers served batches"
    killer.cancel()
    workers = {p for p in _descendants(proc.pid) if b"spawn_main" in _cmdline(p)}
    assert len(workers) == 2
    everything = _descendants(proc.pid)  # The workers and multiprocessing's resource tracker.
    proc.kill()
    proc.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(p) for p in everything):
      time.sleep(0.1)
    assert not [p for p in everything if _alive(p)]  # Stayed for > 60 s before.
  finally:
    if proc.poll() is None:
      proc.kill()
    for p in everything:
      if _alive(p):
        os.kill(p, signal.SIGKILL)


# ---------------------------------------------------------------- a finished run (items 8, 9, 10)


@pytest.fixture(scope="module")
def finished_run(data_dir):
  """A run of configs/regression.py:runlocal on the tiny data, through the CLI: (workdir, process)."""
  workdir = tempfile.mkdtemp(prefix="mmj_faults_")
  os.chmod(workdir, 0o755)  # Readable by the unprivileged user of the read-only test.
  proc = run_module("multimodal_jax.main", *tiny_flags(data_dir), f"--workdir={workdir}")
  assert proc.returncode == 0, proc.stderr[-4000:]
  yield workdir, proc
  shutil.rmtree(workdir, ignore_errors=True)


def test_a_run_prints_progress_and_no_info_lines(finished_run):
  _, proc = finished_run
  assert not info_lines(proc.stderr), proc.stderr[:3000]  # 1331 of 1368 lines of a 300-step run were INFO.
  assert "Training regression" in proc.stdout and "[step 6/6]" in proc.stdout


def test_evaluate_uses_a_smaller_eval_split_whole(finished_run, tmp_path, capsys):
  workdir, _ = finished_run
  result = evaluate_lib.evaluate(workdir, num_inputs=17, num_samples=2, mode_samples=2,
                                 weights_dir=str(tmp_path / "no_weights"))
  assert result["num_inputs"] == 16  # The tiny 'test' split has 16 examples.
  assert "has 16 examples, fewer than the 17 requested: using all 16." in capsys.readouterr().out


def test_eval_examples_fewer_than_requested(data_dir):
  config = load_config("regression.py", "runlocal")
  config.data.data_dir, config.data.builder_config = data_dir, "tiny"
  with pytest.raises(ValueError, match="has 16 examples, fewer than the 20 requested"):
    pipeline.load_eval_examples(config, 20)  # The training grids still insist.
  batch = pipeline.load_eval_examples(config, 20, allow_fewer=True)
  np.testing.assert_array_equal(batch["index"], np.arange(16))


# Root writes through any mode bits: as root, main runs with os.access saying "not writable".
_MAIN_AS_IF_READ_ONLY = """
import os, runpy
access = os.access
os.access = lambda path, mode, **kw: not mode & os.W_OK and access(path, mode, **kw)
runpy.run_module("multimodal_jax.main", run_name="__main__", alter_sys=True)
"""


def _snapshot(workdir: str) -> dict[str, float]:
  return {str(p): p.stat().st_mtime_ns for p in pathlib.Path(workdir).rglob("*")}


def test_a_finished_read_only_workdir_has_nothing_to_do(finished_run):
  workdir, _ = finished_run
  for root, dirs, files in os.walk(workdir):
    for name in dirs + files:
      path = os.path.join(root, name)
      os.chmod(path, os.stat(path).st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
  os.chmod(workdir, 0o555)
  command = ["-c", _MAIN_AS_IF_READ_ONLY] if os.geteuid() == 0 else ["-m", "multimodal_jax.main"]
  flags = [f"--config={REGRESSION}:runlocal", f"--workdir={workdir}"]
  try:
    before = _snapshot(workdir)
    proc = subprocess.run([sys.executable, *command, *flags], capture_output=True, text=True, timeout=300,
                          cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]  # Failed writing run_info.json.
    assert "Nothing to do: the checkpoint is already at step 6" in proc.stdout
    assert _snapshot(workdir) == before  # Nothing written, nothing touched.
    proc = subprocess.run([sys.executable, *command, *flags, "--config.train.num_steps=8"], capture_output=True,
                          text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 2 and "is not writable" in proc.stderr.strip().splitlines()[-1], proc.stderr
  finally:
    for root, dirs, _ in os.walk(workdir):
      for d in dirs:
        os.chmod(os.path.join(root, d), 0o755)
    os.chmod(workdir, 0o755)


# ---------------------------------------------------------------- item 9: sample inputs, weights files


def test_a_16_bit_png_is_scaled_by_its_bit_depth(tmp_path):
  path = str(tmp_path / "grey16.png")
  Image.fromarray(np.full((8, 8), 32896, np.uint16)).save(path)  # 32896 = 128 * 257.
  assert Image.open(path).mode == "I;16"
  same_size = sample_lib.load_input_png(path, (2, 8, 8, 1), (2, 8, 8, 3), "toy")
  super_resolution = sample_lib.load_input_png(path, (2, 4, 4, 3), (2, 16, 16, 3), "sr")
  np.testing.assert_allclose(same_size, 128 / 255, atol=1e-6)  # Was 1.0 (saturated).
  np.testing.assert_allclose(super_resolution, 128 / 255, atol=1e-6)


def test_a_16_bit_layout_keeps_its_class_ids(tmp_path):
  path = str(tmp_path / "layout16.png")
  Image.fromarray(np.array([[0, 1], [5, 2]], np.uint16)).save(path)
  x = sample_lib.load_input_png(path, (1, 2, 2, 6), (1, 2, 2, 3), "toy")
  np.testing.assert_array_equal(x[0].argmax(-1), [[0, 1], [5, 2]])


def test_a_decompression_bomb_is_a_one_line_error(tmp_path, monkeypatch):
  path = str(tmp_path / "big.png")
  Image.new("L", (40, 40)).save(path)
  for limit in (1000, 500):  # 1600 pixels: PIL's warning (> limit), then its error (> 2 x limit).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    with pytest.raises(sample_lib.InputError, match=r"^Input .*big.png is too large to decode safely: "):
      sample_lib.open_image(path)


def test_bad_input_and_out_fail_in_one_line_before_sampling(tmp_path):
  not_an_image = tmp_path / "notes.png"
  not_an_image.write_text("not an image")
  with pytest.raises(sample_lib.InputError, match=r"notes.png is not an image PIL can read"):
    sample_lib.open_image(str(not_an_image))
  with pytest.raises(sample_lib.InputError, match=r"^--out=.*grid: give a file name with an image extension"):
    sample_lib.check_out_path(str(tmp_path / "grid"))
  sample_lib.check_out_path(str(tmp_path / "grid.png"))
  # No workdir at all: these fail before the run would be restored.
  for args, named in (([f"--input={not_an_image}", f"--out={tmp_path / 'g.png'}"], "is not an image"),
                      ([f"--out={tmp_path / 'grid'}"], "--out=")):
    proc = run_module("multimodal_jax.sample", f"--workdir={tmp_path / 'none'}", *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], \
        proc.stderr[-3000:]


def test_a_garbage_weights_file_is_named(tmp_path):
  path = str(tmp_path / "vgg19.msgpack")
  for garbage in (bytes(range(256)) * 2, b"\x01", b""):
    with open(path, "wb") as f:
      f.write(garbage)
    with pytest.raises(ValueError, match=rf"^{path} is not a valid weights file .*convert_weights"):
      vgg_lib.load_weights_file(path)


def test_evaluate_and_sample_print_no_info_lines_and_a_bad_flag_is_one_line(finished_run, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(finished_run[0], workdir)  # evaluate writes eval.json; the shared run stays as it was
  proc = run_module("multimodal_jax.evaluate", f"--workdir={workdir}", "--num_inputs=2", "--num_samples=2",
                    "--mode_samples=2", f"--weights_dir={tmp_path / 'no_weights'}")
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert not info_lines(proc.stderr), proc.stderr[:3000]
  assert "Evaluated regression" in proc.stdout
  proc = run_module("multimodal_jax.sample", f"--workdir={workdir}", f"--out={tmp_path / 'grid.png'}",
                    "--num_inputs=1", "--num_samples=2")
  assert proc.returncode == 0 and (tmp_path / "grid.png").exists(), proc.stderr[-3000:]
  assert not info_lines(proc.stderr), proc.stderr[:3000]
  for module in ("multimodal_jax.evaluate", "multimodal_jax.sample"):
    proc = run_module(module, f"--workdir={workdir}", "--num_sampels=2")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "num_sampels" in lines[0], proc.stderr[-3000:]
  # A workdir that holds no run, and an extra the method does not have: one line each (were tracebacks).
  out = f"--out={tmp_path / 'g.png'}"
  for module, args, named in (("multimodal_jax.evaluate", [f"--workdir={tmp_path}"], "run_info.json not found"),
                              ("multimodal_jax.sample", [f"--workdir={tmp_path}", out], "run_info.json not found"),
                              ("multimodal_jax.sample", [f"--workdir={workdir}", out, "--extra=interpolation"],
                               "--extra=interpolation: method 'regression' has no such extra")):
    proc = run_module(module, *args)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and named in lines[0], proc.stderr[-3000:]
