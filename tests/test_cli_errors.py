"""The command-line programs as a newcomer meets them: one line per mistake, nothing lost, what to do next.

Every user error (a bad module, config file, builder, key; a busy, full or
read-only workdir; Ctrl-C) is one stderr line, `error: ...` naming the file or
key, exit status 2 (130 for Ctrl-C), and no traceback (multimodal_jax/cli.py).
A run is quiet (no dependency notes, no progress-bar escapes), ends with a
summary and the next commands, and `--list`, `--help`, `--config` and the
sample grid say what there is.

The programs run as subprocesses: most through tests/cli_probe.py, which
forks each from one process that has imported JAX and TensorFlow already
(~1-5 s per probe instead of ~10 s of start-up each), and the two that are
about start-up itself (the busy workdir refused in < 2 s, Ctrl-C while JAX
loads) as cold `python -m` processes.
"""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

REGRESSION = str(REPO / "configs" / "regression.py")
NO_TRACEBACK = "Traceback"

BAD_BUILDER = '''
"""A user's dataset whose builder forgets _generate_examples."""
import numpy as np
import tensorflow_datasets as tfds
from multimodal_jax.data import registry


class AbstractBlocks(registry.LocalBuilder):
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "mask": tfds.features.Tensor(shape=(8, 8), dtype=np.uint8)}))

  def _split_generators(self, dl_manager):
    return {"train": self._generate_examples(0)}


registry.register("abstract_blocks", registry.DatasetSpec(
    tfds_name="abstract_blocks", builder_cls=AbstractBlocks, train_split="train", eval_split="train",
    make_transforms=lambda data_config, train: [], input_to_rgb=lambda x: x))
'''

UNLOCKED_CONFIG = '''
from multimodal_jax import config_lib


def get_config(arg=None):
  c = config_lib.base_config()  # No c.lock() at the end.
  c.data.nmae = "toy_scenes"
  return c
'''

# A disk that fills up just before the checkpoint at step 6 (of runlocal's 3 and 6): on a tmpfs, a
# file takes the free space; without one, orbax's save fails as tensorstore reports ENOSPC.
# Writes zeros to `path` until the disk is full (a prelude shared by the probes below).
FILL = '''
def fill(path):
  with open(path, "ab", buffering=0) as f:
    try:
      while True:
        f.write(bytes(1 << 12))
    except OSError:
      pass
'''
FILL_BEFORE_SECOND_SAVE = FILL + '''
from multimodal_jax import train
save = train.save_checkpoint

def fill_then_save(manager, step, state, data_iter):
  if step >= 6:
    manager.wait_until_finished()  # Checkpoint 3 is whole.
    fill({filler!r})
  save(manager, step, state, data_iter)

train.save_checkpoint = fill_then_save
'''
SAVE_FINDS_NO_SPACE = '''
import orbax.checkpoint as ocp
orbax_save = ocp.CheckpointManager.save

def save_on_a_full_disk(self, step, *args, **kwargs):
  if step >= 6:
    raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: Failed to write 7241 bytes: No space "
                     "left on device [os_error_code='28']")
  return orbax_save(self, step, *args, **kwargs)

ocp.CheckpointManager.save = save_on_a_full_disk
'''

STILL_FULL = FILL + '''
import glob, os, shutil, collections
for tmp in glob.glob(os.path.join({workdir!r}, "checkpoints", "*.orbax-checkpoint-tmp")):
  shutil.rmtree(tmp)  # What orbax's manager removes when it starts: the disk stays full regardless.
if {filler!r}:
  fill({filler!r})
else:
  usage = collections.namedtuple("usage", "total used free")
  shutil.disk_usage = lambda path: usage(1 << 30, 1 << 30, 0)
'''

SPACE_FREED = '''
import os
if {filler!r} and os.path.exists({filler!r}):
  os.remove({filler!r})
'''

# Both Ctrl-C's of a user in a hurry: the first asks for a checkpoint, the second comes while the
# asynchronous save of that checkpoint is being written.
CTRL_C_TWICE_DURING_A_SAVE = '''
import os, signal, time
from multimodal_jax import train
save = train.save_checkpoint

def interrupted_save(manager, step, state, data_iter):
  os.kill(os.getpid(), signal.SIGINT)
  save(manager, step, state, data_iter)
  os.kill(os.getpid(), signal.SIGINT)
  time.sleep(30)

train.save_checkpoint = interrupted_save
'''

