r"""Entry point: `python -m multimodal_jax.main --config=configs/srim.py --workdir=DIR`.

`--list` prints what can be run: the configs with their variants, the
methods, models and datasets, each with a one-line description.

Flags `--config.x.y=...` override any config field. A `--config` path that is
not found from the working directory is looked up in the project's checkout
(`configs/srim.py` works from anywhere), with a line saying which file. On a
multi-host system (TPU pod, SLURM) pass `--distributed`, or give the
coordinator explicitly (`--coordinator_address`, `--num_processes`,
`--process_id`), e.g. for several CPU processes on one machine.

`--import=MODULE` (repeatable) imports a user module first, e.g. one that
registers a dataset or a method (docs/extending.md); the run records it so
that `evaluate` and `sample` import it again.

`--cpu_devices=N` splits a CPU into N XLA devices (the batch is sharded over
them like over GPUs). XLA:CPU parallelises one convolution over threads
poorly, so one device per core speeds up convolution-heavy forward passes
(IMLE's selection: 1.9x on 2 cores) but can slow small backward passes (IMLE's
|S~| = 8 update: ~10%% slower); measure before using it for training.

`--profile_steps=N` writes a `jax.profiler` trace of N steps (after the first
round, which compiles) to `WORKDIR/profile`, for TensorBoard's profile tab.

Logging shows warnings and errors only, so that the progress lines stand out;
`--verbosity=0` (absl's flag) adds the INFO lines of absl, orbax and JAX. An
error the user can fix (an unknown config key, a bad value, a config file or
an --import module that raises, a busy or full or read-only workdir) is one
line, `error: ...`, exit status 2, before anything compiles where it can be
known then; `--verbosity=0` or MULTIMODAL_JAX_TRACEBACK=1 shows its traceback
(multimodal_jax/cli.py). A second run on a busy workdir is refused before JAX
starts. A finished run's read-only workdir has nothing to do and says so. The
run ends with a summary and the commands to evaluate and sample it.
"""

import os

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from multimodal_jax import cli
from multimodal_jax import errors
from multimodal_jax import storage
from multimodal_jax import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally with :arg (--list shows them).",
                                lock_config=True)
_LIST = flags.DEFINE_bool("list", False, "Print the configs with their variants, the methods, models and "
                          "datasets, and exit.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", 0, "Split the CPU into this many XLA devices "
                                    "(0: JAX's default, one). Only affects the CPU backend.")
_PROFILE_STEPS = flags.DEFINE_integer("profile_steps", 0, "Trace this many steps after the first round "
                                      "with jax.profiler into WORKDIR/profile (TensorBoard's profile tab); 0: off.")
cli.define_import_flag()


def initialize_distributed() -> None:
  """Joins the other processes, if this run has any."""
  import jax  # pylint: disable=g-import-not-at-top  # See `main`: JAX loads after the workdir's lock.
  if _COORDINATOR.value:
    if jax.config.jax_platforms in (None, "", "cpu"):
      # Cross-process collectives on CPU need an explicit implementation.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=_COORDINATOR.value,
                               num_processes=_NUM_PROCESSES.value, process_id=_PROCESS_ID.value)
  elif _DISTRIBUTED.value:
    jax.distributed.initialize()


def set_cpu_devices(n: int) -> None:
  """Splits the CPU backend into n devices; must run before JAX starts a backend."""
  if n < 0:
    raise app.UsageError(f"--cpu_devices must be >= 0, got {n}.")
  if n and "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
    raise app.UsageError("Pass either --cpu_devices or XLA_FLAGS=--xla_force_host_platform_device_count, "
                         "not both.")
  if n:
    import jax  # pylint: disable=g-import-not-at-top
    jax.config.update("jax_num_cpu_devices", n)


