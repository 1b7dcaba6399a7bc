"""Faults around the workdir: corrupt checkpoints, two runs at once, another config, Ctrl-C, steps/s.

Issue #14, items 1, 2, 3, 6 and 7. Each test failed before its fix.
"""

import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import checkpointing
from multimodal_jax import inference
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax import workdir as workdir_lib
from test_train import config_flags_for, tiny_config


def _config(data_dir, **train_overrides):
  overrides = dict(num_steps=4, checkpoint_every=2, log_every=2, sample_every=0)
  overrides.update(train_overrides)
  return tiny_config(data_dir, **overrides)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, data_dir):
  """A workdir with checkpoints at steps 2 and 4 (copy it before changing it)."""
  workdir = str(tmp_path_factory.mktemp("trained"))
  train.train_and_evaluate(_config(data_dir), workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  return workdir


def _copy(trained, tmp_path) -> str:
  workdir = str(tmp_path / "wd")
  shutil.copytree(trained, workdir)
  return workdir


def _restore(workdir, data_dir):
  """checkpointing.restore_or_init as the loop calls it: (state, step, data_iter, manager)."""
  config = _config(data_dir)
  method, _, data_iter = train.build_method(config, workdir)
  replicated = jax.sharding.NamedSharding(sharding.make_mesh(), jax.sharding.PartitionSpec())
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                                jax.eval_shape(method.init, jax.random.PRNGKey(0)))
  manager = checkpointing.make_manager(workdir, config)
  try:
    state, step = checkpointing.restore_or_init(manager, lambda: None, abstract_state, data_iter)
  finally:
    manager.wait_until_finished()
    manager.close()
  return state, step, data_iter, manager


def _assert_same_tree(a, b):
  """Bitwise equal leaves at the same paths (the treedefs hold each method's own optimiser functions)."""
  flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(tree)}
  a, b = flat(a), flat(b)
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


# ---------------------------------------------------------------- 1. a corrupt newest checkpoint


def _garbage_metadata(step_dir):
  with open(os.path.join(step_dir, "state", "_METADATA"), "wb") as f:
    f.write(b"\xff\xfe not json " * 40)


def _data_files(step_dir):
  files = glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True)
  assert files
  return files


