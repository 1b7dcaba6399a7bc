"""Paper-scale colourisation data (cgml_iclr2021 §5.2): STL-10 and ImageNet from the TFDS catalogue.

Nothing here downloads at run time: these names read tfds' own `stl10` and
`imagenet2012` builders from `config.data.data_dir`. Where they are not
prepared, `data/pipeline.py` stops with its "not prepared" error saying how to
prepare them (`tfds build stl10 ...`; ImageNet needs its manual download).

Each record's image becomes
  x: the grey image [S, S, 1] in [0, 1] (BT.601 luma, as toy_scenes' `grey`),
  y: the RGB image [S, S, 3] in [0, 1],
after a centre crop to a square and a bilinear resize to S
(`data.options.image_size` if given, else 96 for STL-10 and 128 for ImageNet).
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np
from PIL import Image

from multimodal_jax.data import registry
from multimodal_jax.data import toy_scenes


def square_resize(image_HxWx3: np.ndarray, size: int) -> np.ndarray:
  """Centre crop to a square, then bilinear resize to size x size: uint8."""
  h, w = image_HxWx3.shape[:2]
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  crop = np.asarray(image_HxWx3[top:top + side, left:left + side], np.uint8)
  if side != size:
    crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR))
  return crop


class PhotoToGreyAndColour(grain.transforms.Map):
  """Record {'image'} -> {x: grey [S, S, 1], y: RGB [S, S, 3]} in [0, 1]."""

  def __init__(self, size: int):
    self.size = size

  def map(self, element):
    rgb_uint8 = square_resize(np.asarray(element['image']), self.size)
    return {'x': toy_scenes.luminance(rgb_uint8).astype(np.float32) / 255.0,
            'y': rgb_uint8.astype(np.float32) / 255.0}


def _transforms_with_default_size(default_size: int):
  def make(data_config: ml_collections.ConfigDict, train: bool):
    del train
    return [PhotoToGreyAndColour(int(registry.data_option(data_config, 'image_size', default_size)))]
  return make


STL10_COLORIZATION = registry.DatasetSpec(
    tfds_name='stl10', builder_cls=None, train_split='train', eval_split='test',
    make_transforms=_transforms_with_default_size(96), input_to_rgb=toy_scenes.grey_to_rgb)
IMAGENET_COLORIZATION = registry.DatasetSpec(
    tfds_name='imagenet2012', builder_cls=None, train_split='train', eval_split='validation',
    make_transforms=_transforms_with_default_size(128), input_to_rgb=toy_scenes.grey_to_rgb)
