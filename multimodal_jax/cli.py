"""What the command-line programs share (`main`, `evaluate`, `sample`, the experiments): entry, flags, errors.

  * `run(main)`: a program's entry. It sets the process up (`set_up_process`:
    the JAX workarounds, multimodal_jax/jax_workarounds.py, and quiet
    dependency logs), then hands over to absl's `app.run`, inside
    `user_errors()`. Importing `multimodal_jax` changes nothing in JAX; a
    program does, explicitly, here.
  * `user_errors()`: the one handler of errors a user can fix, for every
    program. Such an error is one line on stderr, `error: ...`, naming the file,
    flag or key and what to do, and the exit status is 2:
      - an `errors.UserError` (a workdir another run holds, a full disk, an
        `--import` module that does not import, a bad argument);
      - a full disk, a read-only or forbidden path (OSError ENOSPC, EDQUOT,
        EROFS, EACCES, EPERM);
      - an exception raised in the user's own code, a config file or an
        `--import`ed module (also a SyntaxError in one): the line names the
        file and line.
    An exception raised only inside this package (a bug) keeps its traceback.
    Ctrl-C (during start-up, evaluation or sampling; a second Ctrl-C while
    the loop saves) is one line and exit status 130, at once; the training
    loop turns a first Ctrl-C into a checkpoint (multimodal_jax/train.py). The
    traceback of any of these: `--verbosity=0` (absl's flag, which also shows
    INFO logs), or the environment variable MULTIMODAL_JAX_TRACEBACK=1.
  * `parse_cli_flags`: absl's parsing, a flag error as one `error:` line.
  * `fail`: a config, usage or workdir error as one `error:` line, exit 2.
  * `--import=MODULE` (repeatable, `define_import_flag`, `import_flagged_modules`):
    user modules that register a dataset or a method (multimodal_jax/plugins.py).
  * `resolve_config_argv`: `--config=configs/x.py` found from the project root
    when the working directory has no such file.

This module imports no JAX (nor TensorFlow): `main` refuses a second run on a
busy workdir before it loads them (multimodal_jax/main.py).
"""

from __future__ import annotations

import contextlib
import errno
import logging as std_logging
import os
import signal
import sys
from typing import Callable, Iterator, NoReturn

from absl import app
from absl import flags
from absl import logging

from multimodal_jax import errors
from multimodal_jax import plugins
from multimodal_jax import workdir as workdir_lib

IMPORT_FLAG = "import"  # A Python keyword: read it as flags.FLAGS["import"].value.
TRACEBACK_ENV = "MULTIMODAL_JAX_TRACEBACK"  # Set to 1: user errors keep their traceback too.
INTERRUPTED_STATUS = 130  # 128 + SIGINT, the shell's status of a command ended by Ctrl-C.
PROJECT_ROOT = errors.PROJECT_ROOT  # The checkout holding the package, when it is installed in place.
_HOW_TO_TRACE = f"{TRACEBACK_ENV}=1 or --verbosity=0 shows the traceback"

# Notes of dependencies that say nothing a user can act on, dropped from the
# logs unless --verbosity=0: tfds decodes images with PIL when OpenCV is
# missing (as fast for our small images), and warns that a dataset it is
# about to build has no dataset_info.json yet.
QUIET_NOTES = ("OpenCV is not installed", "has no dataset_info.json")
# Orbax logs a failed save from each of its writer threads, with tracebacks; a full disk is then
# reported by the loop in one line (checkpointing.DiskFullError), so these records are dropped too.
_DISK_FULL = ("No space left on device", "os_error_code='28'")

# The flags this module defines for a program (`--import`) are the program's own: its --help lists them.
flags.disclaim_key_flags()


def set_up_process() -> None:
  """The process-wide set-up of a program, before it computes anything: JAX workarounds, quiet logs."""
  # Imported here: it imports JAX, which `main` loads only once it holds the workdir's lock.
  from multimodal_jax import jax_workarounds  # pylint: disable=g-import-not-at-top
  jax_workarounds.install()
  quiet_dependency_notes()


class _DropNotes(std_logging.Filter):
  """Drops absl log records of `QUIET_NOTES` and orbax's of a full disk, unless absl logs INFO (--verbosity=0)."""

  def filter(self, record: std_logging.LogRecord) -> bool:
    if logging.get_verbosity() >= logging.INFO:
      return True
    message = record.getMessage()
    if any(note in message for note in QUIET_NOTES):
      return False
    if f"{os.sep}orbax{os.sep}" in (record.pathname or ""):
      text = message + "".join(str(e) for e in _chain(record.exc_info[1])) if record.exc_info else message
      return not any(mark in text for mark in _DISK_FULL)
    return True


