"""A training workdir holds one run: its record (run_info.json), a lock against a second run, and a config check.

The record: `<workdir>/run_info.json` (`write_run_info`, `read_run_info`)
holds the run's config, global batch shapes and `--import` modules, so that
`evaluate` and `sample` can rebuild the method (inference.load_trained).

The lock: `<workdir>/.lock`, created atomically (O_CREAT | O_EXCL) by process 0
of a run (the other processes of a multi-process run share the workdir by
design) and removed when the run ends, also on an exception. It records the
holder's host, pid and start time, so a second run on the same workdir fails
at once naming it, instead of interleaving checkpoints with the first. A lock
left by a killed run (same host, its pid no longer running) is taken over,
saying so; a lock from another host cannot be checked from here, and the
error says how to remove it.

Read-only: a finished run's workdir may be read-only (an archive, a
colleague's directory): `finished_read_only_step` says whether there is
nothing to train, reading the checkpoint folder's names only
(`committed_steps`), before anything is imported or written.

Disk space: `check_free_space` refuses a run (`DiskFullError`, one line)
whose filesystem has less room than its newest checkpoint takes, before the
run starts: the next save would need as much (multimodal_jax/checkpointing.py
turns a save that finds the disk full into the same error).

The config check: a workdir's checkpoints only make sense with the config
that wrote them (`run_info.json`, written by `write_run_info`).
Resuming with other values of keys that shape the train state or its data
would fail deep inside orbax or grain ("Sampler in checkpoint does not match",
a tree mismatch) or, worse, continue a different experiment; it fails first,
naming the keys. `RESUMABLE_KEYS` lists the keys that may change on resume.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
import time
import uuid
from typing import Any, Iterator, Sequence

import ml_collections
import numpy as np

from multimodal_jax import config_lib
from multimodal_jax import errors
from multimodal_jax import plugins
from multimodal_jax import storage

LOCK_FILE = ".lock"
CHECKPOINTS = "checkpoints"  # The orbax checkpoints of the run (multimodal_jax/checkpointing.py).

# Keys that may differ from run_info.json when a run resumes: when to stop,
# what to log and how often, where and how fast to read the data. Everything
# else shapes the train state or the data stream. Add a key here only if a
# checkpoint written under the old value continues the same run under the new.
# Keys the recorded run did not have (added to the code since) are not compared.
RESUMABLE_KEYS = (
    "train.num_steps",  # Training longer is the normal reason to resume.
    "train.log_every",
    "train.checkpoint_every",
    "train.sample_every",
    "train.eval_every",
    "train.eval_inputs",
    "train.eval_samples",
    "train.num_grid_inputs",
    "train.num_grid_samples",
    "train.max_checkpoints_to_keep",
    "train.async_checkpointing",
    "data.num_workers",
    "data.data_dir",
    "evals",  # what evaluate and train.eval_every measure, not what is trained
)

_TAKEOVER_SUFFIX = ".takeover"
_held_tokens: set[str] = set()  # Tokens of the locks this process holds.
_held_paths: dict[str, str] = {}  # token -> lock file, for `release_held_locks`.


RUN_INFO = "run_info.json"  # The config and batch spec of the run (write_run_info).


class WorkdirError(errors.UserError, RuntimeError):
  """A workdir the run cannot use as it is; the message (one line) says what to do."""


class WorkdirLockedError(WorkdirError):
  """Another run holds the workdir's lock."""


class ConfigMismatchError(WorkdirError, ValueError):
  """The workdir holds a run of another config."""


class DiskFullError(WorkdirError):
  """No room on the disk for the next checkpoint; every earlier one is kept."""


# Characters orbax's checkpoint writer (tensorstore's OCDBT) mishandles in a path: a run under
# one trains to the end and saves, and no checkpoint of it restores (found with `a[1]`).
UNSAVABLE_PATH_CHARACTERS = "[]"


