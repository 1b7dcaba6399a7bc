r"""Entry point: `python -m multimodal_jax.main --config=configs/srim.py --workdir=DIR`.

Flags `--config.x.y=...` override any config field. On a multi-host system
(TPU pod, SLURM) pass `--distributed`, or give the coordinator explicitly
(`--coordinator_address`, `--num_processes`, `--process_id`), e.g. for several
CPU processes on one machine.
"""

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from multimodal_jax import train

_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and TensorBoard logs.")
config_flags.DEFINE_config_file("config", None, "A configs/*.py file, optionally with :arg.",
                                lock_config=True)
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "Call jax.distributed.initialize() with auto-detection (TPU pods, SLURM).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  initialize_distributed()
  logging.info("Process %d of %d.", jax.process_index(), jax.process_count())
  train.train_and_evaluate(flags.FLAGS.config, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)
