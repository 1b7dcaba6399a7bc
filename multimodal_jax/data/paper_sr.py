"""The papers' super-resolution data: ImageNet (IJCV §5.1.2) and DIV2K x8.

Both are read from the TFDS catalogue (`builder_cls=None`); neither can be
downloaded here, so prepare them where the data is (`tfds build imagenet2012
--manual_dir ...`, `tfds build div2k/bicubic_x8`) and point
config.data.data_dir at the result. Their loading code is tested under
`tfds.testing.mock_data`.

`imagenet_sr` (SRIM, IJCV §5.1.2): "The ground truth images have a resolution
of 256x256, which are obtained by anisotropic scaling of the original images.
The input images have a resolution of 32x32, which are obtained by
downsampling the 256x256 images." HR = PIL bicubic resize of the whole image
to hr_size x hr_size (aspect ratio not kept); LR = PIL bicubic (antialiased)
downsampling by `factor`. The paper trains on 1280 images: the train split is
`train[:1280]`; evaluation uses the validation split.

`div2k_x8`: DIV2K's own HR / bicubic x8 LR pairs (`div2k/bicubic_x8`). Training
takes a random aligned crop (hr_size HR, hr_size / 8 LR, at LR-grid
positions); evaluation the centre crop.

Training augmentation (`options.augment`, as the authors' SRIM-pytorch
`use_flip` / `use_rot`): a random horizontal flip and a random multiple of 90°
rotation, applied identically to x and y.

Options read from config.data.options: hr_size (256), augment (True).
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np
from PIL import Image

from multimodal_jax.data import local_photos_sr
from multimodal_jax.data import registry

IMAGENET_FACTOR = 8
DIV2K_FACTOR = 8
IMAGENET_TRAIN_IMAGES = 1280  # IJCV §5.1.4


def _options(data_config: ml_collections.ConfigDict) -> tuple[int, bool]:
  options = data_config.options
  missing = [k for k in ('hr_size', 'augment') if k not in options]
  if missing:
    raise KeyError(f'config.data.options needs {missing} for {data_config.name!r} (see configs/srim.py).')
  return int(options.hr_size), bool(options.augment)


def _to_example(lr_hxwx3: np.ndarray, hr_HxWx3: np.ndarray) -> dict[str, np.ndarray]:
  return {'x': np.asarray(lr_hxwx3, np.float32) / 255.0, 'y': np.asarray(hr_HxWx3, np.float32) / 255.0}


flip_rotate = local_photos_sr.flip_rotate


class ImageNetPair(grain.transforms.Map):
  """{'image'} -> HR (anisotropic resize to hr_size^2) and its bicubic LR."""

  def __init__(self, hr_size: int, factor: int = IMAGENET_FACTOR):
    if hr_size % factor:
      raise ValueError(f'hr_size {hr_size} is not divisible by the factor {factor}.')
    self.hr_size, self.factor = hr_size, factor

  def map(self, element):
    image = Image.fromarray(np.asarray(element['image'], np.uint8)).convert('RGB')
    hr = np.asarray(image.resize((self.hr_size, self.hr_size), Image.BICUBIC))
    return _to_example(local_photos_sr.bicubic_downsample(hr, self.factor), hr)


def aligned_crop(lr_hxwx3: np.ndarray, hr_HxWx3: np.ndarray, hr_size: int, factor: int,
                 top_left_lr: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray]:
  """An hr_size crop of HR and the matching hr_size / factor crop of LR (centre if no position)."""
  lr_size = hr_size // factor
  h, w = lr_hxwx3.shape[:2]
  if h < lr_size or w < lr_size or hr_HxWx3.shape[0] < h * factor or hr_HxWx3.shape[1] < w * factor:
    raise ValueError(f'Image pair LR {lr_hxwx3.shape} / HR {hr_HxWx3.shape} is too small for a '
                     f'{hr_size} crop at x{factor}.')
  top, left = top_left_lr if top_left_lr is not None else ((h - lr_size) // 2, (w - lr_size) // 2)
  lr = lr_hxwx3[top:top + lr_size, left:left + lr_size]
  hr = hr_HxWx3[top * factor:(top + lr_size) * factor, left * factor:(left + lr_size) * factor]
  return lr, hr


class Div2KRandomCrop(grain.transforms.RandomMap):
  """Training: a random LR-grid-aligned crop, then the optional flip/rotation."""

  def __init__(self, hr_size: int, augment: bool, factor: int = DIV2K_FACTOR):
    self.hr_size, self.augment, self.factor = hr_size, augment, factor

  def random_map(self, element, rng: np.random.Generator):
    lr_img, hr_img = np.asarray(element['lr'], np.uint8), np.asarray(element['hr'], np.uint8)
    lr_size = self.hr_size // self.factor
    top = int(rng.integers(lr_img.shape[0] - lr_size + 1))
    left = int(rng.integers(lr_img.shape[1] - lr_size + 1))
    example = _to_example(*aligned_crop(lr_img, hr_img, self.hr_size, self.factor, (top, left)))
    return flip_rotate(example, rng) if self.augment else example


class Div2KCenterCrop(grain.transforms.Map):
  """Evaluation: the centre aligned crop."""

  def __init__(self, hr_size: int, factor: int = DIV2K_FACTOR):
    self.hr_size, self.factor = hr_size, factor

  def map(self, element):
    return _to_example(*aligned_crop(np.asarray(element['lr'], np.uint8), np.asarray(element['hr'], np.uint8),
                                     self.hr_size, self.factor))


RandomFlipRotate = local_photos_sr.RandomFlipRotate


def imagenet_transforms(data_config: ml_collections.ConfigDict, train: bool):
  hr_size, augment = _options(data_config)
  ops = [ImageNetPair(hr_size)]
  return ops + [RandomFlipRotate()] if train and augment else ops


def div2k_transforms(data_config: ml_collections.ConfigDict, train: bool):
  hr_size, augment = _options(data_config)
  return [Div2KRandomCrop(hr_size, augment)] if train else [Div2KCenterCrop(hr_size)]


IMAGENET_SR = registry.DatasetSpec(
    tfds_name='imagenet2012',
    builder_cls=None,
    train_split=f'train[:{IMAGENET_TRAIN_IMAGES}]',
    eval_split='validation',
    make_transforms=imagenet_transforms,
    input_to_rgb=local_photos_sr.lr_to_rgb,
    degrade=local_photos_sr.bicubic_downsample,
)

DIV2K_X8 = registry.DatasetSpec(
    tfds_name='div2k/bicubic_x8',
    builder_cls=None,
    train_split='train',
    eval_split='validation',
    make_transforms=div2k_transforms,
    input_to_rgb=local_photos_sr.lr_to_rgb,
    # DIV2K's LR images are MATLAB imresize's; PIL's antialiased bicubic is its close stand-in here.
    degrade=local_photos_sr.bicubic_downsample,
)
