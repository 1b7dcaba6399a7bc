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
|S~| = 8 update: ~10% slower); measure before using it for training.
"""

import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from multimodal_jax import plugins
from multimodal_jax import train

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
plugins.define_import_flag()
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  set_cpu_devices(_CPU_DEVICES.value)
  initialize_distributed()
  logging.info("Process %d of %d.", jax.process_index(), jax.process_count())
  # After JAX is set up (a module may touch devices), before the config is validated.
  plugins.import_modules(flags.FLAGS[plugins.IMPORT_FLAG].value)
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