def check_path(workdir: str) -> None:
  """Raises WorkdirError, before anything is trained, for a path whose checkpoints would not restore."""
  bad = sorted({c for c in workdir if c in UNSAVABLE_PATH_CHARACTERS})
  if bad:
    raise WorkdirError(f"--workdir={workdir} contains {' and '.join(repr(c) for c in bad)}: checkpoints saved "
                       "under such a path do not restore (orbax/tensorstore); choose a path without them.")


def write_run_info(workdir: str, config: ml_collections.ConfigDict, batch_spec,
                   imports: Sequence[str] | None = None) -> None:
  """Saves the config, the global batch shapes and the user modules, so CLIs can rebuild the method.

  Args:
    workdir: the run's directory.
    config: the run's config.
    batch_spec: the global batch, {key: ShapeDtypeStruct}.
    imports: the `--import` modules the run needs (they register its dataset or
      method); None = those imported so far, `plugins.imported()`.
  """
  imports = plugins.imported() if imports is None else list(imports)
  info = {"config": json.loads(config.to_json_best_effort()),
          "batch_spec": {k: [list(v.shape), np.dtype(v.dtype).name] for k, v in batch_spec.items()},
          "imports": imports}
  # Atomic: a run killed mid-write leaves the previous file whole (storage.write_text).
  storage.write_text(storage.join(workdir, RUN_INFO), json.dumps(info, indent=1))


def read_run_info(workdir: str) -> dict[str, Any]:
  """The record `write_run_info` wrote: {"config", "batch_spec", "imports"} as JSON values.

  Raises:
    FileNotFoundError: `workdir` holds no run_info.json.
  """
  return json.loads(storage.read_text(storage.join(workdir, RUN_INFO)))


@contextlib.contextmanager
def lock(workdir: str, enabled: bool = True) -> Iterator[None]:
  """Holds `<workdir>/.lock` for the block; raises WorkdirLockedError if another run holds it.

  Args:
    workdir: the run's directory (created if missing).
    enabled: False for the processes of a multi-process run other than
      process 0: they share the workdir with it.
  """
  if not enabled:
    yield
    return
  created = not storage.isdir(workdir)
  storage.makedirs(workdir)
  path = storage.join(workdir, LOCK_FILE)
  try:
    mine = _acquire(path)
  except OSError as e:
    if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
      raise
    # A read-only workdir (a finished run's, shared for reading): no run can write it either.
    print(f"Cannot lock {workdir} ({type(e).__name__}: {e}); continuing without the lock.", flush=True)
    yield
    return
  _held_tokens.add(mine["token"])
  _held_paths[mine["token"]] = path
  try:
    yield
  finally:
    _held_tokens.discard(mine["token"])
    _held_paths.pop(mine["token"], None)
    if _read(path) == mine:  # Never remove a lock that someone else has taken over.
      storage.remove(path)
      if created and not storage.is_remote(workdir) and not os.listdir(workdir):
        os.rmdir(workdir)  # A run refused before it wrote anything (a bad value) leaves no empty workdir.


def release_held_locks() -> None:
  """Removes the locks this process holds, for a program that exits at once (Ctrl-C, `cli`), skipping `lock`'s exit."""
  for token, path in list(_held_paths.items()):
    holder = _read(path)
    if isinstance(holder, dict) and holder.get("token") == token:
      storage.remove(path)
    _held_paths.pop(token, None)
    _held_tokens.discard(token)


