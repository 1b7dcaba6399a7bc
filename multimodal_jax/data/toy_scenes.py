"""`toy_scenes`: procedural street scenes whose p(image | layout) is known exactly.

Real datasets cannot tell us whether a multimodal generator covers *all* the
plausible outputs of an input: the true conditional distribution is unknown.
Here it is known by construction. Each example is

  layout  ~ a random semantic map (sky, ground, road, buildings, trees, cars),
  mode    ~ Uniform{0, ..., K-1},
  image   = render_mode(layout, mode) + texture noise in [-0.03, 0.03].

A mode is a (palette, global style) pair: palette p = mode // 4 picks one of
4 colour sets per class (temperate, desert, autumn, winter), style
s = mode % 4 transforms it (day, dusk, night, fog). The default K = 12 uses
palettes 0-2; K = 16 adds the winter palette. The colour of mode m does not
depend on K, so the mode sets are nested.

The palettes were tuned so that, for EVERY class, the colours of any two of the
16 modes differ by at least `MIN_MODE_COLOUR_DISTANCE` (mean absolute
difference over RGB). Hence for any layout the noise-free renders of two modes
differ by at least that much at every pixel, while an image differs from its
own mode's render by at most `NOISE_AMPLITUDE` + half a uint8 step: the mode of
every pixel, and so of every image, is identifiable. Evaluation uses
`render_all_modes` to measure mode recall / precision of generated samples.

Builder config `segments`: every class draws its own mode (K modes per class,
K^6 appearances per layout, the mode stored per class). There the appearance
of one segment says nothing about another's, the premise of the diversity
loss's one noise entry per segment (diversity_loss_yang_liu_cai §III-C); in the
one-mode data a class-wise mix of modes is an image the data never shows (the
reality segmenter scores mixed exact renders 0.74 pixel accuracy against 0.99
for one-mode renders). Mode metrics there are per segment
(`evaluation.metrics.segment_mode_metrics`).

Builder config `one_mode`: K = 1, the image a function of its layout (up to
the texture), what a dataset of one photo per layout is to a network that fits
it. There pix2pix given a noise channel ignores it (the failure
diversity_loss_yang_liu_cai §I cites from Isola et al.), where on the K-modal
data the GAN uses the noise to pick a mode (experiments/results/diversity.md).

Builder config `lighting`: K = 1, and every class also draws its own
luminance offset U[-0.25, 0.25] (stored as `lighting` [6]): variation beyond
the layout with no discrete modes (the photos' lighting of
diversity_loss_yang_liu_cai), so `true_modes` is None there and evaluation
reports no mode metrics. Builder configs `skewed` / `skewed_mild` draw mode k
with p ~ 0.7^k / 0.85^k (rare modes, what rebalancing is for).

Dataset `toy_scenes_conditional` (builder `ToyScenesConditional`, configs
`default` and `tiny`): the set of modes depends on the layout, as in
super-resolution, where "the factors of variation in the plausible output images
depend very much on the input" (cimle_srim_ijcv §4). Every class comes in two
versions with their own class ids, so the layout says which segments are fixed:
  label c in [0, 6)    `fixed_<class>`: always its temperate-day colour (mode 0's);
  label 6 + c          `free_<class>`:  its desert-day or its autumn-day colour
                       (modes 4 and 8), drawn per image, independently per free class.
Each layout draws f ~ Uniform{0, ..., MAX_FREE_CLASSES} and makes f of its
present classes free (all their pixels), so the input has 2^f equally likely
modes: 1, 2, 4, 8 or 16, each for a fifth of the layouts (f is capped by the
number of classes present, which is 4 to 6 at 32x64, so the cap never binds there). `mode` is the index of the
image's mode in the input's own set, `render_conditional_modes` (its bit b: the
colour of the b-th free class in class order). Any two colours a segment can
take differ by at least 2 * MIN_MODE_COLOUR_DISTANCE per class, so the modes of
an input are told apart segment by segment (the `mode_sets` evaluator), and the
average of two modes is no mode. The layouts are the default data's.

Datasets (the DatasetSpec constants at the bottom of this file, in registry.DATASETS):
  toy_scenes:              x = one-hot layout [H, W, 6], y = image in [0, 1].
  toy_scenes_colorization: x = grey image [H, W, 1],     y = image in [0, 1].
  toy_scenes_conditional:  x = one-hot layout [H, W, 12] (fixed and free classes), y = image in [0, 1].
"""

