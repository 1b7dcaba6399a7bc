"""`local_photos_sr`: super-resolution HR/LR patch pairs from bundled photographs.

The default super-resolution runs need real photographs but no machine here can
download any, so we cut patches from the colour photographs that ship inside
scikit-image (`skimage.data`, only those stored in the wheel, no pooch fetch)
and scikit-learn (`load_sample_images`). Test patches come from photographs
never seen in training (`TEST_PHOTOS`).

How a pair is made (all deterministic):
  1. Each photograph is first resized with PIL bicubic so its shorter side is
     `photo_short_side` (320 by default). The photos range from 300 to 1411
     pixels; a common scale puts similar amounts of structure into every
     patch (a 64x64 crop of the 1411x1411 retina would otherwise be nearly
     flat) and keeps the large photos from dominating the set.
  2. HR patches of `patch_size` are cut on a regular grid (stride
     patch_size // 4 for train, patch_size // 2 for test, so test patches are
     less redundant), dropping near-flat patches (grey std below
     `MIN_PATCH_STD`: the black borders of retina, empty sky of hubble).
  3. LR = PIL `Image.resize((p // factor, p // factor), BICUBIC)` of the uint8
     HR patch. PIL's bicubic widens its kernel by the factor when
     downsampling (antialiased, like MATLAB `imresize`), the usual SR protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import grain
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

# Patches whose grey-level std (0..255) is below this carry no texture to
# super-resolve.
MIN_PATCH_STD = 6.0


def _skimage(name: str) -> Callable[[], np.ndarray]:
  def load():
    from skimage import data  # pylint: disable=g-import-not-at-top
    image = getattr(data, name)()
    # stereo_motorcycle returns (left, right, disparity).
    return image[0] if isinstance(image, tuple) else image
  return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
  def load():
    from sklearn import datasets  # pylint: disable=g-import-not-at-top
    sample = datasets.load_sample_images()
    index = [f.endswith(filename) for f in sample.filenames].index(True)
    return sample.images[index]
  return load


# Colour photographs that load without network access. skimage's `cat` is the
# same photo as `chelsea` and `colorwheel` is synthetic, so both are left out.
PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    'astronaut': _skimage('astronaut'),
    'coffee': _skimage('coffee'),
    'chelsea': _skimage('chelsea'),
    'rocket': _skimage('rocket'),
    'hubble_deep_field': _skimage('hubble_deep_field'),
    'immunohistochemistry': _skimage('immunohistochemistry'),
    'retina': _skimage('retina'),
    'stereo_motorcycle': _skimage('stereo_motorcycle'),
    'china': _sklearn('china.jpg'),
    'flower': _sklearn('flower.jpg'),
}
TEST_PHOTOS = ('chelsea', 'flower')
TRAIN_PHOTOS = tuple(name for name in PHOTOS if name not in TEST_PHOTOS)


def load_photo(name: str, short_side: int) -> np.ndarray:
  """A bundled photograph as uint8 RGB, bicubically resized to `short_side`."""
  photo = Image.fromarray(np.asarray(PHOTOS[name]()[..., :3], np.uint8))
  scale = short_side / min(photo.size)
  size = (round(photo.width * scale), round(photo.height * scale))
  return np.asarray(photo.resize(size, Image.BICUBIC))


def bicubic_downsample(hr_HxWx3: np.ndarray, factor: int) -> np.ndarray:
  """uint8 HR -> uint8 LR [H / factor, W / factor, 3] with PIL bicubic."""
  h, w = hr_HxWx3.shape[:2]
  if h % factor or w % factor:
    raise ValueError(f'Patch {h}x{w} is not divisible by factor {factor}.')
  lr = Image.fromarray(hr_HxWx3).resize((w // factor, h // factor),
                                        Image.BICUBIC)
  return np.asarray(lr)


def cut_patches(photo_HxWx3: np.ndarray, patch_size: int,
                stride: int) -> list[tuple[int, int, np.ndarray]]:
  """Textured patches on a stride grid, row-major: [(top, left, patch)]."""
  height, width = photo_HxWx3.shape[:2]
  grey_HxW = photo_HxWx3.astype(np.float32).mean(-1)
  patches = []
  for top in range(0, height - patch_size + 1, stride):
    for left in range(0, width - patch_size + 1, stride):
      window = (slice(top, top + patch_size), slice(left, left + patch_size))
      if grey_HxW[window].std() >= MIN_PATCH_STD:
        patches.append((top, left, photo_HxWx3[window]))
  return patches


@dataclasses.dataclass
class LocalPhotosSRConfig(tfds.core.BuilderConfig):
  """SR factor and patch geometry (the name keys the data dir)."""
  factor: int = 8
  patch_size: int = 64
  photo_short_side: int = 320
  train_photos: tuple[str, ...] = TRAIN_PHOTOS
  test_photos: tuple[str, ...] = TEST_PHOTOS


class LocalPhotosSR(registry.LocalBuilder):
  """HR/LR patch pairs from photographs bundled with scikit-image/-learn."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  BUILDER_CONFIGS = [
      LocalPhotosSRConfig(name='x8_64', factor=8, patch_size=64,
                          description='64x64 HR, 8x8 LR.'),
      LocalPhotosSRConfig(name='x4_64', factor=4, patch_size=64,
                          description='64x64 HR, 16x16 LR.'),
      LocalPhotosSRConfig(name='x4_32', factor=4, patch_size=32,
                          description='32x32 HR, 8x8 LR.'),
      # Same shapes as `x8_64` from one small photo per split, for tests and
      # smoke runs (25 train / 15 test patches).
      LocalPhotosSRConfig(name='tiny', factor=8, patch_size=64,
                          photo_short_side=128, train_photos=('astronaut',),
                          test_photos=('chelsea',),
                          description='x8_64 from 2 photos at 128 px.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    if config.patch_size % config.factor:
      raise ValueError(f'patch_size {config.patch_size} is not divisible by '
                       f'factor {config.factor}.')
    if set(config.train_photos) & set(config.test_photos):
      raise ValueError('Train and test photographs must be disjoint.')
    hr, lr = config.patch_size, config.patch_size // config.factor
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'hr': tfds.features.Image(shape=(hr, hr, 3)),
            'lr': tfds.features.Image(shape=(lr, lr, 3)),
            'source': tfds.features.Text(),
        }),
        supervised_keys=('lr', 'hr'),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # The photographs are installed with the packages.
    config = self.builder_config
    return {
        'train': self._generate_examples(config.train_photos,
                                         config.patch_size // 4),
        'test': self._generate_examples(config.test_photos,
                                        config.patch_size // 2),
    }

  def _generate_examples(self, photos: tuple[str, ...], stride: int):
    config = self.builder_config
    for name in photos:
      photo = load_photo(name, config.photo_short_side)
      for top, left, hr in cut_patches(photo, config.patch_size, stride):
        yield f'{name}_{top}_{left}', {
            'hr': hr,
            'lr': bicubic_downsample(hr, config.factor),
            'source': name,
        }


class LowToHighResolution(grain.transforms.Map):
  """Record -> {x: LR in [0, 1], y: HR in [0, 1]}."""

  def map(self, element):
    return {
        'x': np.asarray(element['lr'], np.float32) / 255.0,
        'y': np.asarray(element['hr'], np.float32) / 255.0,
    }


def flip_rotate(example: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
  """The same random flip and 90° rotation of x and y (the 8 symmetries of the square).

  Bicubic downsampling commutes with them (its kernel is symmetric), so a
  transformed pair is still an exact (LR, HR) pair.
  """
  flip, turns = bool(rng.integers(2)), int(rng.integers(4))
  def apply(a):
    a = a[:, ::-1] if flip else a
    return np.ascontiguousarray(np.rot90(a, turns, axes=(0, 1)))
  return {k: apply(v) for k, v in example.items()}


class RandomFlipRotate(grain.transforms.RandomMap):

  def random_map(self, element, rng: np.random.Generator):
    return flip_rotate(element, rng)


def _transforms(data_config: ml_collections.ConfigDict, train: bool):
  """`options.augment` (default off): random flips and 90° rotations of training pairs.

  2761 training patches of 8 photographs are few for a network to learn
  textures from: the 8 symmetries make them 8x as many distinct pairs.
  """
  options = data_config.options if "options" in data_config else {}
  augment = bool(options["augment"]) if "augment" in options else False
  ops = [LowToHighResolution()]
  return ops + [RandomFlipRotate()] if train and augment else ops


def lr_to_rgb(x_BxhxWx3: np.ndarray) -> np.ndarray:
  # The grid code resizes inputs to the sample size itself.
  return np.asarray(x_BxhxWx3, np.float32)


LOCAL_PHOTOS_SR = registry.DatasetSpec(
    tfds_name='local_photos_sr',
    builder_cls=LocalPhotosSR,
    train_split='train',
    eval_split='test',
    make_transforms=_transforms,
    input_to_rgb=lr_to_rgb,
    degrade=bicubic_downsample,
)