# A bug inside the package (the prelude's code has no file: not the user's).
PACKAGE_BUG = '''
from multimodal_jax import validation

def validate(config):
  raise RuntimeError("a bug in validation")

validation.validate = validate
'''

# The workdir cannot be written, as on a read-only mount (root writes through mode bits).
READ_ONLY_WORKDIR = '''
import builtins, errno
_open = builtins.open

def read_only_open(file, mode="r", *args, **kwargs):
  if str(file).startswith({workdir!r}) and any(c in mode for c in "wax+"):
    raise OSError(errno.EROFS, "Read-only file system", str(file))
  return _open(file, mode, *args, **kwargs)

builtins.open = read_only_open
'''


def _probe(name, module, *argv, cwd=None, env=None, prelude=None, timeout=300):
  return {"name": name, "module": f"multimodal_jax.{module}", "argv": list(argv), "cwd": cwd and str(cwd),
          "env": env or {}, "prelude": prelude and textwrap.dedent(prelude), "timeout": timeout}


def _mount_tmpfs(path: pathlib.Path, size: str) -> bool:
  path.mkdir()
  if os.geteuid() != 0:
    return False
  return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                        capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
  """Every probe's (status, stdout, stderr), from one tests/cli_probe.py run; and the paths they used."""
  tmp = tmp_path_factory.mktemp("cli")
  (tmp / "bad_syntax.py").write_text("from multimodal_jax import config_lib\ndef get_config(arg=None)\n  pass\n")
  (tmp / "bad_get_config.py").write_text("def get_config(arg=None):\n  steps = 10 // 0\n")
  (tmp / "bad_builder.py").write_text(BAD_BUILDER)
  (tmp / "unlocked.py").write_text(UNLOCKED_CONFIG)
  (tmp / "gone").mkdir()
  (tmp / "gone" / "run_info.json").write_text(json.dumps({"config": {}, "batch_spec": {}, "imports": ["gone_module"]}))
  data, run = tmp / "data", tmp / "run"
  tiny = [f"--config.data.data_dir={data}", "--config.data.builder_config=tiny", "--config.data.batch_size=4"]
  train = [f"--config={REGRESSION}:runlocal", *tiny]
  disk = tmp / "disk"
  on_tmpfs = _mount_tmpfs(disk, "4m")
  filler = str(disk / "filler") if on_tmpfs else ""
  full = disk / "run"
  evaluate = ["--num_inputs=2", "--num_samples=2", "--mode_samples=2"]
  spec = [
      _probe("import", "main", *train, "--import=nonexistent_mod", f"--workdir={tmp / 'w1'}"),
      _probe("syntax", "main", f"--config={tmp / 'bad_syntax.py'}", f"--workdir={tmp / 'w2'}"),
      _probe("get_config", "main", f"--config={tmp / 'bad_get_config.py'}", f"--workdir={tmp / 'w3'}"),
      _probe("syntax_traceback", "main", f"--config={tmp / 'bad_syntax.py'}", f"--workdir={tmp / 'w2'}",
             env={"MULTIMODAL_JAX_TRACEBACK": "1"}),
      _probe("get_config_verbose", "main", f"--config={tmp / 'bad_get_config.py'}", f"--workdir={tmp / 'w3'}",
             "--verbosity=0"),
      _probe("package_bug", "main", *train, f"--workdir={tmp / 'w7'}", prelude=PACKAGE_BUG),
      _probe("builder", "main", *train, "--import=bad_builder", "--config.data.name=abstract_blocks",
             f"--workdir={tmp / 'w4'}", cwd=tmp),
      _probe("unlocked", "main", f"--config={tmp / 'unlocked.py'}", f"--workdir={tmp / 'w5'}"),
      _probe("config_elsewhere", "main", "--config=configs/regression.py:runlocal", "--config.model.features=0",
             f"--workdir={tmp / 'w6'}", cwd=tmp),
      _probe("list", "main", "--list"),
      _probe("help", "main", "--help"),
      _probe("train", "main", *train, f"--workdir={run}"),  # Builds the tiny data into a fresh dir.
      _probe("evaluate_gone", "evaluate", f"--workdir={tmp / 'gone'}"),
      _probe("sample_gone", "sample", f"--workdir={tmp / 'gone'}", f"--out={tmp / 'g.png'}"),
      _probe("evaluate_read_only", "evaluate", f"--workdir={run}", *evaluate,
             prelude=READ_ONLY_WORKDIR.format(workdir=str(run))),
      _probe("evaluate_out", "evaluate", f"--workdir={run}", *evaluate, f"--out={tmp / 'eval.json'}",
             prelude=READ_ONLY_WORKDIR.format(workdir=str(run))),
      _probe("sample", "sample", f"--workdir={run}", f"--out={tmp / 'grid.png'}", "--num_inputs=2",
             "--num_samples=3"),
      _probe("disk_full", "main", *train, f"--workdir={full}",
             prelude=FILL_BEFORE_SECOND_SAVE.format(filler=filler) if on_tmpfs else SAVE_FINDS_NO_SPACE),
      _probe("disk_full_at_start", "main", *train, f"--workdir={full}",
             prelude=STILL_FULL.format(filler=filler, workdir=str(full))),
      _probe("disk_freed", "main", *train, f"--workdir={full}", prelude=SPACE_FREED.format(filler=filler)),
      _probe("ctrl_c_twice", "main", *train, f"--workdir={tmp / 'abort'}", prelude=CTRL_C_TWICE_DURING_A_SAVE,
             timeout=120),
      _probe("after_abort", "main", *train, f"--workdir={tmp / 'abort'}"),
  ]
  (tmp / "spec.json").write_text(json.dumps(spec))
  try:
    proc = subprocess.run([sys.executable, str(REPO / "tests" / "cli_probe.py"), str(tmp / "spec.json"),
                           str(tmp / "results.json")], capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads((tmp / "results.json").read_text())
    # What the disk probes leave is read before the tmpfs goes.
    paths = {"tmp": tmp, "run": run, "full": full, "on_tmpfs": on_tmpfs,
             "full_checkpoints": sorted(os.listdir(full / "checkpoints")) if (full / "checkpoints").exists() else []}
  finally:
    if on_tmpfs:
      subprocess.run(["umount", str(disk)], check=False)
  return results, paths


def _one_error_line(result, *named):
  """Asserts exit status 2 and one stderr line `error: ...` naming each of `named`, without a traceback."""
  lines = result["stderr"].strip().splitlines()
  assert result["status"] == 2 and len(lines) == 1, result
  assert lines[0].startswith("error: ") and NO_TRACEBACK not in result["stderr"], result["stderr"]
  for name in named:
    assert name in lines[0], (name, lines[0])
  return lines[0]


# ---------------------------------------------------------------- 1. one handler for user errors


def test_an_import_that_fails_is_one_line(probes):
  results, _ = probes
  _one_error_line(results["import"], "nonexistent_mod", "PYTHONPATH")  # Was a 32-line traceback.


def test_a_config_file_that_does_not_load_is_one_line_naming_its_line(probes):
  results, paths = probes
  _one_error_line(results["syntax"], f"{paths['tmp'] / 'bad_syntax.py'}:2", "SyntaxError")  # Was 59 lines.
  _one_error_line(results["get_config"], f"{paths['tmp'] / 'bad_get_config.py'}:2 (in get_config)",
                  "ZeroDivisionError")  # Was 43 lines.


def test_a_builder_missing_an_abstract_method_is_one_line(probes):
  results, paths = probes
  _one_error_line(results["builder"], "bad_builder", "AbstractBlocks", "_generate_examples",
                  str(paths["tmp"] / "bad_builder.py"))  # Was a 42-line TypeError while building.


def test_evaluate_and_sample_name_a_recorded_module_that_does_not_import(probes):
  results, _ = probes
  for name in ("evaluate_gone", "sample_gone"):
    _one_error_line(results[name], "gone_module", "run_info.json")  # Were 35-line tracebacks.


def test_a_bug_in_the_package_keeps_its_traceback_and_so_does_a_user_error_on_request(probes):
  results, paths = probes
  bug = results["package_bug"]
  assert bug["status"] == 1 and NO_TRACEBACK in bug["stderr"], bug
  assert bug["stderr"].strip().splitlines()[-1] == "RuntimeError: a bug in validation"
  for name in ("syntax_traceback", "get_config_verbose"):
    assert NO_TRACEBACK in results[name]["stderr"] and results[name]["status"] == 1, results[name]


# ---------------------------------------------------------------- 2. an unlocked config


def test_an_unlocked_config_with_an_unknown_key_fails_with_a_suggestion(probes):
  results, _ = probes
  _one_error_line(results["unlocked"], "config.data.nmae", "did you mean data.name?")  # Trained the default.


# ---------------------------------------------------------------- 3. a full disk


def test_a_full_disk_stops_the_run_in_one_line_keeps_the_checkpoints_and_resumes(probes):
  results, paths = probes
  _one_error_line(results["disk_full"], "No space left on the device", "step 3", str(paths["full"]))
  _one_error_line(results["disk_full_at_start"], "No room for the next checkpoint", "step 3")  # Was 27 lines.
  assert results["disk_full_at_start"]["seconds"] < 10  # Refused before JAX and the data load.
  freed = results["disk_freed"]
  assert freed["status"] == 0 and "Resuming from the checkpoint at step 3." in freed["stdout"], freed
  assert "3" in paths["full_checkpoints"] and "6" in paths["full_checkpoints"]


# ---------------------------------------------------------------- 4. evaluate --out, a read-only workdir


def test_evaluate_on_a_read_only_workdir_prints_the_numbers_then_names_out(probes):
  results, paths = probes
  result = results["evaluate_read_only"]
  _one_error_line(result, str(paths["run"] / "eval.json"), "--out=FILE")  # Was a 21-line OSError.
  assert "PSNR" in result["stdout"] and "TensorBoard skipped" in result["stdout"]
  out = results["evaluate_out"]
  assert out["status"] == 0 and not out["stderr"], out
  assert f"written to {paths['tmp'] / 'eval.json'}" in out["stdout"]
  assert json.loads((paths["tmp"] / "eval.json").read_text())["step"] == 6


# ---------------------------------------------------------------- 5. Ctrl-C


def test_a_second_ctrl_c_during_a_save_stops_at_once_and_the_run_restarts(probes):
  results, _ = probes
  result = results["ctrl_c_twice"]
  lines = result["stderr"].strip().splitlines()
  assert result["status"] == 130 and NO_TRACEBACK not in result["stderr"], result  # Was 55 lines.
  assert lines[0].startswith("Ctrl-C: saving a checkpoint") and lines[1].startswith("Interrupted (Ctrl-C)")
  assert len(lines) == 2 and result["seconds"] < 30  # Did not wait for the save's sleep.
  after = results["after_abort"]
  assert after["status"] == 0 and "Done: regression" in after["stdout"], after


def _cold_main(*args, program="main", **kwargs):
  # Ctrl-C raises KeyboardInterrupt in the program even where pytest ignores SIGINT.
  return subprocess.Popen([sys.executable, "-m", f"multimodal_jax.{program}", *args], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), **kwargs)