from __future__ import annotations

import dataclasses

import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

CLASS_NAMES = ('sky', 'ground', 'road', 'building', 'tree', 'car')
NUM_CLASSES = len(CLASS_NAMES)
SKY, GROUND, ROAD, BUILDING, TREE, CAR = range(NUM_CLASSES)

MAX_MODES = 16
DEFAULT_NUM_MODES = 12
NUM_STYLES = 4  # day, dusk, night, fog.
STYLE_NAMES = ('day', 'dusk', 'night', 'fog')
PALETTE_NAMES = ('temperate', 'desert', 'autumn', 'winter')

# Uniform luminance texture added to every pixel (same on all channels).
NOISE_AMPLITUDE = 0.03
# Lower bound on the per-class colour distance between any two modes (checked
# by the tests); about 5x the mean |noise| of 0.015.
MIN_MODE_COLOUR_DISTANCE = 0.07
# Half-width of the per-segment luminance offset of the `lighting` data.
SEGMENT_LIGHTING = 0.25

# toy_scenes_conditional: label c is class c of fixed colour, label FREE_CLASS_OFFSET + c its free version.
FREE_CLASS_OFFSET = NUM_CLASSES
CONDITIONAL_CLASS_NAMES = (tuple(f'fixed_{name}' for name in CLASS_NAMES)
                           + tuple(f'free_{name}' for name in CLASS_NAMES))
NUM_CONDITIONAL_CLASSES = len(CONDITIONAL_CLASS_NAMES)
# A layout makes f ~ Uniform{0, ..., MAX_FREE_CLASSES} classes free: 2^f modes, 1 to 16.
MAX_FREE_CLASSES = 4
# The colours as modes of the 16-mode table, all in daylight: a fixed class is temperate (mode 0),
# a free class desert (mode 4) or autumn (mode 8).
FIXED_CLASS_MODE = 0
FREE_CLASS_MODES = (4, 8)

# Daylight colours [palette, class, rgb]. Started from hand-picked colours and
# nudged by a small optimisation to maximise the smallest per-class distance
# between modes after the style transforms below.
# pylint: disable=line-too-long
_PALETTES_PxCx3 = np.array([
    # sky,              ground,             road,               building,           tree,               car
    [(0.43, 0.65, 0.95), (0.26, 0.66, 0.23), (0.29, 0.30, 0.38), (0.74, 0.40, 0.37), (0.24, 0.53, 0.08), (0.74, 0.06, 0.32)],  # temperate
    [(0.50, 0.95, 0.88), (0.87, 0.60, 0.39), (0.15, 0.25, 0.08), (0.93, 0.95, 0.95), (0.49, 0.71, 0.18), (0.15, 0.35, 0.94)],  # desert
    [(0.25, 0.31, 0.66), (0.51, 0.35, 0.21), (0.60, 0.59, 0.47), (0.25, 0.51, 0.54), (0.85, 0.55, 0.27), (0.92, 0.91, 0.17)],  # autumn
    [(0.93, 0.94, 0.95), (0.93, 0.95, 0.95), (0.43, 0.40, 0.69), (0.47, 0.23, 0.26), (0.05, 0.41, 0.20), (0.14, 0.79, 0.34)],  # winter
], dtype=np.float32)
# pylint: enable=line-too-long

