"""Runs the training loop in a process of its own, for tests that need fresh devices or processes.

Writes `--out` (.npz): every array of the final state (flattened, `state/<path>`:
parameters, optimiser states, method fields) and the first local batch this
process's train iterator yields (`first_x`), so a test can compare runs across
device counts, processes and interruptions. `--kill_after_checkpoint=N`
SIGKILLs the process once the first checkpoint at a step >= N is committed:
a deterministic hard interruption for resume tests.
"""

import os
import signal

from absl import app
from absl import flags
import jax
import numpy as np

from multimodal_jax import cli
from multimodal_jax import main as mmj_main  # Defines --config, --workdir and the distributed flags.
from multimodal_jax import train
from multimodal_jax.data import pipeline

_OUT = flags.DEFINE_string("out", None, "Where to write the .npz of results.")
_KILL_AFTER = flags.DEFINE_integer("kill_after_checkpoint", None,
                                   "SIGKILL this process once a checkpoint at a step >= this is committed.")


def flat_state(state) -> dict[str, np.ndarray]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(state)
  return {"state/" + jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
          for path, leaf in leaves}


def _kill_after_checkpoint(step_threshold: int) -> None:
  save = train.save_checkpoint

  def save_then_maybe_die(manager, step, state, data_iter):
    save(manager, step, state, data_iter)
    if step >= step_threshold:
      manager.wait_until_finished()
      print(f"Killing myself after the checkpoint at step {step}.", flush=True)
      os.kill(os.getpid(), signal.SIGKILL)

  train.save_checkpoint = save_then_maybe_die


def run(argv):
  del argv
  mmj_main.initialize_distributed()
  config = flags.FLAGS.config
  if _KILL_AFTER.value is not None:
    _kill_after_checkpoint(_KILL_AFTER.value)
  first_x = next(pipeline.create_train_iterator(config))["x"]
  state = train.train_and_evaluate(config, flags.FLAGS.workdir)
  if _OUT.value:
    np.savez(_OUT.value, first_x=first_x, step=np.asarray(state.step.addressable_data(0)),
             **flat_state(state))


if __name__ == "__main__":
  cli.set_up_process()  # As `python -m multimodal_jax.main` does (cli.run).
  app.run(run)
