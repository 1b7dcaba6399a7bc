"""`digits_completion_box`: completion with two exact modes, as cgml_iclr2021 §5.1 / Fig. 5.

§5.1: "we add a small white box to the top part of the ground-truth images at
different rates. At inference, our model was able to converge to both the
modes (Fig. 5) ... as the probability of the alternate mode reaches 0.3."
Same digits and builder as `digits_completion`, but instead of overlapping
tops with random other digits (a diffuse alternative the model rightly
ignores, Fig. 4), a fixed white box `BOX` (rows 3-6, columns 12-19) is
burnt into the target with probability `box_rate` (default 0.4). The random
top-half mask always covers the box, so the input never tells the two modes
apart: every input has exactly two plausible completions, with and without
the box, and a sample's mode is read off the box pixels (`box_present`).

Examples: x = [masked image, mask] [32, 32, 2], y [32, 32, 1], mask, and
`has_box` (int32). Evaluation (train=False) yields the clean y, a fixed mask per
image (seeded by its pixels), and `y_box`, the other mode.

Options (`data.options`): box_rate.
"""

from __future__ import annotations

import grain
import ml_collections
import numpy as np

from multimodal_jax.data import digits_completion as dc
from multimodal_jax.data import registry

# rows [top, bottom), columns [left, right) of the box.
BOX = (3, 7, 12, 20)
DEFAULT_BOX_RATE = 0.4
_MAX_MASK_WIDTH = 24


def add_box(image_HxWx1: np.ndarray) -> np.ndarray:
  """The alternate mode: the image with the white box burnt in (same dtype)."""
  top, bottom, left, right = BOX
  out = image_HxWx1.copy()
  out[top:bottom, left:right] = 255 if out.dtype == np.uint8 else 1.0
  return out


def box_present(images_xHxWx1: np.ndarray, threshold: float = 0.75) -> np.ndarray:
  """Whether images in [0, 1] show the box: mean intensity over the box > threshold."""
  top, bottom, left, right = BOX
  return np.asarray(images_xHxWx1)[..., top:bottom, left:right, 0].mean(axis=(-2, -1)) > threshold


def sample_mask_covering_box(rng: np.random.Generator) -> np.ndarray:
  """A random rectangle in the top half containing BOX: float32 [32, 32, 1], 1 = missing."""
  top, bottom, left, right = BOX
  m_top = int(rng.integers(0, top + 1))
  m_bottom = int(rng.integers(bottom, dc.HALF + 1))
  m_left = int(rng.integers(max(0, right - _MAX_MASK_WIDTH), left + 1))
  m_right = int(rng.integers(right, min(dc.IMAGE_SIZE, m_left + _MAX_MASK_WIDTH) + 1))
  mask_HxWx1 = np.zeros((dc.IMAGE_SIZE, dc.IMAGE_SIZE, 1), np.float32)
  mask_HxWx1[m_top:m_bottom, m_left:m_right] = 1.0
  return mask_HxWx1


def _example(image_HxWx1: np.ndarray, mask_HxWx1: np.ndarray, has_box: bool):
  target = add_box(image_HxWx1) if has_box else image_HxWx1
  return dc.completion_example(target, mask_HxWx1, has_box=has_box)


class BoxAndMask(grain.transforms.RandomMap):
  """Training: the box with probability `box_rate`, then a mask over it (redrawn every epoch)."""

  def __init__(self, box_rate: float):
    self.box_rate = box_rate

  def random_map(self, element, rng: np.random.Generator):
    image_HxWx1 = np.asarray(element['image'], np.uint8)
    has_box = bool(rng.random() < self.box_rate)
    return _example(image_HxWx1, sample_mask_covering_box(rng), has_box)


class FixedMaskBothModes(grain.transforms.Map):
  """Evaluation: clean y, a mask fixed by the image content, and the other mode `y_box`."""

  def map(self, element):
    image_HxWx1 = np.asarray(element['image'], np.uint8)
    mask = sample_mask_covering_box(dc.content_rng(image_HxWx1))
    example = _example(image_HxWx1, mask, has_box=False)
    example['y_box'] = add_box(image_HxWx1).astype(np.float32) / 255.0
    return example


def make_transforms(data_config: ml_collections.ConfigDict, train: bool):
  rate = float(registry.data_option(data_config, 'box_rate', DEFAULT_BOX_RATE))
  if not 0.0 <= rate <= 1.0:
    raise ValueError(f'box_rate must be in [0, 1], got {rate}.')
  return [BoxAndMask(rate)] if train else [FixedMaskBothModes()]


DIGITS_COMPLETION_BOX = registry.DatasetSpec(
    tfds_name='digits_completion',
    builder_cls=dc.DigitsCompletion,
    train_split='train',
    eval_split='test',
    make_transforms=make_transforms,
    input_to_rgb=dc.masked_to_rgb,
)