# Global styles as per-channel affine maps c -> offset + scale * c.
_STYLE_OFFSET_Sx3 = np.array([
    (0.0, 0.0, 0.0),     # day
    (0.25, 0.05, 0.0),   # dusk: warm, blue suppressed
    (0.04, 0.04, 0.2),   # night: dark with a blue cast
    (0.3, 0.3, 0.3),     # fog: washed out towards light grey
], dtype=np.float32)
_STYLE_SCALE_Sx3 = np.array([
    (1.0, 1.0, 1.0),
    (0.75, 0.75, 0.6),
    (0.5, 0.55, 0.65),
    (0.6, 0.6, 0.6),
], dtype=np.float32)

# Fixed display colours for label maps (Cityscapes-like).
_LABEL_COLOURS_Cx3 = np.array([
    (70, 130, 180),   # sky
    (152, 251, 152),  # ground (terrain)
    (128, 64, 128),   # road
    (70, 70, 70),     # building
    (107, 142, 35),   # tree (vegetation)
    (0, 0, 142),      # car
], dtype=np.float32) / 255.0

# ITU-R BT.601 luma, as PIL's RGB -> 'L' conversion.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _check_num_modes(num_modes: int) -> None:
  if not 1 <= num_modes <= MAX_MODES:
    raise ValueError(f'num_modes must be in [1, {MAX_MODES}], got {num_modes}.')