def _acquire(path: str) -> dict[str, Any]:
  mine = {"host": socket.gethostname(), "pid": os.getpid(),
          "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
          "token": uuid.uuid4().hex}
  for _ in range(5):  # A lock released or taken over under our feet is read again.
    try:
      created = storage.create_exclusive(path, json.dumps(mine))
    except OSError as e:  # A full disk (create_exclusive removed the empty lock, which would block the next run).
      if e.errno in (errno.ENOSPC, errno.EDQUOT):
        raise DiskFullError(f"No space left on the device for the lock {path}: free some space on "
                            f"{storage.dirname(path)}'s filesystem and rerun.") from e
      raise
    if created:
      return mine
    holder = _read(path)
    if holder is None:
      continue  # Released between our attempt and the read.
    if holder == "":
      time.sleep(0.1)  # Created an instant ago, its content not written yet.
      continue
    if not isinstance(holder, dict) or not {"host", "pid", "started"} <= holder.keys():
      raise WorkdirLockedError(f"The lock {path} is unreadable ({str(holder)[:80]!r}): if no run uses "
                               f"{storage.dirname(path)}, delete {path} and rerun.")
    who = f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}"
    if holder["host"] != mine["host"]:
      raise WorkdirLockedError(
          f"{storage.dirname(path)} is locked by another run: {who} (lock file {path}). A process on "
          f"another host cannot be checked from here: if that run has ended, delete {path} and rerun.")
    if _running(holder):
      raise WorkdirLockedError(
          f"{storage.dirname(path)} is in use by another run: {who}. Wait for it to end or stop it, "
          "or use another --workdir.")
    if _remove_stale(path, holder):
      print(f"Taking over the stale lock {path}: {who}, is no longer running.", flush=True)
    else:
      time.sleep(0.1)  # Another run is taking it over: see who wins.
  raise WorkdirLockedError(f"Could not take the lock {path}: other runs keep taking it. If none uses "
                           f"{storage.dirname(path)}, delete {path} and {path}{_TAKEOVER_SUFFIX} and rerun.")


def _running(holder: dict[str, Any]) -> bool:
  """Whether the holder, a process on this host, still runs.

  Our own pid counts only with a token this process holds; otherwise the lock
  is that of a killed run whose pid was given to us (a container's pid 1).
  """
  if holder["pid"] == os.getpid():
    return holder.get("token") in _held_tokens
  return pid_running(holder["pid"])


def pid_running(pid: Any) -> bool:
  """Whether process `pid` of this host runs (an unreadable pid counts as running: never take its lock)."""
  try:
    os.kill(int(pid), 0)
  except ProcessLookupError:
    return False
  except (PermissionError, TypeError, ValueError):  # Someone else's process; or a pid we cannot read.
    return True
  return True


def _remove_stale(path: str, stale: dict[str, Any]) -> bool:
  """Removes the lock if it still holds `stale`; False if another process got to it first.

  Two runs may find the same stale lock: a second, exclusive file makes the
  check-then-remove atomic, so neither removes the fresh lock of the other.
  """
  guard = path + _TAKEOVER_SUFFIX
  if not storage.create_exclusive(guard, ""):
    return False
  try:
    if _read(path) != stale:
      return False
    storage.remove(path)
    return True
  finally:
    storage.remove(guard)


def _read(path: str) -> Any:
  """The lock's content: a dict, the raw text if it is not JSON, or None if there is no lock."""
  try:
    text = storage.read_text(path)
  except FileNotFoundError:
    return None
  try:
    return json.loads(text)
  except json.JSONDecodeError:
    return text


def committed_steps(workdir: str) -> list[int]:
  """The steps of `workdir`'s committed checkpoints, read from the directory (no orbax manager, read-only).

  Orbax names a committed checkpoint by its step; one still being written (a
  temporary folder) has a suffix, so it is not all digits.
  """
  return sorted(int(name) for name in storage.listdir(storage.join(workdir, CHECKPOINTS)) if name.isdigit())


def _allocated_bytes(path: str) -> int:
  """The disk space the files under `path` take (allocated blocks, not their lengths)."""
  return sum(os.lstat(os.path.join(root, name)).st_blocks * 512
             for root, _, files in os.walk(path) for name in files)


def format_bytes(n: float) -> str:
  for unit in ("bytes", "KiB", "MiB", "GiB"):
    if n < 1024 or unit == "GiB":
      return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TiB"


