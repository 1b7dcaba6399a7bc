r"""Entry point: `python -m multimodal_jax.main --config=configs/srim.py --workdir=DIR`.

Flags `--config.x.y=...` override any config field. On a multi-host system
(TPU pod, SLURM) pass `--distributed`, or give the coordinator explicitly
(`--coordinator_address`, `--num_processes`, `--process_id`), e.g. for several
CPU processes on one machine.

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
`--verbosity=0` (absl's flag) adds the INFO lines of absl, orbax and JAX. A
config error (an unknown key, a bad value) is one line, `error: ...`, exit
status 2, before anything compiles. A finished run's read-only workdir has
nothing to do and says so.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from multimodal_jax import checkpointing
from multimodal_jax import cli
from multimodal_jax import train
from multimodal_jax import validation
from multimodal_jax import workdir as workdir_lib

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally with :arg.",
                                lock_config=True)
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
flags.mark_flags_as_required(["config", "workdir"])


def initialize_distributed() -> None:
  """Joins the other processes, if this run has any."""
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
  """
  try:
    return cli.parse_cli_flags(argv)  # A flags error ("flag --config=...: ..." and the cause): one line.
  except (AttributeError, KeyError) as e:  # Only ml_collections' key lookups raise these here.
    cli.fail(_unknown_key(e, argv))


def finished_read_only(config, workdir: str) -> bool:
  """True, after saying so, if `workdir` holds a finished run and cannot be written.

  A finished run on a read-only filesystem (an archive, a colleague's
  directory) must not fail (`checkpointing.finished_read_only_step`). An
  unfinished one is a one-line error.
  """
  try:
    newest = checkpointing.finished_read_only_step(workdir, config.train.num_steps)
  except workdir_lib.WorkdirError as e:
    cli.fail(str(e))
  if newest is None:
    return False
  print(f"Nothing to do: the checkpoint is already at step {newest} >= train.num_steps (read-only workdir).",
        flush=True)
  return True


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  set_cpu_devices(_CPU_DEVICES.value)
  initialize_distributed()
  logging.info("Process %d of %d.", jax.process_index(), jax.process_count())
  # After JAX is set up (a module may touch devices), before the config is validated.
  cli.import_flagged_modules()
  try:
    config = flags.FLAGS.config
    validation.validate(config)
  except OSError as e:  # config_flags defers a config file that failed to load to its first use.
    cli.fail(f"--config: {str(e).strip().splitlines()[-1].strip()}")
  except ValueError as e:
    cli.fail(str(e))
  if finished_read_only(config, _WORKDIR.value):
    return
  try:
    train.train_and_evaluate(config, _WORKDIR.value, profile_steps=_PROFILE_STEPS.value)
  except workdir_lib.WorkdirError as e:  # Locked, another config, no checkpoint restores: one line.
    cli.fail(str(e))


if __name__ == "__main__":
  cli.run(main, flags_parser=parse_flags)
