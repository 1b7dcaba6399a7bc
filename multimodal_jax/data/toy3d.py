"""`toy3d`: the two-branch toy of cgml_iclr2021 §4 / Fig. 3, y = ±4 (x, x², x³).

Each example draws x ~ U[-1, 1] and a branch s ∈ {-1, +1} with equal
probability; y = s * 4 * (x, x², x³). For every x the conditional p(y | x) is
exactly two points (one, 0, at x = 0), so mode coverage and precision of a
generator can be measured exactly: `branch_errors` gives a sample's distance
to each true branch. An L1 regressor can only output a point between them
(Fig. 3b: "L1 loss generates the line y = 0").

Stored records: `x` (float32 scalar), `branch` (int32 ±1), `y` (float32 [3],
in the paper's units). The registered transform turns them into the
library's image-shaped batch convention:
  x: float32 [1, 1, 1], the scalar x in [-1, 1];
  y: float32 [1, 1, 3], the target normalised to [0, 1]: (y + 4) / 8;
  branch: int32 ±1.
"""

from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

SCALE = 4.0
# Every coordinate of y lies in [-SCALE, SCALE]: the output range is 2 * SCALE.
OUTPUT_RANGE = 2.0 * SCALE


def branch_points(x: np.ndarray) -> np.ndarray:
  """The two true outputs for each x, in paper units: float32 [..., 2, 3] (branch +1, then -1)."""
  x = np.asarray(x, np.float32)[..., None]
  curve = SCALE * np.concatenate([x, x**2, x**3], axis=-1)
  return np.stack([curve, -curve], axis=-2)


def normalize(y: np.ndarray) -> np.ndarray:
  """Paper units [-4, 4] -> [0, 1]."""
  return (np.asarray(y, np.float32) + SCALE) / OUTPUT_RANGE


def denormalize(y01: np.ndarray) -> np.ndarray:
  """[0, 1] -> paper units [-4, 4]."""
  return np.asarray(y01, np.float32) * OUTPUT_RANGE - SCALE


def branch_errors(x: np.ndarray, y_hat: np.ndarray) -> np.ndarray:
  """Max-abs distance of outputs to each branch, as a fraction of the output range.

  Args:
    x: [...] inputs.
    y_hat: [..., 3] outputs in paper units (broadcastable against x[..., None]).

  Returns:
    float32 [..., 2]: max_d |y_hat_d - y_branch_d| / OUTPUT_RANGE for branch
    +1 and branch -1.
  """
  points = branch_points(x)  # [..., 2, 3]
  return np.max(np.abs(np.asarray(y_hat)[..., None, :] - points), axis=-1) / OUTPUT_RANGE


def make_example(seed: int, split_code: int, index: int) -> dict[str, np.ndarray]:
  """One example, a pure function of (seed, split_code, index)."""
  rng = np.random.default_rng([seed, split_code, index])
  x = np.float32(rng.uniform(-1.0, 1.0))
  branch = np.int32(1 if rng.random() < 0.5 else -1)
  return {'x': x, 'branch': branch, 'y': branch_points(x)[0 if branch > 0 else 1]}


@dataclasses.dataclass
class Toy3dConfig(tfds.core.BuilderConfig):
  num_train: int = 8192
  num_test: int = 512
  seed: int = 0


_SPLIT_CODES = {'train': 0, 'test': 1}


class Toy3d(registry.LocalBuilder):
  """x ~ U[-1, 1], y = ±4 (x, x², x³) with equal probability (cgml_iclr2021 Fig. 3)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      Toy3dConfig(name='default', description='8192 / 512 examples.'),
      Toy3dConfig(name='tiny', num_train=64, num_test=16, description='64 / 16 examples.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'x': tfds.features.Scalar(dtype=np.float32),
            'branch': tfds.features.Scalar(dtype=np.int32),
            'y': tfds.features.Tensor(shape=(3,), dtype=np.float32),
        }),
        supervised_keys=('x', 'y'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated locally.
    config = self.builder_config
    return {
        'train': self._generate_examples('train', config.num_train),
        'test': self._generate_examples('test', config.num_test),
    }

  def _generate_examples(self, split: str, num_examples: int):
    config = self.builder_config
    for index in range(num_examples):
      yield index, make_example(config.seed, _SPLIT_CODES[split], index)


class ToImageShaped(grain.transforms.Map):
  """Record -> {x: [1, 1, 1] in [-1, 1], y: [1, 1, 3] in [0, 1], branch}."""

  def map(self, element):
    return {
        'x': np.full((1, 1, 1), element['x'], np.float32),
        'y': normalize(element['y']).reshape(1, 1, 3),
        'branch': np.int32(element['branch']),
    }


def _transforms(data_config: ml_collections.ConfigDict, train: bool):
  del data_config, train
  return [ToImageShaped()]


def x_to_rgb(x_Bx1x1x1: np.ndarray) -> np.ndarray:
  """x in [-1, 1] shown as a grey level."""
  return np.repeat((np.asarray(x_Bx1x1x1, np.float32) + 1.0) / 2.0, 3, axis=-1)


TOY3D = registry.DatasetSpec(
    tfds_name='toy3d',
    builder_cls=Toy3d,
    train_split='train',
    eval_split='test',
    make_transforms=_transforms,
    input_to_rgb=x_to_rgb,
)