def quiet_dependency_notes() -> None:
  """Installs `_DropNotes` on absl's logger (once)."""
  logger = logging.get_absl_logger()
  if not any(isinstance(f, _DropNotes) for f in logger.filters):
    logger.addFilter(_DropNotes())


def run(main: Callable[[list[str]], None],
        flags_parser: Callable[[list[str]], list[str]] | None = None, set_up: bool = True) -> None:
  """A program's entry point: `set_up_process()`, then absl's `app.run(main)`, inside `user_errors()`.

  Args:
    main: the program, main(argv).
    flags_parser: absl's flags_parser (default `parse_cli_flags`).
    set_up: False for a program that calls `set_up_process()` itself, later
      (`main`: once it holds the workdir's lock).
  """

  def main_with_usage_errors(argv: list[str]) -> None:
    try:
      main(argv)
    except app.UsageError as e:  # absl would print the whole usage.
      fail(str(e))

  with user_errors():
    # Ctrl-C exits at once, from the signal handler: a KeyboardInterrupt raised where Python cannot
    # propagate it (a gc callback of JAX while it loads) would be printed and ignored. Not where the
    # program started with SIGINT ignored (a background job) or handled.
    interrupt_in_one_line()
    if set_up:
      set_up_process()
    app.run(main_with_usage_errors, flags_parser=flags_parser or parse_cli_flags)


def define_import_flag() -> None:
  """Defines the repeatable `--import=MODULE` flag (once, whichever CLI asks first)."""
  if IMPORT_FLAG not in flags.FLAGS:
    flags.DEFINE_multi_string(
        IMPORT_FLAG, [], "A Python module to import first (repeatable), e.g. one that registers a "
        "dataset or a method; it must be importable (its directory on PYTHONPATH or the current one).")


def define_override_flag() -> None:
  """Defines evaluate's and sample's repeatable `--override=KEY=VALUE` (inference.apply_overrides)."""
  if "override" not in flags.FLAGS:
    flags.DEFINE_multi_string("override", [], "KEY=VALUE: an inference-time setting of the run's method, e.g. "
                              "flow_matching.sample_steps=8 (repeatable; the method's INFERENCE_KEYS).")


def import_flagged_modules() -> None:
  """Imports the `--import` modules, in order (`plugins.import_modules`)."""
  plugins.import_modules(flags.FLAGS[IMPORT_FLAG].value)


def fail(message: str) -> NoReturn:
  """A config, usage or workdir error of a program: one `error:` line on stderr, exit 2."""
  line = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
  sys.stdout.flush()
  sys.stderr.write(f"error: {line}\n")
  sys.stderr.flush()
  sys.exit(2)


def parse_cli_flags(argv: list[str]) -> list[str]:
  """absl flag parsing for the CLIs: a flag error is one `error:` line (exit 2), logging is at WARNING.

  absl turns INFO logging on after parsing unless --verbosity was given, and
  absl/orbax/JAX INFO lines would bury the CLI's own output (`--verbosity=0`
  brings them back). `main.parse_flags` adds its config-key errors.
  """
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    # absl wraps a flag parser's ValueError, which ml_collections made from the config file's own error.
    cause = next((c for c in _chain(e) if errors.innermost_user_frame(c) is not None), None)
    if cause is not None:
      if wants_traceback():
        raise
      fail(user_error_message(cause))
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    fail(" ".join(dict.fromkeys(lines[:1] + lines[-1:])))
  if flags.FLAGS["verbosity"].using_default_value:
    flags.FLAGS.verbosity = -1  # absl's WARNING; marks the flag as set, so absl keeps it.
  return rest


def resolve_config_argv(argv: list[str], flag: str = "config", root: str = PROJECT_ROOT) -> list[str]:
  """`--config=PATH[:arg]` with PATH taken from `root` when it is not found from the working directory.

  `configs/srim.py` then works from any directory of a checkout. A line says
  which file is used; a PATH found nowhere is left for absl to report.
  """
  out = list(argv)
  for i, arg in enumerate(out):
    prefix = next((p for p in (f"--{flag}=", f"-{flag}=") if arg.startswith(p)), None)
    if prefix is not None:
      value, place = arg[len(prefix):], lambda v, i=i, p=prefix: out.__setitem__(i, p + v)
    elif arg in (f"--{flag}", f"-{flag}") and i + 1 < len(out):
      value, place = out[i + 1], lambda v, i=i: out.__setitem__(i + 1, v)
    else:
      continue
    path, colon, config_arg = value.partition(":")
    candidate = os.path.join(root, path)
    if path and not os.path.isabs(path) and not os.path.exists(path) and os.path.isfile(candidate):
      print(f"--{flag}: using {candidate} ({path} is not in the current directory {os.getcwd()}).", flush=True)
      place(candidate + colon + config_arg)
  return out


