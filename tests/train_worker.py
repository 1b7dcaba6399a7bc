"""Runs the training loop in a process of its own, for tests that need fresh devices or processes.

Writes `--out` (.npz): the final parameters (flattened, `params/<path>`) and
the first local batch this process's train iterator yields (`first_x`), so a
test can compare runs across device counts, processes and interruptions.
"""

from absl import app
from absl import flags
import jax
import numpy as np

from multimodal_jax import main as mmj_main  # Defines --config, --workdir and the distributed flags.
from multimodal_jax import train
from multimodal_jax.data import pipeline

_OUT = flags.DEFINE_string("out", None, "Where to write the .npz of results.")


def flat_params(params) -> dict[str, np.ndarray]:
  leaves, _ = jax.tree_util.tree_flatten_with_path(params)
  return {"params/" + jax.tree_util.keystr(path): np.asarray(leaf.addressable_data(0))
          for path, leaf in leaves}


def run(argv):
  del argv
  mmj_main.initialize_distributed()
  config = flags.FLAGS.config
  first_x = next(pipeline.create_train_iterator(config))["x"]
  state = train.train_and_evaluate(config, flags.FLAGS.workdir)
  if _OUT.value:
    np.savez(_OUT.value, first_x=first_x, step=np.asarray(state.step.addressable_data(0)),
             **flat_params(state.params))


if __name__ == "__main__":
  app.run(run)