def mode_colours(num_modes: int = DEFAULT_NUM_MODES) -> np.ndarray:
  """Colour of every class under every mode, float32 [K, NUM_CLASSES, 3].

  Mode m = palette (m // 4) under style (m % 4).
  """
  _check_num_modes(num_modes)
  modes = np.arange(num_modes)
  palette_KxCx3 = _PALETTES_PxCx3[modes // NUM_STYLES]
  offset_Kx1x3 = _STYLE_OFFSET_Sx3[modes % NUM_STYLES][:, None]
  scale_Kx1x3 = _STYLE_SCALE_Sx3[modes % NUM_STYLES][:, None]
  return (offset_Kx1x3 + scale_Kx1x3 * palette_KxCx3).astype(np.float32)


def render_mode(label_HxW: np.ndarray, mode: int,
                num_modes: int = DEFAULT_NUM_MODES) -> np.ndarray:
  """Noise-free render of a layout under one mode: float32 [H, W, 3] in [0, 1].

  This is the centre of the mode; stored images equal it up to texture noise
  (|diff| <= NOISE_AMPLITUDE + 0.5 / 255 per channel).
  """
  if not 0 <= mode < num_modes:
    raise ValueError(f'mode must be in [0, {num_modes}), got {mode}.')
  return mode_colours(num_modes)[mode][np.asarray(label_HxW)]


def render_all_modes(label_HxW: np.ndarray,
                     num_modes: int = DEFAULT_NUM_MODES) -> np.ndarray:
  """Noise-free renders of a layout under all K modes: float32 [K, H, W, 3]."""
  colours_KxCx3 = mode_colours(num_modes)
  return colours_KxCx3[:, np.asarray(label_HxW)]


def label_to_rgb(label: np.ndarray) -> np.ndarray:
  """Fixed colourisation of label maps [..., H, W] -> float32 [..., H, W, 3]."""
  return _LABEL_COLOURS_Cx3[np.asarray(label).astype(np.int64)]


def luminance(image_HxWx3: np.ndarray) -> np.ndarray:
  """uint8 RGB [..., 3] -> uint8 grey [..., 1] (BT.601 luma, rounded)."""
  luma = np.asarray(image_HxWx3, np.float32) @ _LUMA_WEIGHTS
  return np.clip(np.round(luma), 0, 255).astype(np.uint8)[..., None]


def sample_layout(rng: np.random.Generator, height: int,
                  width: int) -> np.ndarray:
  """A random street layout, uint8 [height, width] of class ids.

  Painted back to front: sky over ground split at a random horizon, a road
  band below it, 1-4 buildings standing on the horizon, 1-5 trees (elliptic
  blobs) on the horizon but never on the road, then 0-3 cars on the road. At
  least one building and tree make exact repeats of a layout (and so train /
  test overlap) vanishingly rare. Sizes are fractions of the image size so any
  resolution works.
  """
  label_HxW = np.full((height, width), SKY, np.uint8)
  horizon = int(rng.uniform(0.3, 0.6) * height)
  label_HxW[horizon:] = GROUND

  road_h = max(2, int(round(rng.uniform(0.12, 0.3) * height)))
  road_top = int(rng.integers(min(horizon + 1, height - road_h),
                              height - road_h + 1))
  label_HxW[road_top:road_top + road_h] = ROAD

  for _ in range(rng.integers(1, 5)):
    b_w = max(2, int(rng.uniform(0.08, 0.25) * width))
    b_h = max(1, int(rng.uniform(0.2, 0.95) * horizon))
    x0 = int(rng.integers(-b_w // 2, width))
    label_HxW[horizon - b_h:horizon, max(x0, 0):x0 + b_w] = BUILDING

  yy, xx = np.mgrid[:height, :width]
  for _ in range(rng.integers(1, 6)):
    r_y = rng.uniform(0.08, 0.2) * height
    r_x = r_y * rng.uniform(0.6, 1.3) * max(1.0, width / (2 * height))
    c_y = horizon - r_y * rng.uniform(0.2, 1.0)
    c_x = rng.uniform(0, width)
    blob = ((yy - c_y) / r_y)**2 + ((xx - c_x) / r_x)**2 <= 1.0
    label_HxW[blob & (label_HxW != ROAD)] = TREE

  for _ in range(rng.integers(0, 4)):
    car_h = max(1, int(round(rng.uniform(0.4, 0.8) * road_h)))
    car_w = max(2, int(round(rng.uniform(0.07, 0.14) * width)))
    x0 = int(rng.integers(0, width - car_w + 1))
    y0 = road_top + int(rng.integers(0, road_h - car_h + 1))
    label_HxW[y0:y0 + car_h, x0:x0 + car_w] = CAR
  return label_HxW


def mode_probabilities(num_modes: int, mode_decay: float = 1.0) -> np.ndarray:
  """p(mode = k) proportional to mode_decay^k: [K] (uniform for 1, the default)."""
  _check_num_modes(num_modes)
  if not mode_decay > 0:
    raise ValueError(f'mode_decay must be > 0, got {mode_decay}.')
  p_K = mode_decay**np.arange(num_modes, dtype=np.float64)
  return p_K / p_K.sum()


def render_class_modes(label_HxW: np.ndarray, modes_C: np.ndarray,
                       num_modes: int = DEFAULT_NUM_MODES) -> np.ndarray:
  """Noise-free render with class c in the colour of mode modes_C[c]: float32 [H, W, 3].

  The modes of the `segments` data, where every class draws its own mode;
  render_mode(label, k) is render_class_modes(label, [k] * NUM_CLASSES).
  """
  modes_C = np.asarray(modes_C)
  if modes_C.shape != (NUM_CLASSES,) or modes_C.min() < 0 or modes_C.max() >= num_modes:
    raise ValueError(f'modes_C must be {NUM_CLASSES} modes in [0, {num_modes}); got {modes_C}.')
  return mode_colours(num_modes)[modes_C, np.arange(NUM_CLASSES)][np.asarray(label_HxW)]


def make_example(seed: int, split_code: int, index: int, height: int,
                 width: int, num_modes: int, mode_decay: float = 1.0,
                 independent_classes: bool = False,
                 segment_lighting: float = 0.0) -> dict[str, np.ndarray]:
  """One example, a pure function of (seed, split_code, index).

  Layout, mode and noise come from one numpy stream, so the builder is
  deterministic and independent of generation order or parallelism. Modes are
  uniform, or p(k) ~ mode_decay^k (rare modes, for rebalancing). With
  `independent_classes` every class draws its own mode ('mode' is then
  int32 [NUM_CLASSES]): the appearance of one segment says nothing about
  another's, the premise of diversity_loss_yang_liu_cai §III-C (one noise
  entry per segment, prod_c k_c images). With `segment_lighting` = s > 0 every
  class also draws a luminance offset U[-s, s] ('lighting' [NUM_CLASSES]),
  drawn after everything else so the other variants stay byte-identical.
  """
  rng = np.random.default_rng([seed, split_code, index])
  label_HxW = sample_layout(rng, height, width)
  draws = NUM_CLASSES if independent_classes else None
  if mode_decay == 1.0:  # the uniform draw of the original data, kept byte-identical
    mode = rng.integers(num_modes, size=draws)
  else:
    mode = rng.choice(num_modes, size=draws, p=mode_probabilities(num_modes, mode_decay))
  noise_HxWx1 = rng.uniform(-NOISE_AMPLITUDE, NOISE_AMPLITUDE,
                            (height, width, 1)).astype(np.float32)
  clean = (render_class_modes(label_HxW, mode, num_modes) if independent_classes
           else render_mode(label_HxW, int(mode), num_modes))
  extra = {}
  if segment_lighting > 0:
    lighting_C = rng.uniform(-segment_lighting, segment_lighting, NUM_CLASSES).astype(np.float32)
    clean = clean + lighting_C[label_HxW][..., None]
    extra['lighting'] = lighting_C
  image_HxWx3 = np.clip(np.round((clean + noise_HxWx1) * 255.0), 0, 255).astype(np.uint8)
  return {
      'label': label_HxW,
      'image': image_HxWx3,
      'grey': luminance(image_HxWx3),
      'mode': np.asarray(mode, np.int32),
      # Train and test draw from disjoint streams; ids are unique across both.
      'layout_id': np.int64(split_code * 2**32 + index),
      **extra,
  }


# ---------------------------------------------------------------- toy_scenes_conditional


def free_classes(label_HxW: np.ndarray) -> np.ndarray:
  """The classes c whose free version (label FREE_CLASS_OFFSET + c) the layout holds, ascending: int [f]."""
  present_L = np.bincount(np.asarray(label_HxW).reshape(-1), minlength=NUM_CONDITIONAL_CLASSES)
  if present_L.size > NUM_CONDITIONAL_CLASSES:
    raise ValueError(f'conditional layouts hold class ids in [0, {NUM_CONDITIONAL_CLASSES}); got '
                     f'{present_L.size - 1}.')
  return np.flatnonzero(present_L[FREE_CLASS_OFFSET:])


def _conditional_colours(label_HxW: np.ndarray) -> np.ndarray:
  """The colour of every label id under each of the layout's 2^f modes: float32 [2^f, 12, 3].

  Mode k gives the b-th free class (in class order) FREE_CLASS_MODES[bit b of k]'s colour.
  """
  colours_KxCx3 = mode_colours(MAX_MODES)
  free_F = free_classes(label_HxW)
  modes_M = np.arange(2**len(free_F))
  table_Mx12x3 = np.tile(np.concatenate([colours_KxCx3[FIXED_CLASS_MODE]] * 2)[None], (len(modes_M), 1, 1))
  for b, c in enumerate(free_F):
    choice_M = np.asarray(FREE_CLASS_MODES)[(modes_M >> b) & 1]
    table_Mx12x3[:, FREE_CLASS_OFFSET + c] = colours_KxCx3[choice_M, c]
  return table_Mx12x3


def render_conditional_modes(label_HxW: np.ndarray) -> np.ndarray:
  """Noise-free renders of a conditional layout under each of its 2^f modes: float32 [2^f, H, W, 3].

  Exactly the input's set of modes: fixed classes are one colour in every render, free class b
  (the b-th in class order) takes FREE_CLASS_MODES[bit b of k]'s colour in render k.
  """
  return _conditional_colours(label_HxW)[:, np.asarray(label_HxW)]


def render_conditional_mode(label_HxW: np.ndarray, mode: int) -> np.ndarray:
  """Render `mode` of `render_conditional_modes(label_HxW)`: float32 [H, W, 3]."""
  table_Mx12x3 = _conditional_colours(label_HxW)
  if not 0 <= mode < len(table_Mx12x3):
    raise ValueError(f'mode must be in [0, {len(table_Mx12x3)}) for a layout with '
                     f'{len(free_classes(label_HxW))} free classes; got {mode}.')
  return table_Mx12x3[mode][np.asarray(label_HxW)]


def make_conditional_example(seed: int, split_code: int, index: int, height: int,
                             width: int) -> dict[str, np.ndarray]:
  """One toy_scenes_conditional example, a pure function of (seed, split_code, index).

  From one numpy stream: the default data's layout (the same stream's first
  draws), f ~ Uniform{0, ..., MAX_FREE_CLASSES} capped by the classes present,
  which f of them are free (uniform), the image's mode ~ Uniform{0, ..., 2^f - 1}
  in the input's own set, then the texture.
  """
  rng = np.random.default_rng([seed, split_code, index])
  base_HxW = sample_layout(rng, height, width)
  present_P = np.flatnonzero(np.bincount(base_HxW.reshape(-1), minlength=NUM_CLASSES))
  num_free = min(int(rng.integers(MAX_FREE_CLASSES + 1)), len(present_P))
  free_F = rng.choice(present_P, size=num_free, replace=False)
  label_HxW = (base_HxW + FREE_CLASS_OFFSET * np.isin(base_HxW, free_F)).astype(np.uint8)
  mode = int(rng.integers(2**num_free))
  noise_HxWx1 = rng.uniform(-NOISE_AMPLITUDE, NOISE_AMPLITUDE, (height, width, 1)).astype(np.float32)
  clean = render_conditional_mode(label_HxW, mode)
  image_HxWx3 = np.clip(np.round((clean + noise_HxWx1) * 255.0), 0, 255).astype(np.uint8)
  return {
      'label': label_HxW,
      'image': image_HxWx3,
      'grey': luminance(image_HxWx3),
      'mode': np.int32(mode),
      'layout_id': np.int64(split_code * 2**32 + index),
  }


@dataclasses.dataclass
class ToyScenesConfig(tfds.core.BuilderConfig):
  """Size and content of a toy_scenes variant (the name keys the data dir)."""
  height: int = 32
  width: int = 64
  num_modes: int = DEFAULT_NUM_MODES
  num_train: int = 4096
  num_test: int = 512
  seed: int = 0
  # p(mode = k) ~ mode_decay^k; 1 = uniform. The test split draws the same way.
  mode_decay: float = 1.0
  # Every class draws its own mode (K modes per class, K^|C| appearances per layout).
  independent_classes: bool = False
  # > 0: every class draws a luminance offset U[-s, s] (no discrete modes then).
  segment_lighting: float = 0.0
  # toy_scenes_conditional: fixed and free classes, 2^f modes per layout (num_modes and the
  # options above unused).
  conditional: bool = False


_SPLIT_CODES = {'train': 0, 'test': 1}


class ToyScenes(registry.LocalBuilder):
  """Procedural scenes with an exactly known, K-modal p(image | layout)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  BUILDER_CONFIGS = [
      ToyScenesConfig(name='default', description='32x64, 12 modes.'),
      ToyScenesConfig(name='modes16', num_modes=16,
                      description='32x64, 16 modes.'),
      ToyScenesConfig(name='64x128', height=64, width=128,
                      description='64x128, 12 modes.'),
      # Rare appearances (cimle_semantic_layouts §3.4): mode k with p ~ 0.7^k,
      # from 31% (mode 0) down to 0.6% (mode 11) of the images.
      ToyScenesConfig(name='skewed', mode_decay=0.7,
                      description='32x64, 12 modes with p(k) ~ 0.7^k.'),
      # Milder: p ~ 0.85^k, from 17.5% (mode 0) down to 2.9% (mode 11).
      ToyScenesConfig(name='skewed_mild', mode_decay=0.85,
                      description='32x64, 12 modes with p(k) ~ 0.85^k.'),
      # Each class its own mode (diversity_loss_yang_liu_cai: one noise entry per segment).
      ToyScenesConfig(name='segments', independent_classes=True,
                      description='32x64, 12 modes drawn per class.'),
      # One mode: the image is a function of the layout (+ texture), as a dataset of one photo per
      # layout is to a network that fits it (diversity_loss_yang_liu_cai §IV: Facades, Cityscapes).
      ToyScenesConfig(name='one_mode', num_modes=1,
                      description='32x64, 1 mode: no appearance left to choose.'),
      # One mode, each segment's brightness drawn on its own: variation beyond the layout that the
      # l1 median cannot predict, the paper's lighting (diversity_loss_yang_liu_cai §III-C).
      ToyScenesConfig(name='lighting', num_modes=1, segment_lighting=SEGMENT_LIGHTING,
                      description='32x64, 1 mode, per-segment luminance offset U[-0.25, 0.25].'),
      ToyScenesConfig(name='segments_tiny', independent_classes=True, num_train=64, num_test=16,
                      description='segments with 64/16 examples.'),
      # Same shapes as `default`, for tests and smoke runs (builds in ~1 s).
      ToyScenesConfig(name='tiny', num_train=64, num_test=16,
                      description='32x64, 12 modes, 64/16 examples.'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    _check_num_modes(config.num_modes)
    h, w = config.height, config.width
    lighting = ({'lighting': tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.float32)}
                if config.segment_lighting > 0 else {})
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'label': tfds.features.Tensor(shape=(h, w), dtype=np.uint8),
            'image': tfds.features.Image(shape=(h, w, 3)),
            'grey': tfds.features.Image(shape=(h, w, 1)),
            'mode': (tfds.features.Tensor(shape=(NUM_CLASSES,), dtype=np.int32)
                     if config.independent_classes else tfds.features.Scalar(dtype=np.int32)),
            'layout_id': tfds.features.Scalar(dtype=np.int64),
            **lighting,
        }),
        supervised_keys=('label', 'image'),
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
      if config.conditional:
        yield index, make_conditional_example(config.seed, _SPLIT_CODES[split], index, config.height,
                                              config.width)
        continue
      yield index, make_example(config.seed, _SPLIT_CODES[split], index,
                                config.height, config.width, config.num_modes,
                                config.mode_decay, config.independent_classes,
                                config.segment_lighting)


class ToyScenesConditional(ToyScenes):
  """toy_scenes whose set of modes depends on the layout: fixed and free classes (module docstring)."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}

  BUILDER_CONFIGS = [
      ToyScenesConfig(name='default', conditional=True,
                      description='32x64, 0-4 free classes: 1 to 16 modes per layout.'),
      # Same shapes, for tests and smoke runs.
      ToyScenesConfig(name='tiny', conditional=True, num_train=64, num_test=16,
                      description='32x64, 0-4 free classes, 64/16 examples.'),
  ]


class LayoutToImage(grain.transforms.Map):
  """Record -> {x: one-hot layout, y: image in [0, 1], mode, label}."""

  num_classes = NUM_CLASSES

  def map(self, element):
    label_HxW = np.asarray(element['label']).astype(np.int32)
    return {
        'x': np.eye(self.num_classes, dtype=np.float32)[label_HxW],
        'y': np.asarray(element['image'], np.float32) / 255.0,
        'mode': np.asarray(element['mode'], np.int32),
        'label': label_HxW,
    }


class ConditionalLayoutToImage(LayoutToImage):
  """LayoutToImage with the fixed and free classes of toy_scenes_conditional (x [H, W, 12])."""

  num_classes = NUM_CONDITIONAL_CLASSES


class GreyToImage(grain.transforms.Map):
  """Record -> {x: grey image in [0, 1], y: image in [0, 1], mode}."""

  def map(self, element):
    return {
        'x': np.asarray(element['grey'], np.float32) / 255.0,
        'y': np.asarray(element['image'], np.float32) / 255.0,
        'mode': np.asarray(element['mode'], np.int32),
    }


def _layout_transforms(data_config: ml_collections.ConfigDict, train: bool):
  del data_config, train  # Layouts are plentiful: no augmentation.
  return [LayoutToImage()]


def _conditional_layout_transforms(data_config: ml_collections.ConfigDict, train: bool):
  del data_config, train
  return [ConditionalLayoutToImage()]


def _colorization_transforms(data_config: ml_collections.ConfigDict,
                             train: bool):
  del data_config, train
  return [GreyToImage()]


def one_hot_to_rgb(x_BxHxWxC: np.ndarray) -> np.ndarray:
  return label_to_rgb(np.argmax(x_BxHxWxC, axis=-1))


# Free classes shown half-way to white: the layout's own colours, lighter where the appearance is free.
_CONDITIONAL_LABEL_COLOURS_12x3 = np.concatenate([_LABEL_COLOURS_Cx3, 0.5 * (_LABEL_COLOURS_Cx3 + 1.0)])


def conditional_one_hot_to_rgb(x_BxHxWx12: np.ndarray) -> np.ndarray:
  return _CONDITIONAL_LABEL_COLOURS_12x3[np.argmax(x_BxHxWx12, axis=-1)]


def grey_to_rgb(x_BxHxWx1: np.ndarray) -> np.ndarray:
  return np.repeat(np.asarray(x_BxHxWx1, np.float32), 3, axis=-1)


TOY_SCENES = registry.DatasetSpec(
    tfds_name='toy_scenes',
    builder_cls=ToyScenes,
    train_split='train',
    eval_split='test',
    make_transforms=_layout_transforms,
    input_to_rgb=one_hot_to_rgb,
    class_names=CLASS_NAMES,
    # None on `lighting`: its brightness is continuous, there are no discrete modes.
    true_modes=lambda label_HxW, builder_config: (
        None if builder_config.segment_lighting > 0 else render_all_modes(label_HxW, builder_config.num_modes)),
    # Real images are within NOISE_AMPLITUDE + 0.5/255 ~= 0.032 of their mode at
    # every pixel and two modes are >= MIN_MODE_COLOUR_DISTANCE = 0.07 apart at
    # every pixel, so half that, 0.035, accepts every real image and, by the
    # triangle inequality, no image is within tolerance of two modes.
    mode_tolerance=MIN_MODE_COLOUR_DISTANCE / 2,
    mode_frequencies=lambda builder_config: mode_probabilities(
        builder_config.num_modes, builder_config.mode_decay),
    independent_segments=lambda builder_config: builder_config.independent_classes,
)
TOY_SCENES_COLORIZATION = registry.DatasetSpec(
    tfds_name='toy_scenes',
    builder_cls=ToyScenes,
    train_split='train',
    eval_split='test',
    make_transforms=_colorization_transforms,
    input_to_rgb=grey_to_rgb,
)
TOY_SCENES_CONDITIONAL = registry.DatasetSpec(
    tfds_name='toy_scenes_conditional',
    builder_cls=ToyScenesConditional,
    train_split='train',
    eval_split='test',
    make_transforms=_conditional_layout_transforms,
    input_to_rgb=conditional_one_hot_to_rgb,
    class_names=CONDITIONAL_CLASS_NAMES,
    true_modes=lambda label_HxW, builder_config: render_conditional_modes(label_HxW),
    # Per segment: a real image is within NOISE_AMPLITUDE + 0.5/255 of its mode on every pixel, and
    # two colours of one segment are >= 2 * MIN_MODE_COLOUR_DISTANCE apart.
    mode_tolerance=MIN_MODE_COLOUR_DISTANCE / 2,
    modes_depend_on_input=lambda builder_config: builder_config.conditional,
)