# ------------------------------------------------------------------------------------- user errors


def wants_traceback() -> bool:
  """Whether user errors keep their traceback: $MULTIMODAL_JAX_TRACEBACK set (not 0), or --verbosity >= 0 given."""
  if os.environ.get(TRACEBACK_ENV, "").strip().lower() not in ("", "0", "false", "no"):
    return True
  verbosity = flags.FLAGS["verbosity"] if "verbosity" in flags.FLAGS else None
  if verbosity is not None and flags.FLAGS.is_parsed():
    return verbosity.present > 0 and verbosity.value >= 0
  # A config file that fails to load stops the parsing: read the flag from the command line.
  for i, arg in enumerate(sys.argv[1:], 1):
    name, has_value, value = arg.lstrip("-").partition("=")
    if name in ("verbosity", "v") and arg.startswith("-"):
      value = value if has_value else (sys.argv[i + 1] if i + 1 < len(sys.argv) else "")
      try:
        return int(value) >= 0
      except ValueError:
        return False
  return False


def _chain(error: BaseException) -> Iterator[BaseException]:
  """`error`, the error it was raised from or during, and so on."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    yield error
    error = error.__cause__ or error.__context__


def _first_line(error: BaseException) -> str:
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  return lines[0] if lines else ""


def user_error_message(error: BaseException) -> str | None:
  """The one line `user_errors` prints for `error`, or None when it is not the user's to fix (a bug)."""
  if isinstance(error, errors.UserError):
    return str(error)
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return (f"no space left on the device writing {error.filename or 'a file'}: free some space and rerun "
            "the same command.")
  if isinstance(error, OSError) and error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
    return (f"{error.filename or 'a path'} cannot be written ({error.strerror}): make it writable, or give "
            "the program another path.")
  if isinstance(error, SyntaxError) and errors.is_user_file(error.filename or ""):
    return f"{error.filename}:{error.lineno}: SyntaxError: {error.msg}: fix the file ({_HOW_TO_TRACE})."
  frame = errors.innermost_user_frame(error)
  if frame is not None:
    return (f"{frame.filename}:{frame.lineno} (in {frame.name}): {type(error).__name__}: {_first_line(error)} "
            f"({_HOW_TO_TRACE}).")
  return None


def interrupt_in_one_line() -> None:
  """Ctrl-C from now on: `_interrupted` (one line, exit 130), unless SIGINT is already ignored or handled.

  `run` calls it; `evaluate` and `sample` also call it before their heavy imports (JAX, TensorFlow:
  ~10 s), when run as programs.
  """
  if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    signal.signal(signal.SIGINT, lambda signum, frame: _interrupted())


def _interrupted() -> NoReturn:
  """Ctrl-C: one line, exit status 130, at once (also called from the SIGINT handler `run` installs).

  The exit skips the interpreter's shutdown (`os._exit`): threads still
  writing a checkpoint (orbax) would keep it waiting, then print tracebacks.
  A checkpoint cut short stays in a temporary folder that the next run
  removes (multimodal_jax/checkpointing.py); the workdir's lock is released.
  """
  if wants_traceback():
    raise KeyboardInterrupt
  workdir_lib.release_held_locks()
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, RuntimeError, ValueError):  # Interrupted in the middle of a print, or closed.
      pass
  # os.write: from a signal handler, a print could find the stream's lock held by the code it interrupted.
  os.write(2, b"Interrupted (Ctrl-C): stopped at once; nothing after the last saved checkpoint was kept. "
              b"Rerun the same command to start or resume.\n")
  os._exit(INTERRUPTED_STATUS)  # pylint: disable=protected-access


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
  """Turns an error the user can fix into one `error:` line and exit status 2 (see the module docstring).

  Anything else propagates with its traceback, as does everything when
  `wants_traceback()`.
  """
  try:
    yield
  except KeyboardInterrupt:
    if wants_traceback():
      raise
    _interrupted()
  except Exception as e:  # pylint: disable=broad-except
    message = user_error_message(e)
    if message is None or wants_traceback():
      raise
    fail(message)
