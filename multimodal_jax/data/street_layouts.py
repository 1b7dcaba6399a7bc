"""The layouts paper's street scenes: GTA-5 and Cityscapes at 256x512 (cimle_semantic_layouts_iccv2019 §4.1-4.2).

Neither can be downloaded here; both need a manual download where the data is.

`gta5_layouts` (Richter et al. 2016, "Playing for Data"; the paper's main
dataset, §4.1): 24966 game frames of 1914x1052 with Cityscapes label ids.
`GTA5Layouts` reads them from the tfds manual_dir (layout in
`MANUAL_DOWNLOAD_INSTRUCTIONS`) and stores them at the paper's 256x512 (§4.2):

    import tensorflow_datasets as tfds
    from multimodal_jax.data import street_layouts
    street_layouts.GTA5Layouts(data_dir=DATA_DIR, file_format='array_record').download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir='~/gta5'))

The training loop also builds it on first use, from tfds' default manual_dir
DATA_DIR/downloads/manual. (`tfds build gta5_layouts --imports
multimodal_jax.data.street_layouts --manual_dir ...` needs apache_beam, which
this venv lacks.) Builder configs: `default` (256x512, every frame) and `tiny`
(256x512, the first 16/8/8 frames of train/validation/test, for
`:runlocal` smoke runs on a real manual_dir).

Splits: "We train our model on 12403 training images and evaluate on the
validation set (6383 images)" (§4.2). GTA-5's official split file `split.mat`
(trainIds / valIds / testIds: 12403 / 6382 / 6181 frame numbers, 1-based) is
used when it is in manual_dir. Without it the frames present, sorted by
number, are cut into contiguous blocks in the official proportions: the first
round(n * 12403 / 24966) are `train`, the next round(n * 6382 / 24966)
`validation`, the rest `test`, which for the full 24966 frames gives the
official sizes. Blocks rather than interleaving, because neighbouring frames
come from the same drive and are near-duplicates.

`cityscapes_layouts` (Cordts et al. 2016; the paper's unimodal comparison,
§4.1): tfds' own `cityscapes/semantic_segmentation` (manual download of
leftImg8bit_trainvaltest.zip and gtFine_trainvaltest.zip; `tfds build
cityscapes/semantic_segmentation --manual_dir ...`). Its records hold
`image_left` uint8 [1024, 2048, 3] and `segmentation_label` uint8
[1024, 2048, 1] of gtFine label ids; the transform resizes and maps them as
below. Train split `train` (2975 images), evaluation `validation` (500).

Both: the image is resized to 256x512 with PIL bicubic (which widens its kernel
by the factor when downsampling, i.e. area-like antialiasing), the label with
nearest neighbour; the whole frame is resized, so GTA-5's 1.82:1 frames are
stretched by 10% horizontally (Cityscapes is 2:1 already). Label ids map to the
19 Cityscapes train classes plus void (class 19, every id whose trainId is 255
or -1, and any value outside 0..33): 20 classes. GTA-5 frames whose image and
label sizes differ (a few do) are fine, as each is resized on its own.

Examples: {x: one-hot layout float32 [256, 512, 20], y: image float32
[256, 512, 3] in [0, 1], label: class ids int32 [256, 512]}.

Training augmentation (`config.data.options.flip`, default False: the paper
mentions none): a random horizontal flip, the same for x, y and label.
"""

from __future__ import annotations

import dataclasses
import re

from absl import logging
from etils import epath
import grain
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

HEIGHT, WIDTH = 256, 512  # §4.2: "we conduct experiments at the 256 × 512 resolution".

