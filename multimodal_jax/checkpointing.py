"""The loop's checkpoints: an orbax manager, saving, and a restore that survives a corrupt checkpoint.

A checkpoint holds the train state *and* the grain iterator position, so a
resumed run sees the same next batch and replays the uninterrupted run bitwise.

Resume order: the newest checkpoint in `<workdir>/checkpoints` that restores,
else a fresh init. A checkpoint can be unreadable although orbax committed it
(a disk fault, a copy cut short, a file emptied by a full disk): garbage
metadata, truncated or emptied data, a lost manifest, a garbled iterator
file. Such a checkpoint is skipped with one line naming the exception, and
once an older one has restored it is moved to
`<workdir>/checkpoints_corrupt/<step>-<time>`: outside orbax's directory, so
orbax never lists it (nor saves over it) again, and kept for a post-mortem,
never deleted. When *no* checkpoint restores nothing is moved: a failure that
every checkpoint shares (code that changed the state's structure) is not
corruption, and the error lists what was tried.

A full disk: `workdir.check_free_space` refuses to start a run whose filesystem has
less room than its newest checkpoint takes (the next save needs as much), and
a save that finds the disk full raises `DiskFullError` (one line: how much the
next checkpoint needs, where, what is kept). Orbax writes a checkpoint into a
temporary folder and renames it only once complete, so every earlier
checkpoint stays whole and a rerun resumes from the newest; the manager
removes the incomplete folder when the next run starts.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging as std_logging
import os
import sys
import tempfile
import time
from typing import Any, Callable

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from multimodal_jax import storage
from multimodal_jax import workdir as workdir_lib

PyTree = Any
CHECKPOINTS = workdir_lib.CHECKPOINTS
CORRUPT_CHECKPOINTS = "checkpoints_corrupt"


class NoCheckpointRestoresError(workdir_lib.WorkdirError):
  """The workdir has checkpoints and none of them restores."""


DiskFullError = workdir_lib.DiskFullError


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.max_checkpoints_to_keep, create=True,
      enable_async_checkpointing=config.train.async_checkpointing,
      cleanup_tmp_directories=True)  # A save cut short (a full disk, a kill) leaves one; it only takes room.
  # orbax takes a gs:// path as it is (tensorstore's gcs driver): storage.resolve never makes a URL absolute.
  return ocp.CheckpointManager(storage.join(storage.resolve(workdir), CHECKPOINTS), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: PyTree, data_iter) -> None:
  """Saves checkpoint `step` (asynchronously if the manager is); raises DiskFullError on a full disk.

  The previous save is waited for first (orbax would too), so that its failure is reported as its own.
  """
  wait_until_finished(manager)
  with _disk_full_as_error(manager, f"the checkpoint at step {step}"):
    manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        data_iter=grain.checkpoint.CheckpointSave(data_iter)), force=True)


def wait_until_finished(manager: ocp.CheckpointManager) -> None:
  """Waits for an asynchronous save to commit; raises DiskFullError if it found the disk full."""
  with _disk_full_as_error(manager, "the checkpoint being written"):
    manager.wait_until_finished()


def close_after_failure(manager: ocp.CheckpointManager) -> None:
  """Closes the manager of a run stopped by an error, so that only that error is reported.

  A save still in flight is waited for; its own failure (the same full disk)
  and the tracebacks of orbax's writer threads are logged at INFO only.
  """
  with _stray_errors_logged("After the run stopped"), _native_stderr_logged("After the run stopped"):
    try:
      manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      logging.info("The save in flight failed too: %s", _one_line(e))
    try:
      manager.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.info("Closing the checkpoint manager: %s", _one_line(e))
    # Let tensorstore's writes that were still in flight report (within ~30 ms), here.
    time.sleep(0.2)
    gc.collect()


def _is_disk_full(error: BaseException | None) -> bool:
  """Whether `error` or an error it was raised from is a full disk (tensorstore reports it as text)."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
      return True
    if "No space left on device" in str(error) or "os_error_code='28'" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