def _unknown_key(error: Exception, argv: list[str]) -> str:
  """ml_collections' "'key'\nDid you mean ...?" as one line naming the flag."""
  while error.args and isinstance(error.args[0], LookupError):  # AttributeError(KeyError(...)).
    error = error.args[0]
  key, _, hint = str(error.args[0] if error.args else error).partition("\n")
  key = key.strip("'\"")
  names = [a.partition("=")[0] for a in argv[1:] if a.startswith("--config.")]
  flag = next((n for n in names if key in n.split(".")), "--config")
  return f"{flag}: the config has no key {key!r}" + (f" ({hint.strip()})" if hint else "")


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with a config error as one line (`fail`) and logging at WARNING by default.

  ml_collections raises a bare AttributeError/KeyError for a typo'd key and
  wraps a config file's traceback in a flags error: dozens of lines either way.
  absl turns INFO logging on after parsing unless --verbosity was given; absl
  and orbax INFO lines would bury the progress lines (>95% of a run's output).
  A `--config` path missing from the working directory is taken from the
  project's checkout (`cli.resolve_config_argv`).
  """
  argv = cli.resolve_config_argv(argv)
  try:
    return cli.parse_cli_flags(argv)  # A flags error ("flag --config=...: ..." and the cause): one line.
  except (AttributeError, KeyError) as e:  # ml_collections' lookup of a key the config lacks, or not.
    frame = errors.innermost_user_frame(e)  # In the config file's own code.
    if frame is not None and not (isinstance(e, KeyError) or (e.args and isinstance(e.args[0], LookupError))):
      raise  # Another error of the config file: `cli.user_errors` names its line.
    message = _unknown_key(e, argv)
    cli.fail(f"{frame.filename}:{frame.lineno} (in {frame.name}): {message.partition(': ')[2]}" if frame
             else message)


def finished_read_only(config, workdir: str) -> bool:
  """True, after saying so, if `workdir` holds a finished run and cannot be written.

  A finished run on a read-only filesystem (an archive, a colleague's
  directory) must not fail (`workdir_lib.finished_read_only_step`). An
  unfinished one is a one-line error.
  """
  newest = workdir_lib.finished_read_only_step(workdir, config.train.num_steps)
  if newest is None:
    return False
  print(f"Nothing to do: the checkpoint is already at step {newest} >= train.num_steps (read-only workdir).",
        flush=True)
  return True


def _loaded_config():
  """The --config, or one line on what is wrong with it."""
  try:
    return flags.FLAGS.config
  except OSError as e:  # config_flags defers a config file that failed to load to its first use.
    cli.fail(f"--config: {str(e).strip().splitlines()[-1].strip()}")


def _locks_early() -> bool:
  """Whether `main` takes the workdir's lock itself, before JAX starts.

  Only process 0 of a run locks, and a process learns its index from JAX
  unless the flags give it (otherwise the loop locks, once JAX knows). A new
  workdir too: of two runs started on it together, the second is refused in
  a second.
  """
  return not _DISTRIBUTED.value and (not _COORDINATOR.value or _PROCESS_ID.value == 0)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if _LIST.value:
    cli.set_up_process()
    cli.import_flagged_modules()  # Their datasets and methods are listed too.
    from multimodal_jax import catalog  # pylint: disable=g-import-not-at-top  # The registries: JAX, tfds.
    print(catalog.describe(), flush=True)
    return
  if flags.FLAGS["config"].value is None or not _WORKDIR.value:
    cli.fail("--config=FILE and --workdir=DIR are required, e.g. --config=configs/regression.py "
             "--workdir=/tmp/regression (--list shows the configs).")
  config = _loaded_config()
  workdir = storage.resolve(_WORKDIR.value)  # gs://bucket/run stays a URL
  storage.check_client(workdir)
  if finished_read_only(config, workdir):
    return
  workdir_lib.check_free_space(workdir)  # A full disk, before the minutes of start-up (train checks again).
  # A second run on a busy workdir is refused here, in a second or so: JAX, TensorFlow, the data and
  # the compilation come after the lock, hence the imports inside this function.
  locked = _locks_early()
  with workdir_lib.lock(workdir, enabled=locked):
    cli.set_up_process()
    set_cpu_devices(_CPU_DEVICES.value)
    initialize_distributed()
    import jax  # pylint: disable=g-import-not-at-top
    from multimodal_jax import train  # pylint: disable=g-import-not-at-top
    from multimodal_jax import validation  # pylint: disable=g-import-not-at-top
    logging.info("Process %d of %d.", jax.process_index(), jax.process_count())
    # After JAX is set up (a module may touch devices), before the config is validated.
    cli.import_flagged_modules()
    try:
      validation.validate(config)
    except ValueError as e:
      cli.fail(str(e))
    train.train_and_evaluate(config, workdir, profile_steps=_PROFILE_STEPS.value, lock_workdir=not locked)


if __name__ == "__main__":
  cli.run(main, flags_parser=parse_flags, set_up=False)