def _truncate_data(step_dir):
  for path in _data_files(step_dir):
    with open(path, "rb") as f:
      data = f.read()
    with open(path, "wb") as f:
      f.write(data[:len(data) // 2])


def _empty_data(step_dir):
  for path in _data_files(step_dir):
    open(path, "wb").close()


def _delete_manifest(step_dir):
  os.remove(os.path.join(step_dir, "state", "manifest.ocdbt"))


def _garbage_iterator(step_dir):
  (path,) = glob.glob(os.path.join(step_dir, "data_iter", "*.json"))
  with open(path, "w") as f:
    f.write("{garbage")


CORRUPTIONS = {
    "garbage_metadata": (_garbage_metadata, "UnicodeDecodeError"),
    "truncated_data": (_truncate_data, "(Exception|ValueError)"),  # Which read fails first varies.
    "emptied_data": (_empty_data, "(Exception|ValueError)"),
    "deleted_manifest": (_delete_manifest, "ValueError"),
    "garbage_iterator": (_garbage_iterator, "JSONDecodeError"),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_a_corrupt_newest_checkpoint_is_skipped_and_moved_aside(kind, trained, tmp_path, data_dir, capsys):
  corrupt, exception_name = CORRUPTIONS[kind]
  workdir = _copy(trained, tmp_path)
  corrupt(os.path.join(workdir, "checkpoints", "4"))
  state, step, data_iter, manager = _restore(workdir, data_dir)
  pristine_state, _, pristine_iter, _ = _restore(_copy_step(trained, tmp_path, 2), data_dir)

  assert step == 2 and manager.all_steps() == [2]
  _assert_same_tree(state, pristine_state)
  assert data_iter.get_state() == pristine_iter.get_state()
  out = capsys.readouterr().out
  assert re.search(rf"^The checkpoint at step 4 does not restore \({exception_name}: [^\n]+\); trying the next "
                   r"older one\.$", out, re.M), out
  (moved,) = glob.glob(os.path.join(workdir, "checkpoints_corrupt", "4-*"))
  assert f"Moved the checkpoint at step 4, which does not restore, to {moved}." in out
  assert os.listdir(os.path.join(workdir, "checkpoints")) == ["2"]
  # Kept, not deleted: the moved copy still holds the corrupt files.
  assert sorted(os.listdir(moved)) == sorted(os.listdir(os.path.join(trained, "checkpoints", "4")))


def _copy_step(trained, tmp_path, step) -> str:
  """A copy of `trained` holding only checkpoint `step`."""
  workdir = str(tmp_path / f"only_{step}")
  shutil.copytree(trained, workdir)
  for name in os.listdir(os.path.join(workdir, "checkpoints")):
    if name != str(step):
      shutil.rmtree(os.path.join(workdir, "checkpoints", name))
  return workdir


def test_when_no_checkpoint_restores_the_error_lists_them_and_nothing_moves(trained, tmp_path, data_dir):
  workdir = _copy(trained, tmp_path)
  _garbage_iterator(os.path.join(workdir, "checkpoints", "4"))
  _delete_manifest(os.path.join(workdir, "checkpoints", "2"))
  with pytest.raises(checkpointing.NoCheckpointRestoresError) as error:
    _restore(workdir, data_dir)
  message = str(error.value)
  assert "\n" not in message
  assert re.match(r"No checkpoint in .*/checkpoints restores \(step 4: JSONDecodeError: .*; step 2: "
                  r"ValueError: .*\); nothing was moved\.", message), message
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert not os.path.exists(os.path.join(workdir, "checkpoints_corrupt"))


def test_training_resumes_past_a_corrupt_checkpoint_and_replays_exactly(trained, tmp_path, data_dir, capsys):
  # The repro: garbage in the newest checkpoint's state/_METADATA, rerun.
  workdir = _copy(trained, tmp_path)
  _garbage_metadata(os.path.join(workdir, "checkpoints", "4"))
  state = train.train_and_evaluate(_config(data_dir), workdir)
  assert "Resuming from the checkpoint at step 2." in capsys.readouterr().out
  assert int(state.step) == 4
  original, _, _, _ = _restore(_copy_step(trained, tmp_path, 4), data_dir)
  _assert_same_tree(jax.device_get(state), original)  # Steps 3-4 replayed bitwise.
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
  assert len(glob.glob(os.path.join(workdir, "checkpoints_corrupt", "4-*"))) == 1


# ---------------------------------------------------------------- 2. the workdir lock


def _write_lock(workdir, **holder):
  os.makedirs(workdir, exist_ok=True)
  holder = dict({"host": socket.gethostname(), "started": "2030-01-02T03:04:05+00:00", "token": "t"}, **holder)
  with open(os.path.join(workdir, workdir_lib.LOCK_FILE), "w") as f:
    json.dump(holder, f)
  return holder


def _lock_content(workdir):
  with open(os.path.join(workdir, workdir_lib.LOCK_FILE)) as f:
    return json.load(f)


def _reaped_pid() -> int:
  """The pid of a process that has exited and been reaped: it runs nothing."""
  child = subprocess.Popen(["true"])
  child.wait()
  return child.pid


def test_a_workdir_whose_checkpoints_would_not_restore_is_refused_before_training(tmp_path, data_dir):
  """Under `a[1]` orbax saved every checkpoint and none restored: now one line, nothing trained."""
  workdir = str(tmp_path / "run[1]")
  with pytest.raises(workdir_lib.WorkdirError, match=r"contains '\[' and '\]'.*do not restore"):
    train.train_and_evaluate(tiny_config(data_dir), workdir)
  assert not os.path.exists(os.path.join(workdir, "checkpoints"))
  workdir_lib.check_path(str(tmp_path / "a b{c}*?%'"))  # the others save and restore (tried)


def test_a_run_on_a_workdir_locked_by_a_live_process_fails_at_once_naming_it(tmp_path, data_dir):
  holder_proc = subprocess.Popen(["sleep", "60"])
  try:
    holder = _write_lock(str(tmp_path), pid=holder_proc.pid)
    with pytest.raises(workdir_lib.WorkdirLockedError) as error:
      train.train_and_evaluate(_config(data_dir), str(tmp_path))
  finally:
    holder_proc.kill()
    holder_proc.wait()
  message = str(error.value)
  assert "\n" not in message
  assert (f"is in use by another run: pid {holder_proc.pid} on host {socket.gethostname()}, started "
          "2030-01-02T03:04:05+00:00") in message and "another --workdir" in message
  assert _lock_content(str(tmp_path)) == holder  # Untouched.
  assert sorted(os.listdir(tmp_path)) == [workdir_lib.LOCK_FILE]  # Failed before writing anything.


def test_a_lock_from_another_host_is_not_taken_over_and_the_error_says_how_to_remove_it(tmp_path):
  holder = _write_lock(str(tmp_path), host="some-other-host", pid=os.getpid())
  path = os.path.join(str(tmp_path), workdir_lib.LOCK_FILE)
  with pytest.raises(workdir_lib.WorkdirLockedError,
                     match=re.escape(f"pid {os.getpid()} on host some-other-host, started 2030-01-02T03:04:05")
                     + r".*cannot be checked from here: if that run has ended, delete " + re.escape(path)):
    with workdir_lib.lock(str(tmp_path)):
      pass
  assert _lock_content(str(tmp_path)) == holder


def test_a_stale_lock_of_a_dead_process_is_taken_over_and_released(tmp_path, capsys):
  dead = _reaped_pid()
  _write_lock(str(tmp_path), pid=dead)
  with workdir_lib.lock(str(tmp_path)):
    mine = _lock_content(str(tmp_path))
    assert mine["pid"] == os.getpid() and mine["host"] == socket.gethostname()
  assert f"Taking over the stale lock {tmp_path}/.lock: pid {dead} on host" in capsys.readouterr().out
  assert not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)


def test_the_lock_is_released_on_an_exception_and_only_process_0_takes_it(tmp_path):
  with pytest.raises(ZeroDivisionError):
    with workdir_lib.lock(str(tmp_path)):
      assert os.path.exists(tmp_path / workdir_lib.LOCK_FILE)
      _ = 1 / 0
  assert not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)
  with workdir_lib.lock(str(tmp_path), enabled=False):
    assert not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)
  # The same process locking the same workdir twice (two loops in threads) is refused too.
  with workdir_lib.lock(str(tmp_path)):
    with pytest.raises(workdir_lib.WorkdirLockedError, match="is in use by another run"):
      with workdir_lib.lock(str(tmp_path)):
        pass