@contextlib.contextmanager
def _disk_full_as_error(manager: ocp.CheckpointManager, what: str):
  """Turns an orbax/tensorstore error caused by a full disk into one `DiskFullError` line."""
  try:
    yield
  except Exception as e:  # pylint: disable=broad-except
    if not _is_disk_full(e):
      raise
    directory = str(manager.directory)
    newest, size, free = workdir_lib.checkpoint_room(os.path.dirname(directory))
    kept = f"every earlier checkpoint is kept (the newest: step {newest})" if newest is not None else (
        "no checkpoint was written yet")
    needs = f"about {workdir_lib.format_bytes(size)}, as the newest, " if newest is not None else ""
    raise DiskFullError(
        f"No space left on the device while saving {what} in {directory}: it needs {needs}and "
        f"{workdir_lib.format_bytes(free)} is free. The run stopped; {kept}. Free some space and rerun the "
        "same command to resume.") from e


committed_steps = workdir_lib.committed_steps


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a committed checkpoint."""
  return bool(committed_steps(workdir))


def restore_or_init(manager: ocp.CheckpointManager, init_fn: Callable[[], PyTree], abstract_state: PyTree,
                    data_iter) -> tuple[PyTree, int]:
  """(state, step) of the newest checkpoint that restores, else (init_fn(), 0).

  Newer checkpoints that do not restore are moved aside (see the module
  docstring); `data_iter` is left at the restored checkpoint's position.
  """
  restored, failures = None, []  # failures: (step, one-line reason), newest first.
  with _restore_errors_logged():
    for step in sorted(manager.all_steps(), reverse=True):
      try:
        restored = manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
        break
      except Exception as e:  # pylint: disable=broad-except
        logging.info("The checkpoint at step %d does not restore.", step, exc_info=True)
        failures.append((step, _one_line(e)))
        print(f"The checkpoint at step {step} does not restore ({failures[-1][1]}); trying the next "
              "older one.", flush=True)
    if failures:
      # Let the failed restores' straggling reads report (within ~30 ms) and their
      # futures be collected while their errors are only logged.
      time.sleep(0.2)
      gc.collect()
  if restored is None:
    if failures:
      tried = "; ".join(f"step {s}: {why}" for s, why in failures)
      raise NoCheckpointRestoresError(
          f"No checkpoint in {manager.directory} restores ({tried}); nothing was moved. If the code changed "
          "since they were written, use the version that wrote them or a new --workdir.")
    return init_fn(), 0
  if jax.process_count() > 1:
    # Every process must resume from the same step; this is also the barrier
    # after which process 0 may move aside what the others were reading.
    multihost_utils.assert_equal(np.int32(step), f"Processes restored different checkpoints of "
                                 f"{manager.directory}: check that every host sees the same files.")
  if failures:
    if jax.process_index() == 0:
      for bad_step, _ in failures:
        _move_aside(manager, bad_step)
    manager.reload()  # Orbax caches the steps it has listed.
  print(f"Resuming from the checkpoint at step {step}.", flush=True)
  return restored["state"], step


def restore_for_inference(workdir: str, abstract_state: PyTree, step: int | None = None) -> tuple[PyTree, int]:
  """(state, step) for evaluate / sample: checkpoint `step`, or the newest one that restores.

  Read-only: a newer checkpoint that does not restore is skipped with one
  line (the next training run of the workdir moves it aside), never moved.
  """
  manager = ocp.CheckpointManager(storage.join(storage.resolve(workdir), CHECKPOINTS))
  try:
    available = sorted(manager.all_steps(), reverse=True)
    if not available:
      raise FileNotFoundError(f"No checkpoint in {workdir}/{CHECKPOINTS}.")
    if step is not None and step not in available:
      raise NoCheckpointRestoresError(f"No checkpoint at step {step} in {workdir}/{CHECKPOINTS}; it has steps "
                                      f"{', '.join(map(str, sorted(available)))}.")
    steps = available if step is None else [step]
    failures = []
    with _restore_errors_logged():
      for candidate in steps:
        try:
          restored = manager.restore(candidate, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state)))
          return restored["state"], candidate
        except Exception as e:  # pylint: disable=broad-except
          logging.info("The checkpoint at step %d does not restore.", candidate, exc_info=True)
          failures.append(f"step {candidate}: {_one_line(e)}")
          if step is None:
            print(f"The checkpoint at step {candidate} does not restore ({_one_line(e)}); trying the next "
                  "older one.", flush=True)
    raise NoCheckpointRestoresError(f"No checkpoint of {workdir} restores ({'; '.join(failures)}).")
  finally:
    manager.close()


def _move_aside(manager: ocp.CheckpointManager, step: int) -> str:
  """Moves checkpoint `step` to <workdir>/checkpoints_corrupt/<step>-<time>; returns the new path."""
  checkpoints = str(manager.directory)
  source = storage.join(checkpoints, str(step))  # The manager's default step naming.
  target_dir = storage.join(storage.dirname(checkpoints), CORRUPT_CHECKPOINTS)
  target = storage.join(target_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  while storage.exists(target):
    target += "+"
  try:
    storage.move(source, target)
  except OSError as e:
    raise workdir_lib.WorkdirError(
        f"Could not move the checkpoint at step {step}, which does not restore, out of {checkpoints} "
        f"({_one_line(e)}): move {source} elsewhere and rerun.") from e
  print(f"Moved the checkpoint at step {step}, which does not restore, to {target}.", flush=True)
  return target


def _one_line(e: BaseException, limit: int = 160) -> str:
  lines = str(e).strip().splitlines()
  text = lines[0] if lines else ""
  return f"{type(e).__name__}: {text[:limit]}{'...' if len(text) > limit or len(lines) > 1 else ''}"


@contextlib.contextmanager
def _restore_errors_logged():
  """Logs, instead of printing, the stray errors of failed restores (one line each).

  When a restore fails, the tensorstore reads still in flight finish after
  orbax has closed its asyncio loop: each reports RuntimeError('Event loop is
  closed') through `sys.unraisablehook`, and their futures' errors reach the
  `asyncio` logger when collected. Dozens of tracebacks that would bury the
  one line saying which checkpoint was skipped and why.
  """
  with _stray_errors_logged("During a checkpoint restore"):
    yield


@contextlib.contextmanager
def _native_stderr_logged(during: str):
  """Logs at INFO what native code prints to stderr in the block (tensorstore's failed callbacks).

  When orbax has closed its asyncio loop after a failed save, each tensorstore
  write still in flight calls back into it, and the RuntimeError('Event loop
  is closed') is printed from C++, past `sys.unraisablehook`.
  """
  sys.stderr.flush()
  try:
    captured_file = tempfile.TemporaryFile(mode="w+b")
  except OSError:  # The temporary directory is on the full disk too: drop it instead.
    captured_file = open(os.devnull, "w+b")  # pylint: disable=consider-using-with
  saved = os.dup(2)
  with captured_file as captured:
    os.dup2(captured.fileno(), 2)
    try:
      yield
    finally:
      sys.stderr.flush()
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      text = captured.read().decode(errors="replace").strip()
      if text:
        logging.info("%s, stderr: %s", during, text[-4000:])


@contextlib.contextmanager
def _stray_errors_logged(during: str):
  """Logs at INFO, instead of printing, the errors that orbax's background writes and reads report late.

  They reach `sys.unraisablehook` and the `asyncio` logger (see `_restore_errors_logged`).
  """
  previous_hook = sys.unraisablehook
  sys.unraisablehook = lambda u: logging.info("%s: %s", during, _one_line(u.exc_value))

  def log_instead(record: std_logging.LogRecord) -> bool:
    logging.info("%s: asyncio: %s", during, record.getMessage().split("\n")[0][:200])
    return False

  asyncio_logger = std_logging.getLogger("asyncio")
  asyncio_logger.addFilter(log_instead)
  try:
    yield
  finally:
    asyncio_logger.removeFilter(log_instead)
    sys.unraisablehook = previous_hook
