"""`digits_completion`: multimodal digit completion, as cGML §5.1.

cGML (ICLR 2021, §5.1) notes that plain MNIST completion is unimodal and makes
it multimodal: "we overlap the top half of an input image with the top half of
another randomly sampled image. We carry out this corruption for 20% of the
training data. Corrupted samples are not fixed across epochs. Then, we apply a
random sized mask to the top half, and ask the network to predict the missing
pixels." We do the same with scikit-learn's bundled 8x8 digits (1797 images,
values 0..16) upscaled bilinearly to 32x32 uint8, since MNIST cannot be
downloaded here.

The builder stores only the clean images; the corruption is redrawn every
epoch by a grain RandomMap (`CorruptAndMask`) that holds the clean training
images itself (1500 x 32 x 32 bytes). Evaluation (train=False) is clean with a
fixed mask per example (`FixedMask`).

Options (in `data_config.options` if present, else the defaults below):
  corruption_rate: fraction of training examples overlapped with another.
  mask_min_size / mask_max_size: side range of the rectangular mask; its
    height is also capped at the top half (16 rows).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib

import grain
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

IMAGE_SIZE = 32
HALF = IMAGE_SIZE // 2
NUM_TEST = 297  # The last 297 digits; the first 1500 are for training.

DEFAULT_CORRUPTION_RATE = 0.2
DEFAULT_MASK_MIN_SIZE = 8
DEFAULT_MASK_MAX_SIZE = 24


@functools.lru_cache(maxsize=None)
def _all_digits_32() -> tuple[np.ndarray, np.ndarray]:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = []
  for image_8x8 in digits.images:
    scaled = Image.fromarray((image_8x8 * (255.0 / 16.0)).astype(np.float32),
                             mode='F')
    scaled = np.asarray(scaled.resize((IMAGE_SIZE, IMAGE_SIZE),
                                      Image.BILINEAR))
    images.append(np.clip(np.round(scaled), 0, 255).astype(np.uint8))
  return np.stack(images)[..., None], digits.target.astype(np.int64)


def load_digits_32(split: str) -> tuple[np.ndarray, np.ndarray]:
  """Upscaled digits of a split: uint8 [N, 32, 32, 1] and int64 labels [N]."""
  images, labels = _all_digits_32()
  if split == 'train':
    return images[:-NUM_TEST], labels[:-NUM_TEST]
  if split == 'test':
    return images[-NUM_TEST:], labels[-NUM_TEST:]
  raise ValueError(f"Unknown split {split!r}; valid: ['test', 'train'].")


@dataclasses.dataclass
class DigitsCompletionConfig(tfds.core.BuilderConfig):
  """How many examples of each split to keep (None = all).

  Subsets take the first examples of a split; the corruption partners are
  always drawn from the full training split (see `CorruptAndMask`).
  """
  num_train: int | None = None
  num_test: int | None = None


class DigitsCompletion(registry.LocalBuilder):
  """scikit-learn digits at 32x32 (clean; corruption happens in the pipeline)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  BUILDER_CONFIGS = [
      DigitsCompletionConfig(name='default', description='1500 / 297.'),
      # For tests and smoke runs.
      DigitsCompletionConfig(name='tiny', num_train=64, num_test=16,
                             description='64 / 16.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 1)),
            'label': tfds.features.ClassLabel(num_classes=10),
        }),
        supervised_keys=('image', 'label'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The digits are installed with scikit-learn.
    return {
        'train': self._generate_examples('train'),
        'test': self._generate_examples('test'),
    }

  def _generate_examples(self, split: str):
    images, labels = load_digits_32(split)
    config = self.builder_config
    keep = config.num_train if split == 'train' else config.num_test
    images, labels = images[:keep], labels[:keep]
    for index, (image, label) in enumerate(zip(images, labels)):
      yield index, {'image': image, 'label': int(label)}


def sample_top_mask(rng: np.random.Generator, min_size: int,
                    max_size: int) -> np.ndarray:
  """A random rectangle inside the top half: float32 [32, 32, 1], 1 = missing."""
  height = int(rng.integers(min(min_size, HALF), min(max_size, HALF) + 1))
  width = int(rng.integers(min_size, min(max_size, IMAGE_SIZE) + 1))
  top = int(rng.integers(0, HALF - height + 1))
  left = int(rng.integers(0, IMAGE_SIZE - width + 1))
  mask_HxWx1 = np.zeros((IMAGE_SIZE, IMAGE_SIZE, 1), np.float32)
  mask_HxWx1[top:top + height, left:left + width] = 1.0
  return mask_HxWx1


def overlap_top_half(image_HxWx1: np.ndarray,
                     other_HxWx1: np.ndarray) -> np.ndarray:
  """cGML §5.1 corruption: pixelwise max of the two top halves."""
  corrupted = image_HxWx1.copy()
  corrupted[:HALF] = np.maximum(image_HxWx1[:HALF], other_HxWx1[:HALF])
  return corrupted


def completion_example(image_HxWx1: np.ndarray, mask_HxWx1: np.ndarray,
                       **flags: bool) -> dict[str, np.ndarray]:
  """{x: [masked image, mask], y: the image in [0, 1], mask, and each flag as int32}."""
  y = image_HxWx1.astype(np.float32) / 255.0
  return {
      'x': np.concatenate([y * (1.0 - mask_HxWx1), mask_HxWx1], axis=-1),
      'y': y,
      'mask': mask_HxWx1,
      **{name: np.int32(value) for name, value in flags.items()},
  }


def content_rng(image: np.ndarray) -> np.random.Generator:
  """An rng seeded by the pixels (crc32): the same in every run and pipeline order."""
  return np.random.default_rng(zlib.crc32(image.tobytes()))


class CorruptAndMask(grain.transforms.RandomMap):
  """Training: corrupt with probability `corruption_rate`, then mask the top.

  Draws from grain's per-example rng, so corruptions differ between epochs
  yet replay exactly given the pipeline seed.
  """

  def __init__(self, corruption_rate: float, mask_min_size: int,
               mask_max_size: int):
    self.corruption_rate = corruption_rate
    self.mask_min_size = mask_min_size
    self.mask_max_size = mask_max_size
    self.train_images_Nx32x32x1, _ = load_digits_32('train')

  def random_map(self, element, rng: np.random.Generator):
    image_HxWx1 = np.asarray(element['image'], np.uint8)
    corrupted = bool(rng.random() < self.corruption_rate)
    if corrupted:
      other = self.train_images_Nx32x32x1[
          rng.integers(len(self.train_images_Nx32x32x1))]
      image_HxWx1 = overlap_top_half(image_HxWx1, other)
    mask_HxWx1 = sample_top_mask(rng, self.mask_min_size, self.mask_max_size)
    return completion_example(image_HxWx1, mask_HxWx1, corrupted=corrupted)


class FixedMask(grain.transforms.Map):
  """Evaluation: no corruption; the mask is a function of the image content.

  Seeding from the pixels (crc32) makes the eval masks the same in every run
  and every pipeline order, without storing them in the dataset.
  """

  def __init__(self, mask_min_size: int, mask_max_size: int):
    self.mask_min_size = mask_min_size
    self.mask_max_size = mask_max_size

  def map(self, element):
    image_HxWx1 = np.asarray(element['image'], np.uint8)
    mask_HxWx1 = sample_top_mask(content_rng(image_HxWx1), self.mask_min_size, self.mask_max_size)
    return completion_example(image_HxWx1, mask_HxWx1, corrupted=False)


def make_transforms(data_config: ml_collections.ConfigDict, train: bool):
  min_size = int(registry.data_option(data_config, 'mask_min_size', DEFAULT_MASK_MIN_SIZE))
  max_size = int(registry.data_option(data_config, 'mask_max_size', DEFAULT_MASK_MAX_SIZE))
  if not 1 <= min_size <= max_size:
    raise ValueError(f'Need 1 <= mask_min_size <= mask_max_size, got '
                     f'{min_size}, {max_size}.')
  if train:
    rate = float(registry.data_option(data_config, 'corruption_rate',
                         DEFAULT_CORRUPTION_RATE))
    return [CorruptAndMask(rate, min_size, max_size)]
  return [FixedMask(min_size, max_size)]


def masked_to_rgb(x_BxHxWx2: np.ndarray) -> np.ndarray:
  """Grey masked image with the missing region shown in dark red."""
  x = np.asarray(x_BxHxWx2, np.float32)
  grey, mask = x[..., :1], x[..., 1:2]
  rgb = np.repeat(grey, 3, axis=-1)
  return rgb * (1.0 - mask) + mask * np.array([0.5, 0.0, 0.0], np.float32)


DIGITS_COMPLETION = registry.DatasetSpec(
    tfds_name='digits_completion',
    builder_cls=DigitsCompletion,
    train_split='train',
    eval_split='test',
    make_transforms=make_transforms,
    input_to_rgb=masked_to_rgb,
)