def test_a_new_workdir_is_locked_at_once_and_left_only_if_the_run_wrote_into_it(tmp_path):
  # main locks a workdir that does not exist yet before JAX starts: a second run started beside the
  # first is refused at once, and a run refused for a bad value leaves no empty folder behind.
  new = tmp_path / "new"
  with workdir_lib.lock(str(new)):
    with pytest.raises(workdir_lib.WorkdirLockedError, match="is in use by another run"):
      with workdir_lib.lock(str(new)):
        pass
  assert not new.exists()
  with workdir_lib.lock(str(new)):
    (new / "run_info.json").write_text("{}")
  assert sorted(os.listdir(new)) == ["run_info.json"]


def test_a_takeover_never_removes_a_lock_that_changed_since_it_was_read(tmp_path):
  # Two runs found the same stale lock; the other one replaced it first.
  stale = _write_lock(str(tmp_path), pid=_reaped_pid())
  fresh = _write_lock(str(tmp_path), pid=os.getpid(), token="fresh")
  path = os.path.join(str(tmp_path), workdir_lib.LOCK_FILE)
  assert not workdir_lib._remove_stale(path, stale)  # pylint: disable=protected-access
  assert _lock_content(str(tmp_path)) == fresh


# ---------------------------------------------------------------- 3. another config in the workdir


