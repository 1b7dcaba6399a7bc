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
"""

from __future__ import annotations

import contextlib
import gc
import logging as std_logging
import os
import shutil
import sys
import time
from typing import Any, Callable

from absl import logging
import grain
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from multimodal_jax import workdir as workdir_lib

PyTree = Any
CHECKPOINTS = "checkpoints"
CORRUPT_CHECKPOINTS = "checkpoints_corrupt"


class NoCheckpointRestoresError(workdir_lib.WorkdirError):
  """The workdir has checkpoints and none of them restores."""


def make_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.max_checkpoints_to_keep, create=True,
      enable_async_checkpointing=config.train.async_checkpointing)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINTS), options=options)


def save(manager: ocp.CheckpointManager, step: int, state: PyTree, data_iter) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_iter=grain.checkpoint.CheckpointSave(data_iter)), force=True)


def committed_steps(workdir: str) -> list[int]:
  """The steps of `workdir`'s committed checkpoints, read from the directory (no orbax manager, read-only).

  Orbax names a committed checkpoint by its step; one still being written (a
  temporary folder) has a suffix, so it is not all digits.
  """
  directory = os.path.join(workdir, CHECKPOINTS)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def has_checkpoint(workdir: str) -> bool:
  """Whether `workdir` holds a committed checkpoint."""
  return bool(committed_steps(workdir))


def finished_read_only_step(workdir: str, num_steps: int) -> int | None:
  """The newest checkpoint's step when `workdir` cannot be written and holds a run finished at `num_steps`.

  The loop writes run_info.json, TensorBoard files and checkpoints before it
  finds nothing to do; a finished run on a read-only filesystem (an archive, a
  colleague's directory) must not fail. None: the workdir (or, if it has one,
  its checkpoint directory) is writable, or does not exist, so train it.

  Raises:
    workdir.WorkdirError: it cannot be written and the run is unfinished.
  """
  checkpoints = os.path.join(workdir, CHECKPOINTS)
  dirs = [d for d in (workdir, checkpoints) if os.path.isdir(d)]
  if not dirs or all(os.access(d, os.W_OK) for d in dirs):
    return None
  newest = max(committed_steps(workdir), default=0)
  if newest < num_steps:
    raise workdir_lib.WorkdirError(
        f"--workdir={workdir} is not writable and its newest checkpoint (step {newest}) is short of "
        f"train.num_steps={num_steps}: make it writable or pass another --workdir.")
  return newest


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
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), CHECKPOINTS))
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
  source = os.path.join(checkpoints, str(step))  # The manager's default step naming.
  target_dir = os.path.join(os.path.dirname(checkpoints), CORRUPT_CHECKPOINTS)
  target = os.path.join(target_dir, f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
  while os.path.exists(target):
    target += "+"
  try:
    os.makedirs(target_dir, exist_ok=True)
    shutil.move(source, target)
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
  previous_hook = sys.unraisablehook
  sys.unraisablehook = lambda u: logging.info("During a checkpoint restore: %s", _one_line(u.exc_value))

  def log_instead(record: std_logging.LogRecord) -> bool:
    logging.info("During a checkpoint restore: asyncio: %s", record.getMessage().split("\n")[0][:200])
    return False

  asyncio_logger = std_logging.getLogger("asyncio")
  asyncio_logger.addFilter(log_instead)
  try:
    yield
  finally:
    asyncio_logger.removeFilter(log_instead)
    sys.unraisablehook = previous_hook