def test_ctrl_c_during_start_up_is_one_line(tmp_path):
  proc = _cold_main(f"--config={REGRESSION}:runlocal", f"--workdir={tmp_path / 'w'}")
  time.sleep(2.5)  # Loading JAX and TensorFlow, after the workdir's lock.
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  lines = err.strip().splitlines()
  assert proc.returncode == 130 and len(lines) == 1 and lines[0].startswith("Interrupted (Ctrl-C)"), err
  assert not (tmp_path / "w" / ".lock").exists()  # Was a 73-line KeyboardInterrupt.


def test_ctrl_c_while_evaluate_imports_is_one_line(tmp_path):
  proc = _cold_main(f"--workdir={tmp_path}", program="evaluate")
  time.sleep(1.5)  # Importing JAX, TensorFlow and the evaluators (~10 s), before absl parses the flags.
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=60)
  lines = err.strip().splitlines()
  assert proc.returncode == 130 and len(lines) == 1 and lines[0].startswith("Interrupted (Ctrl-C)"), err


# ---------------------------------------------------------------- 6. the workdir lock comes first


def test_a_busy_workdir_is_refused_in_under_two_seconds(tmp_path):
  holder = subprocess.Popen(["sleep", "60"])
  try:
    (tmp_path / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": holder.pid,
                                                "started": "2030-01-02T03:04:05+00:00", "token": "x"}))
    start = time.monotonic()
    proc = _cold_main(f"--config={REGRESSION}:runlocal", f"--workdir={tmp_path}")
    _, err = proc.communicate(timeout=60)
    seconds = time.monotonic() - start
  finally:
    holder.kill()
    holder.wait()
  _one_error_line({"status": proc.returncode, "stderr": err}, "is in use by another run", f"pid {holder.pid}")
  assert seconds < 2.0, seconds  # Was ~10-13 s: after JAX, TensorFlow and the data.