# Cityscapes labels (name, label id, train id, colour), copied from
# cityscapesScripts, cityscapesscripts/helpers/labels.py
# (https://github.com/mcordts/cityscapesScripts). Train id 255 / -1: ignored in
# evaluation, our void class.
# pylint: disable=bad-whitespace
_CITYSCAPES_LABELS = (
    ('unlabeled',             0, 255, (  0,   0,   0)),
    ('ego vehicle',           1, 255, (  0,   0,   0)),
    ('rectification border',  2, 255, (  0,   0,   0)),
    ('out of roi',            3, 255, (  0,   0,   0)),
    ('static',                4, 255, (  0,   0,   0)),
    ('dynamic',               5, 255, (111,  74,   0)),
    ('ground',                6, 255, ( 81,   0,  81)),
    ('road',                  7,   0, (128,  64, 128)),
    ('sidewalk',              8,   1, (244,  35, 232)),
    ('parking',               9, 255, (250, 170, 160)),
    ('rail track',           10, 255, (230, 150, 140)),
    ('building',             11,   2, ( 70,  70,  70)),
    ('wall',                 12,   3, (102, 102, 156)),
    ('fence',                13,   4, (190, 153, 153)),
    ('guard rail',           14, 255, (180, 165, 180)),
    ('bridge',               15, 255, (150, 100, 100)),
    ('tunnel',               16, 255, (150, 120,  90)),
    ('pole',                 17,   5, (153, 153, 153)),
    ('polegroup',            18, 255, (153, 153, 153)),
    ('traffic light',        19,   6, (250, 170,  30)),
    ('traffic sign',         20,   7, (220, 220,   0)),
    ('vegetation',           21,   8, (107, 142,  35)),
    ('terrain',              22,   9, (152, 251, 152)),
    ('sky',                  23,  10, ( 70, 130, 180)),
    ('person',               24,  11, (220,  20,  60)),
    ('rider',                25,  12, (255,   0,   0)),
    ('car',                  26,  13, (  0,   0, 142)),
    ('truck',                27,  14, (  0,   0,  70)),
    ('bus',                  28,  15, (  0,  60, 100)),
    ('caravan',              29, 255, (  0,   0,  90)),
    ('trailer',              30, 255, (  0,   0, 110)),
    ('train',                31,  16, (  0,  80, 100)),
    ('motorcycle',           32,  17, (  0,   0, 230)),
    ('bicycle',              33,  18, (119,  11,  32)),
    ('license plate',        -1,  -1, (  0,   0, 142)),
)
# pylint: enable=bad-whitespace

_TRAIN_LABELS = sorted((l for l in _CITYSCAPES_LABELS if 0 <= l[2] < 255), key=lambda l: l[2])
VOID = len(_TRAIN_LABELS)  # 19
NUM_CLASSES = VOID + 1  # 20
CLASS_NAMES = tuple(name for name, _, _, _ in _TRAIN_LABELS) + ('void',)
# Display colours of the 20 classes: Cityscapes' train-class colours, void black.
PALETTE_Cx3 = np.array([colour for _, _, _, colour in _TRAIN_LABELS] + [(0, 0, 0)], np.float32) / 255.0

# Label id (any uint8 value) -> class in 0..19.
ID_TO_CLASS = np.full(256, VOID, np.uint8)
for _, _label_id, _train_id, _ in _CITYSCAPES_LABELS:
  if _label_id >= 0 and 0 <= _train_id < 255:
    ID_TO_CLASS[_label_id] = _train_id

# GTA-5's official split sizes (split.mat); the paper quotes 6383 validation images.
GTA5_SPLIT_SIZES = {'train': 12403, 'validation': 6382, 'test': 6181}
GTA5_NUM_FRAMES = sum(GTA5_SPLIT_SIZES.values())  # 24966
_SPLIT_MAT_KEYS = {'train': 'trainIds', 'validation': 'valIds', 'test': 'testIds'}
_FRAME_FILE = re.compile(r'^(\d+)\.png$')


def label_ids_to_classes(label_ids: np.ndarray) -> np.ndarray:
  """Cityscapes label ids (uint8 or wider) -> uint8 classes 0..19 (19 = void)."""
  ids = np.asarray(label_ids)
  in_range = (ids >= 0) & (ids < 256)
  return np.where(in_range, ID_TO_CLASS[np.where(in_range, ids, 0).astype(np.int64)], VOID).astype(np.uint8)