def checkpoint_room(workdir: str) -> tuple[int | None, int, int]:
  """(newest committed step or None, the disk space it takes, bytes free on the checkpoints' filesystem)."""
  directory = os.path.join(workdir, CHECKPOINTS)
  steps = committed_steps(workdir)
  newest = steps[-1] if steps else None
  size = _allocated_bytes(os.path.join(directory, str(newest))) if newest is not None else 0
  return newest, size, storage.free_bytes(directory)


def check_free_space(workdir: str) -> None:
  """Raises DiskFullError if `workdir`'s filesystem has less room than its newest checkpoint takes.

  The next save needs about as much. Incomplete saves (orbax's temporary
  folders, which the checkpoint manager removes when it starts) count as free.
  """
  if storage.is_remote(workdir):
    return  # A bucket has no disk to fill.
  newest, size, free = checkpoint_room(workdir)
  if newest is None:
    return
  directory = os.path.join(workdir, CHECKPOINTS)
  incomplete = sum(_allocated_bytes(os.path.join(directory, name)) for name in os.listdir(directory)
                   if not name.isdigit() and os.path.isdir(os.path.join(directory, name)))
  if free + incomplete < size:
    raise DiskFullError(
        f"No room for the next checkpoint in {directory}: it needs about {format_bytes(size)} (as the newest, "
        f"step {newest}), and its filesystem has {format_bytes(free + incomplete)} free. Free some space and "
        "rerun the same command: every checkpoint is kept, the run resumes from the newest.")


def finished_read_only_step(workdir: str, num_steps: int) -> int | None:
  """The newest checkpoint's step when `workdir` cannot be written and holds a run finished at `num_steps`.

  The loop writes run_info.json, TensorBoard files and checkpoints before it
  finds nothing to do; a finished run on a read-only filesystem (an archive, a
  colleague's directory) must not fail. None: the workdir (or, if it has one,
  its checkpoint directory) is writable, or does not exist, so train it.

  Raises:
    WorkdirError: it cannot be written and the run is unfinished.
  """
  if storage.is_remote(workdir):
    return None  # Write permission in a bucket shows only on a write: the run finds out.
  checkpoints = os.path.join(workdir, CHECKPOINTS)
  dirs = [d for d in (workdir, checkpoints) if os.path.isdir(d)]
  if not dirs or all(os.access(d, os.W_OK) for d in dirs):
    return None
  newest = max(committed_steps(workdir), default=0)
  if newest < num_steps:
    raise WorkdirError(
        f"--workdir={workdir} is not writable and its newest checkpoint (step {newest}) is short of "
        f"train.num_steps={num_steps}: make it writable or pass another --workdir.")
  return newest


def check_config_unchanged(workdir: str, config: ml_collections.ConfigDict) -> None:
  """Raises ConfigMismatchError naming the keys outside `RESUMABLE_KEYS` that differ from the run in workdir.

  Call it before resuming from a checkpoint of `workdir`. Without a readable
  run_info.json there is nothing to compare: the check says so and passes.
  """
  path = storage.join(workdir, RUN_INFO)
  try:
    stored = read_run_info(workdir)["config"]
  except FileNotFoundError:
    return
  except (OSError, ValueError, KeyError, TypeError) as e:
    print(f"Cannot compare the config with {path} ({type(e).__name__}: {e}); resuming without the check.",
          flush=True)
    return
  old, new = config_lib.flatten(stored), config_lib.flatten(json.loads(config.to_json_best_effort()))
  differ = [k for k in sorted(old) if old[k] != new.get(k, _ABSENT) and k not in RESUMABLE_KEYS]
  if differ:
    changes = ", ".join(f"{k}: {_show(old[k])} -> {_show(new.get(k, _ABSENT))}" for k in differ)
    raise ConfigMismatchError(
        f"{workdir} holds a run of another config ({changes}; recorded in {path}). These keys shape the "
        "checkpointed state or its data: resume with the recorded values, or use a new --workdir.")


_ABSENT = object()


def _show(value: Any) -> str:
  return "(absent)" if value is _ABSENT else json.dumps(value)
