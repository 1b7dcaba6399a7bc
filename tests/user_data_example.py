"""`two_colour_blocks`: a dataset defined outside multimodal_jax (the example of docs/extending.md).

x is a 32x32 mask of random blocks; y paints the blocks red or blue, so every
input has exactly two right answers. tests/test_extending.py trains, evaluates
and samples it through the command-line tools with `--import=user_data_example`.
"""

import dataclasses

import grain
import numpy as np
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

COLOURS = np.array([(0.9, 0.2, 0.2), (0.2, 0.4, 0.9)], np.float32)  # The two modes: red, blue.


@dataclasses.dataclass
class BlocksConfig(tfds.core.BuilderConfig):
  num_train: int = 64
  num_test: int = 16


class TwoColourBlocks(registry.LocalBuilder):
  """Examples generated here: nothing is downloaded. `:runlocal` configs pick `tiny`."""
  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [BlocksConfig(name="default"), BlocksConfig(name="tiny", num_train=16)]

  def _info(self):
    return self.dataset_info_from_configs(features=tfds.features.FeaturesDict({
        "mask": tfds.features.Tensor(shape=(32, 32), dtype=np.uint8),
        "colour": tfds.features.Scalar(dtype=np.int32)}))

  def _split_generators(self, dl_manager):
    del dl_manager  # Nothing to download.
    config = self.builder_config
    return {"train": self._generate_examples(0, config.num_train),
            "test": self._generate_examples(1, config.num_test)}

  def _generate_examples(self, split_seed, num_examples):
    for index in range(num_examples):
      rng = np.random.default_rng([split_seed, index])  # Deterministic: the same data on every build.
      mask_32x32 = np.kron(rng.random((4, 4)) < 0.5, np.ones((8, 8))).astype(np.uint8)
      yield index, {"mask": mask_32x32, "colour": np.int32(rng.integers(2))}


class ToXY(grain.transforms.Map):
  """Stored record -> {x: the mask [32, 32, 1], y: the coloured blocks [32, 32, 3] in [0, 1]}."""

  def map(self, record):
    mask_HxWx1 = np.asarray(record["mask"], np.float32)[..., None]
    return {"x": mask_HxWx1, "y": mask_HxWx1 * COLOURS[record["colour"]]}


registry.register("two_colour_blocks", registry.DatasetSpec(
    tfds_name="two_colour_blocks", builder_cls=TwoColourBlocks, train_split="train", eval_split="test",
    make_transforms=lambda data_config, train: [ToXY()],
    input_to_rgb=lambda x_BxHxWx1: np.repeat(x_BxHxWx1, 3, axis=-1)))  # x as RGB, for sample grids.