def resize_image(image_HxWx3: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 RGB -> uint8 [height, width, 3], PIL bicubic (antialiased when downsampling)."""
  image = Image.fromarray(np.asarray(image_HxWx3, np.uint8)).convert('RGB')
  return np.asarray(image.resize((width, height), Image.BICUBIC))


def resize_classes(classes_HxW: np.ndarray, height: int, width: int) -> np.ndarray:
  """uint8 class map -> uint8 [height, width], nearest neighbour (no new classes at edges)."""
  return np.asarray(Image.fromarray(np.asarray(classes_HxW, np.uint8)).resize((width, height), Image.NEAREST))


def layout_example(image_HxWx3: np.ndarray, classes_HxW: np.ndarray) -> dict[str, np.ndarray]:
  """Stored uint8 image and classes -> {x: one-hot layout, y: image in [0, 1], label}."""
  label_HxW = np.asarray(classes_HxW).astype(np.int32)
  return {
      'x': np.eye(NUM_CLASSES, dtype=np.float32)[label_HxW],
      'y': np.asarray(image_HxWx3, np.float32) / 255.0,
      'label': label_HxW,
  }


# ---------------------------------------------------------------- GTA-5


@dataclasses.dataclass
class GTA5LayoutsConfig(tfds.core.BuilderConfig):
  """Stored size and, for smoke runs, how many frames of each split to keep (None: all)."""
  height: int = HEIGHT
  width: int = WIDTH
  max_examples_per_split: int | None = None


def _read_frame_numbers(folder: epath.Path) -> set[int]:
  if not folder.is_dir():
    raise FileNotFoundError(f'GTA-5 folder {folder} does not exist; see GTA5Layouts.MANUAL_DOWNLOAD_INSTRUCTIONS.')
  frames = {int(m.group(1)) for m in map(_FRAME_FILE.match, (p.name for p in folder.iterdir())) if m}
  if not frames:
    raise FileNotFoundError(f'GTA-5 folder {folder} holds no NNNNN.png files; see '
                            'GTA5Layouts.MANUAL_DOWNLOAD_INSTRUCTIONS.')
  return frames


def fallback_split(frames: list[int]) -> dict[str, list[int]]:
  """Sorted frames cut into contiguous train / validation / test blocks in the official proportions."""
  frames, n = sorted(frames), len(frames)
  num_train = round(n * GTA5_SPLIT_SIZES['train'] / GTA5_NUM_FRAMES)
  num_val = round(n * GTA5_SPLIT_SIZES['validation'] / GTA5_NUM_FRAMES)
  return {'train': frames[:num_train], 'validation': frames[num_train:num_train + num_val],
          'test': frames[num_train + num_val:]}


def read_split_mat(path: epath.Path) -> dict[str, list[int]]:
  """GTA-5's split.mat -> {split: sorted 1-based frame numbers}."""
  import scipy.io  # pylint: disable=g-import-not-at-top
  with path.open('rb') as f:
    mat = scipy.io.loadmat(f)
  missing = [key for key in _SPLIT_MAT_KEYS.values() if key not in mat]
  if missing:
    raise KeyError(f'{path} lacks {missing}; expected GTA-5\'s split.mat with {list(_SPLIT_MAT_KEYS.values())}.')
  return {split: sorted(int(i) for i in np.asarray(mat[key]).ravel()) for split, key in _SPLIT_MAT_KEYS.items()}


def _read_label_ids(path: epath.Path) -> np.ndarray:
  with path.open('rb') as f:
    label = Image.open(f)
    label.load()
  # GTA-5 stores palette PNGs: their indices are the label ids ('P'); never convert them to 'L'.
  if label.mode not in ('P', 'L', 'I', 'I;16'):
    raise ValueError(f'{path} is a {label.mode!r} image; expected single-channel Cityscapes label ids.')
  return np.asarray(label)


def _read_image(path: epath.Path) -> np.ndarray:
  with path.open('rb') as f:
    return np.asarray(Image.open(f).convert('RGB'))


class GTA5Layouts(registry.LocalBuilder):
  """GTA-5 frames and their 20-class layouts at 256x512, from a manual download."""

  name = 'gta5_layouts'  # Not tfds' 'gt_a5_layouts'.
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download GTA-5 ("Playing for Data", Richter et al. 2016) from
  https://download.visinf.tu-darmstadt.de/data/from_games/ (the images and
  labels zips, parts 01..10) and extract them so that manual_dir holds:

    images/00001.png ... images/24966.png   RGB frames (1914x1052)
    labels/00001.png ... labels/24966.png   Cityscapes label ids 0..33, 8-bit
                                            single-channel or palette PNGs
    split.mat                               optional: the official split
                                            (trainIds, valIds, testIds)

  Without split.mat the frames are split by number (see street_layouts.py).
  manual_dir is DownloadConfig(manual_dir=DIR) (`tfds build --manual_dir DIR`),
  or DATA_DIR/downloads/manual when the training loop builds it on first use.
  """
  BUILDER_CONFIGS = [
      GTA5LayoutsConfig(name='default', description='256x512, every frame (the paper\'s resolution).'),
      GTA5LayoutsConfig(name='tiny', max_examples_per_split=16,
                        description='256x512, at most 16 frames per split (smoke runs).'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    h, w = self.builder_config.height, self.builder_config.width
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(h, w, 3)),
            # Classes 0..19; zlib: the flat regions of a layout compress ~50x.
            'label': tfds.features.Tensor(shape=(h, w), dtype=np.uint8, encoding='zlib'),
        }),
        supervised_keys=('label', 'image'),
        homepage='https://download.visinf.tu-darmstadt.de/data/from_games/',
        citation='@inproceedings{Richter_2016_ECCV, title={Playing for Data: Ground Truth from Computer '
                 'Games}, author={Richter, Stephan R. and Vineet, Vibhav and Roth, Stefan and Koltun, '
                 'Vladlen}, booktitle={ECCV}, year={2016}}',
    )

  def _split_generators(self, dl_manager):
    manual_dir = registry.manual_dir(dl_manager, 'GTA-5', 'images/ and labels/', 'GTA5Layouts')
    image_frames = _read_frame_numbers(manual_dir / 'images')
    label_frames = _read_frame_numbers(manual_dir / 'labels')
    frames = image_frames & label_frames
    if frames != image_frames | label_frames:
      logging.warning('GTA-5: %d frames lack an image or a label and are skipped.',
                      len(image_frames ^ label_frames))
    split_mat = manual_dir / 'split.mat'
    if split_mat.exists():
      splits = read_split_mat(split_mat)
      for split, numbers in splits.items():
        if missing := [i for i in numbers if i not in frames]:
          logging.warning('GTA-5: %d of the %d %s frames of split.mat are not in %s; skipped.',
                          len(missing), len(numbers), split, manual_dir)
        splits[split] = [i for i in numbers if i in frames]
    else:
      splits = fallback_split(sorted(frames))
    limit = self.builder_config.max_examples_per_split
    return {split: self._generate_examples(manual_dir, numbers[:limit]) for split, numbers in splits.items()}

  def _generate_examples(self, manual_dir: epath.Path, frames: list[int]):
    h, w = self.builder_config.height, self.builder_config.width
    for frame in frames:
      file_name = f'{frame:05d}.png'
      classes = label_ids_to_classes(_read_label_ids(manual_dir / 'labels' / file_name))
      yield file_name[:-4], {
          'image': resize_image(_read_image(manual_dir / 'images' / file_name), h, w),
          'label': resize_classes(classes, h, w),
      }


# ---------------------------------------------------------------- transforms


class StoredLayoutToImage(grain.transforms.Map):
  """A gta5_layouts record {image, label (classes)} -> {x, y, label}."""

  def map(self, element):
    return layout_example(element['image'], element['label'])


class CityscapesToLayout(grain.transforms.Map):
  """A `cityscapes/semantic_segmentation` record -> {x, y, label} at height x width.

  Reads `image_left` uint8 [1024, 2048, 3] and `segmentation_label` uint8
  [1024, 2048, 1] (gtFine label ids).
  """

  def __init__(self, height: int = HEIGHT, width: int = WIDTH):
    self.height, self.width = height, width

  def map(self, element):
    label_ids = np.asarray(element['segmentation_label'])
    if label_ids.ndim == 3:
      label_ids = label_ids[..., 0]
    classes = resize_classes(label_ids_to_classes(label_ids), self.height, self.width)
    return layout_example(resize_image(element['image_left'], self.height, self.width), classes)


class RandomHorizontalFlip(grain.transforms.RandomMap):
  """The same random left-right flip of x, y and label."""

  def random_map(self, element, rng: np.random.Generator):
    if not rng.integers(2):
      return element
    return {k: np.ascontiguousarray(v[:, ::-1]) if k in ('x', 'y', 'label') else v for k, v in element.items()}


def _make_transforms(to_layout: grain.transforms.Map):
  def make_transforms(data_config: ml_collections.ConfigDict, train: bool):
    flip = train and bool(registry.data_option(data_config, 'flip', False))
    return [to_layout, RandomHorizontalFlip()] if flip else [to_layout]
  return make_transforms


def layout_to_rgb(x_BxHxWxC: np.ndarray) -> np.ndarray:
  """One-hot layouts -> their Cityscapes colours, float32 [..., H, W, 3] in [0, 1]."""
  return PALETTE_Cx3[np.argmax(x_BxHxWxC, axis=-1)]


GTA5_LAYOUTS = registry.DatasetSpec(
    tfds_name='gta5_layouts',
    builder_cls=GTA5Layouts,
    train_split='train',
    eval_split='validation',
    make_transforms=_make_transforms(StoredLayoutToImage()),
    input_to_rgb=layout_to_rgb,
    class_names=CLASS_NAMES,
)

CITYSCAPES_LAYOUTS = registry.DatasetSpec(
    tfds_name='cityscapes/semantic_segmentation',
    builder_cls=None,
    train_split='train',
    eval_split='validation',
    make_transforms=_make_transforms(CityscapesToLayout()),
    input_to_rgb=layout_to_rgb,
    class_names=CLASS_NAMES,
)