# ---------------------------------------------------------------- 7, 8. quiet runs that end with what to do next


def test_a_run_is_quiet_and_ends_with_a_summary_and_the_next_commands(probes):
  results, paths = probes
  result, run = results["train"], paths["run"]
  assert result["status"] == 0 and result["stderr"] == "", result["stderr"][-3000:]  # OpenCV, tfds, [A ...
  assert "\x1b[" not in result["stdout"] and "Downloading and preparing" not in result["stdout"]
  assert "  split 'train': 64 examples" in result["stdout"] and "  split 'test': 16 examples" in result["stdout"]
  summary = result["stdout"][result["stdout"].index("Done: regression on toy_scenes, 6 steps"):]
  assert "final loss=" in summary and f"newest checkpoint: {run / 'checkpoints' / '6'}" in summary
  for command in (f"python -m multimodal_jax.evaluate --workdir={run}",
                  f"python -m multimodal_jax.sample --workdir={run} --out=",
                  f"tensorboard --logdir={run}"):
    assert command in summary, summary
  # evaluate: no OpenCV note, and the missing LPIPS weights in one line (conftest hides them).
  assert results["evaluate_out"]["stdout"].count("LPIPS weights not found") == 1


# ---------------------------------------------------------------- 9. --help and --list


def test_help_lists_import_and_points_to_list_which_lists_everything(probes):
  results, _ = probes
  help_text = results["help"]["stdout"] + results["help"]["stderr"]
  assert "--import" in help_text and "--list" in help_text
  listing = results["list"]
  assert listing["status"] == 0, listing
  text = listing["stdout"]
  for expected in ("regression.py", "variants: (default), runlocal", "srim.py", "Methods", "imle",
                   "Models", "rrdb", "Datasets", "toy_scenes", "local_photos_sr"):
    assert expected in text, expected