def test_resuming_with_keys_that_shape_the_state_fails_naming_them(trained, tmp_path, data_dir):
  workdir = _copy(trained, tmp_path)
  config = _config(data_dir, num_steps=6)
  config.model.features = 16
  config.optimizer.learning_rate = 0.002
  prepared_before = os.path.getmtime(os.path.join(workdir, workdir_lib.RUN_INFO))
  with pytest.raises(workdir_lib.ConfigMismatchError) as error:
    train.train_and_evaluate(config, workdir)
  message = str(error.value)
  assert "\n" not in message
  assert (f"{workdir} holds a run of another config (model.features: 8 -> 16, optimizer.learning_rate: "
          "0.001 -> 0.002; recorded in") in message
  assert "use a new --workdir" in message and "num_steps" not in message
  assert os.path.getmtime(os.path.join(workdir, workdir_lib.RUN_INFO)) == prepared_before
  assert not os.path.exists(os.path.join(workdir, workdir_lib.LOCK_FILE))  # Released on the error.


def test_keys_that_may_change_on_resume_pass_the_config_check(trained, data_dir):
  config = _config(data_dir)
  changed = []
  for key in workdir_lib.RESUMABLE_KEYS:
    *sections, field = key.split(".")
    parent = config[sections[0]] if sections else config
    if field not in parent:
      continue
    value = parent[field]
    parent[field] = (not value if isinstance(value, bool) else value + 1 if isinstance(value, int)
                     else value[:1] if isinstance(value, tuple) else value + "_elsewhere")
    changed.append(key)
  assert {"train.num_steps", "train.log_every", "data.num_workers", "data.data_dir", "evals"} <= set(changed)
  workdir_lib.check_config_unchanged(trained, config)  # Does not raise.
  readme = (REPO / "README.md").read_text()
  for key in workdir_lib.RESUMABLE_KEYS:  # The README lists them.
    assert key.split(".")[-1] in readme[readme.index("RESUMABLE_KEYS"):], key


def test_keys_the_recorded_run_did_not_have_are_not_compared(trained, tmp_path, data_dir):
  workdir = _copy(trained, tmp_path)
  path = os.path.join(workdir, workdir_lib.RUN_INFO)
  with open(path) as f:
    info = json.load(f)
  del info["config"]["model"]["features"]  # As if the key had been added to the code since.
  with open(path, "w") as f:
    json.dump(info, f)
  config = _config(data_dir)
  config.model.features = 16
  workdir_lib.check_config_unchanged(workdir, config)
  config.model.num_blocks = 3
  with pytest.raises(workdir_lib.ConfigMismatchError, match=r"another config \(model.num_blocks: 1 -> 3;"):
    workdir_lib.check_config_unchanged(workdir, config)


