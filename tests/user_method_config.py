r"""`best_of_k` on `two_colour_blocks`: a config for a method and a dataset defined outside the package.

  python -m multimodal_jax.main --config=user_method_config.py \
      --import=user_data_example --import=user_method_example --workdir=/tmp/blocks

About 20 s on a 2-core CPU (`:runlocal`: a few seconds).
"""

import ml_collections

from multimodal_jax import config_lib

VARIANTS = ["", "runlocal"]


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base_config()
  config.method = "best_of_k"
  config.data.name = "two_colour_blocks"
  config.data.batch_size = 16
  config.best_of_k = ml_collections.ConfigDict({"num_hypotheses": 2})  # The method's own section.
  config.model.features, config.model.num_blocks = 16, 1
  config.train.num_steps = 200
  if arg.runlocal:
    config.data.builder_config = "tiny"
    config.data.batch_size = 8
    config.model.features = 8
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