# ---------------------------------------------------------------- 10. --config from anywhere


def test_config_resolves_from_the_project_root_with_a_line(probes):
  results, _ = probes
  result = results["config_elsewhere"]
  assert f"--config: using {REPO / 'configs' / 'regression.py'}" in result["stdout"]
  _one_error_line(result, "config.model.features=0")  # The file loaded: its values were checked.


# ---------------------------------------------------------------- 11. the sample grid


def test_the_sample_grid_has_a_truth_column_and_labels(probes):
  results, paths = probes
  result = results["sample"]
  assert result["status"] == 0 and "| truth" in result["stdout"], result
  grid = np.asarray(Image.open(paths["tmp"] / "grid.png"))
  # 2 inputs x (samples + differences) of 32x64 tiles; input, 3 samples, truth; pad 2; plus the titles.
  bare_h, bare_w = 4 * 34 + 2, 5 * 66 + 2
  band, margin = grid.shape[0] - bare_h, grid.shape[1] - bare_w
  assert 8 < band < 30 and 20 < margin < 80, grid.shape
  assert (grid[:band] < 128).any() and (grid[band:, :margin] < 128).any()  # Text in both bands.


def test_difference_grid_puts_the_truth_last_with_nothing_under_it():
  from multimodal_jax.evaluation import grids  # pylint: disable=g-import-not-at-top
  inputs = np.zeros((1, 2, 2, 3), np.float32)
  rows = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.1, 0.3)])[None]  # [1, 2, 2, 2, 1]
  truth = np.full((1, 2, 2, 1), 0.7, np.float32)
  grid = grids.difference_grid(inputs, rows, pad=1, diff_gain=4.0, truth_SxHxWxC=truth)
  assert grid.shape == (2 * 3 + 1, 4 * 3 + 1, 3)
  np.testing.assert_allclose(grid[1, 1 + 3 * 3], 0.7)  # The truth, last.
  np.testing.assert_allclose(grid[4, 1 + 3 * 2], 0.8)  # 4 |0.3 - 0.1|, under sample 2.
  np.testing.assert_allclose(grid[4, 1 + 3 * 3], 1.0)  # Nothing under the truth.
  labelled = grids.with_labels(grid, ["input", "1", "2", "truth"], ["eval 0"], (2, 2), pad=1, rows_per_label=2)
  assert labelled.shape[0] > grid.shape[0] and labelled.shape[1] > grid.shape[1]
  np.testing.assert_allclose(labelled[-grid.shape[0]:, -grid.shape[1]:], grid, atol=1 / 255)


# ---------------------------------------------------------------- 12. the licence


def test_the_project_has_an_apache_2_licence_and_says_so():
  assert "Apache License\n                           Version 2.0" in (REPO / "LICENSE").read_text()
  assert 'license="Apache-2.0"' in (REPO / "setup.py").read_text()
  assert (REPO / "third_party" / "lpips" / "LICENSE").exists()  # Third-party code keeps its own.