# ---------------------------------------------------------------- 6. Ctrl-C


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                    reason="signal handlers can only be installed from the main thread")
def test_a_first_ctrl_c_requests_a_checkpoint_and_a_second_aborts(capfd):
  previous = signal.signal(signal.SIGINT, lambda *_: None)  # Were the handler missing: no KeyboardInterrupt.
  try:
    with train._Preemption() as preemption:  # pylint: disable=protected-access
      signal.raise_signal(signal.SIGINT)
      assert preemption.requested and preemption.reason == "Interrupted"
      assert "Ctrl-C: saving a checkpoint and exiting after this round; press Ctrl-C again to abort at once" \
          in capfd.readouterr().err
      with pytest.raises(KeyboardInterrupt):
        signal.raise_signal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # A background job of a shell script.
    with train._Preemption() as preemption:  # pylint: disable=protected-access
      signal.raise_signal(signal.SIGINT)
      assert not preemption.requested
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
  finally:
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_saves_a_checkpoint_and_the_run_resumes_from_it(tmp_path, data_dir, capsys):
  # Also item 2 with two real runs: a second run on the busy workdir fails at once, naming the first.
  if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    pytest.skip("SIGINT is ignored here (a background job): the worker would inherit that")
  config = tiny_config(data_dir, num_steps=100000, checkpoint_every=100000, log_every=10, sample_every=0)
  proc = subprocess.Popen(
      [sys.executable, str(REPO / "tests" / "train_worker.py"), *config_flags_for(config), f"--workdir={tmp_path}"],
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  try:
    output = [""]
    while not output[-1].startswith("[step 10/"):
      output.append(proc.stdout.readline())
      assert output[-1], "The worker ended early:\n" + "".join(output)[-4000:]
    with pytest.raises(workdir_lib.WorkdirLockedError, match=f"in use by another run: pid {proc.pid} on host"):
      train.train_and_evaluate(_config(data_dir), str(tmp_path))
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
  finally:
    proc.kill()
  log = "".join(output) + rest
  assert proc.returncode == 0, log[-4000:]
  assert "KeyboardInterrupt" not in log and "Ctrl-C: saving a checkpoint" in log
  saved = int(re.search(r"^Interrupted: saved the checkpoint at step (\d+); rerun", rest, re.M).group(1))
  assert saved >= 10 and os.listdir(tmp_path / "checkpoints") == [str(saved)]
  assert not os.path.exists(tmp_path / workdir_lib.LOCK_FILE)

  capsys.readouterr()
  state = train.train_and_evaluate(_config(data_dir, num_steps=saved + 2), str(tmp_path))
  assert f"Resuming from the checkpoint at step {saved}." in capsys.readouterr().out
  assert int(state.step) == saved + 2


# ---------------------------------------------------------------- 7. steps/s and ETA


class _FakeTime:

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


def test_steps_per_sec_counts_training_time_only():
  # log_every=2, sample_every=3, checkpoint_every=5, 1 s per step: the loop's order of events.
  fake = _FakeTime()
  clock = train.TrainingClock(step=0, now=fake)
  fake.now = 2.0
  assert clock.steps_per_sec(2) == 1.0
  fake.now = 3.0  # step 3: sampling takes 10 s.
  with clock.paused():
    fake.now = 13.0
  fake.now = 14.0  # The old loop: 2 steps over the 1 s since sampling = 2.0 steps/s.
  assert clock.steps_per_sec(4) == 1.0
  fake.now = 15.0  # step 5: a checkpoint takes 4 s.
  with clock.paused(wait_for=jax.numpy.zeros(2)):
    fake.now = 19.0
  fake.now = 20.0
  assert clock.steps_per_sec(6) == 1.0
  fake.now = 24.0  # No pause: 2 steps in 4 s.
  assert clock.steps_per_sec(8) == 0.5


def test_evaluate_and_sample_skip_a_corrupt_newest_checkpoint_without_moving_it(trained, tmp_path, capsys):
  """inference.load_trained (evaluate, sample) restores the newest checkpoint that restores, read-only."""
  workdir = _copy(trained, tmp_path)
  with open(os.path.join(workdir, "checkpoints", "4", "state", "_METADATA"), "wb") as f:
    f.write(os.urandom(500))
  _, _, state, _ = inference.load_trained(workdir)
  assert int(state.step) == 2
  assert "The checkpoint at step 4 does not restore" in capsys.readouterr().out
  assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))  # Not moved: read-only.
  with pytest.raises(checkpointing.NoCheckpointRestoresError, match="step 4"):
    inference.load_trained(workdir, step=4)
