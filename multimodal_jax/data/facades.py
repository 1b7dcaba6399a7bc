"""CMP Facades as distributed with pix2pix: labels -> photo at 256x256 (diversity loss paper, §IV-A).

"The CMP Facades dataset used in our experiments is the one preprocessed by
Isola et al. It contains 606 pairs of semantic layouts and real images of
facades, where 400 for training, 100 for validation and 106 for testing ...
There are in total 12 semantic classes" (diversity_loss_yang_liu_cai §IV-A).
That preprocessing is pix2pix's `facades.tar.gz` (Tyleček & Šára's CMP
Facade Database, GCPR 2013, re-rendered by the pix2pix authors). It cannot
be downloaded here; `Facades` reads it from the tfds manual_dir (layout in
`MANUAL_DOWNLOAD_INSTRUCTIONS`):

    import tensorflow_datasets as tfds
    from multimodal_jax.data import facades
    facades.Facades(data_dir=DATA_DIR, file_format='array_record').download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir='~/facades_manual'))

or the training loop builds it on first use, from DATA_DIR/downloads/manual.
Builder configs: `default` (every pair) and `tiny` (the first 16 of each
split, for `:runlocal` smoke runs on a real manual_dir).

The archive: facades/{train,val,test}/<n>.jpg, 400 / 100 / 106 RGB JPEGs of
512x256, each an A|B pair: A, the left half, is the photo; B, the right half,
the label map. pix2pix's AlignedDataset cuts A = AB.crop((0, 0, w/2, h)),
B = the rest, and facades is trained `--direction BtoA` (labels -> photo);
TensorFlow's pix2pix tutorial reads the same files as real_image = left half,
input_image = right half. Splits keep the archive's (train / val / test);
within a split the files are sorted by name, numerically where the names are
numbers (1.jpg, 2.jpg, ..., 10.jpg), and the records keep that order. Each
half is stored as it is (a 2:1 pair of another height is resized to 256x256
per half: the photo PIL bicubic, the label map nearest neighbour); a pair
that is not 2:1 is a ValueError.

Records: {label_rgb: uint8 [256, 256, 3] (the label rendering, B),
image: uint8 [256, 256, 3] (the photo, A), file_name}.

Classes. B is a colour rendering, not class ids. The 12 classes are CMP's
label ids 1..12 in the order of CMP's label_names.txt: background, facade,
window, door, cornice, sill, balcony, blind, deco, molding, pillar, shop
(our ids 0..11). Each id k is drawn in one colour of a jet colormap, evenly
spaced in label order: the colours are MATLAB jet(64) rows 5k + 1 (rows 6,
11, ..., 61; `PALETTE_RGB`). We found no published description of how B was
rendered; this palette is reconstructed, and here is where it comes from:
  * measured on a real archive pair (the example label map docs/facades.jpg
    of github.com/affinelayer/pix2pix-tensorflow, read here from the
    snapshot pt990platina/pix2pix-tensorflow@d420619): median colours inside
    flat regions background (0, 0, 222), facade (0, 48, 255), window
    (0, 127, 255), sill (113, 252, 154), balcony (192, 254, 63), blind
    (249, 239, 17), shop (174, 0, 1); each within JPEG noise (<= 17 per
    channel) of its jet(64) row;
  * the class order and the five colours not in that image (door, cornice,
    deco, molding, pillar) agree with the facades demo of the same
    repository (server/static/index.html), whose colour picker lists jet
    colours in this order under its own names (background, wall, window,
    entrance, window head, window sill, balcony, shutter, trim, cornice,
    column, door; its "door" is CMP's shop, the dark red ground-floor
    fronts): each of those five is within 13 per channel of its jet(64) row.
    Its hand-picked colours are JPEG samples, so they were not used as such.
CMP's own PNGs (not this archive) are paletted with MATLAB jet(12)
(multiples of 85, e.g. facade (0, 0, 255)); those colours are *not* the
archive's, and nearest colour to them would turn facade (0, 48, 255) into
window (0, 85, 255).

Class ids are the nearest palette colour (RGB Euclidean), with one guard
against JPEG. Flat regions are easy: the palette's closest pair (background,
facade) is 57.7 apart and JPEG moves flat colours by a few levels. But the
archive's label maps are JPEGs with 4:2:0 chroma: at class boundaries the
colours blend, and a blend of two classes is often nearest to a third: red
shop on blue facade decodes as purple, nearest to the dark blue background,
so plain nearest colour draws background outlines around shops and windows.
`classes_from_rendering` therefore first takes the pixels within half that
distance (28.8) of a palette colour, whose nearest colour is unambiguous,
then gives every pixel the nearest palette colour among the classes of such
pixels in its 5x5 neighbourhood (among all classes if it has none). On
JPEG'd (4:2:0) mock layouts this labels 0.5-0.8% of the pixels wrongly,
against 4.5-6% for plain nearest colour; all of them at class boundaries,
where the JPEG blurred the edge (and thin structures, 1-2 pixels wide, can
vanish). That is in the data the paper used.

Examples: {x: one-hot layout float32 [256, 256, 12], y: photo float32
[256, 256, 3] in [0, 1], label: class ids int32 [256, 256]}.

Training augmentation is pix2pix's (its defaults load_size 286, crop_size
256, flip): both halves resized to 286x286 (the photo with PIL bicubic as
pix2pix's get_transform; the class ids nearest neighbour, so every pixel
keeps one class), the same random 256x256 crop of both and a random
horizontal flip of both; the random draws come from the rng grain passes.
`config.data.options.jitter` (default True) turns it off. Evaluation: none.
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
from multimodal_jax.data import street_layouts

SIZE = 256  # Each half of an archive pair is 256x256.
LOAD_SIZE = 286  # pix2pix's --load_size: resize before the random --crop_size (SIZE) crop.
SPLITS = ('train', 'val', 'test')
SPLIT_SIZES = {'train': 400, 'val': 100, 'test': 106}  # The archive's; the paper's §IV-A.
IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png')

# CMP label ids 1..12 (label_names.txt order) -> our classes 0..11.
CLASS_NAMES = ('background', 'facade', 'window', 'door', 'cornice', 'sill', 'balcony', 'blind', 'deco',
               'molding', 'pillar', 'shop')
NUM_CLASSES = len(CLASS_NAMES)
# The colour of each class in the archive's label maps: MATLAB jet(64) rows 5k + 1 for CMP label k
# (see the module docstring for how this was established).
# pylint: disable=bad-whitespace
PALETTE_RGB = np.array([
    (  0,   0, 223),  # background  (jet(64) row  6)
    (  0,  48, 255),  # facade      (row 11)
    (  0, 128, 255),  # window      (row 16)
    (  0, 207, 255),  # door        (row 21)
    ( 32, 255, 223),  # cornice     (row 26)
    (112, 255, 143),  # sill        (row 31)
    (191, 255,  64),  # balcony     (row 36)
    (255, 239,   0),  # blind       (row 41)
    (255, 159,   0),  # deco        (row 46)
    (255,  80,   0),  # molding     (row 51)
    (255,   0,   0),  # pillar      (row 56)
    (175,   0,   0),  # shop        (row 61)
], np.uint8)
# pylint: enable=bad-whitespace
PALETTE_Cx3 = PALETTE_RGB.astype(np.float32) / 255.0
# Within half the closest pair's distance (background-facade, 57.7) of a palette colour, a pixel's class is
# certain; the others choose among the certain classes nearby (NEIGHBOURHOOD_RADIUS 2: a 5x5 window).
_PALETTE_DISTANCES_CxC = np.linalg.norm(PALETTE_RGB[:, None].astype(np.float64) - PALETTE_RGB[None], axis=-1)
CERTAIN_DISTANCE = float(np.min(_PALETTE_DISTANCES_CxC[np.triu_indices(NUM_CLASSES, 1)])) / 2
NEIGHBOURHOOD_RADIUS = 2

_NUMBER = re.compile(r'(\d+)')


def _dilate(mask_HxWxC: np.ndarray, radius: int) -> np.ndarray:
  """Boolean max filter over a (2 radius + 1)^2 window, per channel."""
  h, w = mask_HxWxC.shape[:2]
  rows = np.pad(mask_HxWxC, ((radius, radius), (0, 0), (0, 0)))
  out = np.zeros_like(mask_HxWxC)
  for dy in range(2 * radius + 1):
    out |= rows[dy:dy + h]
  cols = np.pad(out, ((0, 0), (radius, radius), (0, 0)))
  out = np.zeros_like(mask_HxWxC)
  for dx in range(2 * radius + 1):
    out |= cols[:, dx:dx + w]
  return out


def classes_from_rendering(label_rgb_HxWx3: np.ndarray) -> np.ndarray:
  """A label rendering (uint8 RGB) -> uint8 class ids [H, W]; see the module docstring.

  Each pixel gets the nearest palette colour among the classes of the
  certain pixels (within CERTAIN_DISTANCE of a palette colour) in its 5x5
  neighbourhood, or among all classes if there are none.
  """
  rgb = np.asarray(label_rgb_HxWx3, np.int32)
  distance2_HxWxC = np.square(rgb[..., None, :] - PALETTE_RGB.astype(np.int32)).sum(-1)
  nearest_HxW = np.argmin(distance2_HxWxC, axis=-1)
  certain_HxW = np.min(distance2_HxWxC, axis=-1) < CERTAIN_DISTANCE**2
  seen_HxWxC = (nearest_HxW[..., None] == np.arange(NUM_CLASSES)) & certain_HxW[..., None]
  nearby_HxWxC = _dilate(seen_HxWxC, NEIGHBOURHOOD_RADIUS)
  nearby_HxWxC |= ~nearby_HxWxC.any(-1, keepdims=True)
  return np.argmin(np.where(nearby_HxWxC, distance2_HxWxC, np.iinfo(np.int32).max), axis=-1).astype(np.uint8)


def render_classes(classes_HxW: np.ndarray) -> np.ndarray:
  """Class ids -> the archive's uint8 RGB rendering of them."""
  return PALETTE_RGB[np.asarray(classes_HxW)]


def split_pair(pair_HxWx3: np.ndarray, path) -> tuple[np.ndarray, np.ndarray]:
  """An archive A|B pair -> (photo, label rendering), each uint8 [256, 256, 3]."""
  pair = np.asarray(pair_HxWx3, np.uint8)
  h, w = pair.shape[:2]
  if w != 2 * h:
    raise ValueError(f'{path} is {w}x{h}; expected a 2:1 photo|label pair (pix2pix\'s facades are 512x256).')
  photo, label_rgb = pair[:, :h], pair[:, h:]
  if h != SIZE:
    photo = street_layouts.resize_image(photo, SIZE, SIZE)
    # Nearest neighbour: a blend of two class colours could be nearest to a third class.
    label_rgb = np.asarray(Image.fromarray(label_rgb).resize((SIZE, SIZE), Image.NEAREST))
  return photo, label_rgb


def layout_example(image_HxWx3: np.ndarray, classes_HxW: np.ndarray) -> dict[str, np.ndarray]:
  """uint8 photo and class ids -> {x: one-hot layout, y: photo in [0, 1], label}."""
  label_HxW = np.asarray(classes_HxW).astype(np.int32)
  return {
      'x': np.eye(NUM_CLASSES, dtype=np.float32)[label_HxW],
      'y': np.asarray(image_HxWx3, np.float32) / 255.0,
      'label': label_HxW,
  }


def _file_order(name: str):
  # Numbers compare as numbers: 2.jpg before 10.jpg.
  return [(0, int(part), '') if part.isdigit() else (1, 0, part) for part in _NUMBER.split(name) if part]


def _split_root(manual_dir: epath.Path) -> epath.Path:
  """The folder holding train/, val/ and test/: manual_dir/facades (the archive's) or manual_dir."""
  for root in (manual_dir / 'facades', manual_dir):
    present = [split for split in SPLITS if (root / split).is_dir()]
    if present:
      if missing := [split for split in SPLITS if split not in present]:
        raise FileNotFoundError(f'Facades: {root / missing[0]} does not exist; {root} needs train/, val/ and '
                                'test/ (see Facades.MANUAL_DOWNLOAD_INSTRUCTIONS).')
      return root
  raise FileNotFoundError(f'Facades: {manual_dir} holds neither facades/{{train,val,test}}/ nor '
                          '{train,val,test}/ with pix2pix\'s 512x256 photo|label JPEGs (see '
                          'Facades.MANUAL_DOWNLOAD_INSTRUCTIONS).')


def _split_files(folder: epath.Path) -> list[epath.Path]:
  files = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                 key=lambda p: _file_order(p.name))
  if not files:
    raise FileNotFoundError(f'Facades: {folder} holds no .jpg photo|label pairs (see '
                            'Facades.MANUAL_DOWNLOAD_INSTRUCTIONS).')
  return files


def _read_rgb(path: epath.Path) -> np.ndarray:
  with path.open('rb') as f:
    return np.asarray(Image.open(f).convert('RGB'))


@dataclasses.dataclass
class FacadesConfig(tfds.core.BuilderConfig):
  """For smoke runs, how many pairs of each split to keep (None: all)."""
  max_examples_per_split: int | None = None


class Facades(registry.LocalBuilder):
  """pix2pix's CMP Facades: 256x256 label renderings and photos, from a manual download."""

  name = 'facades'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download pix2pix's facades.tar.gz
  (http://efrosgans.eecs.berkeley.edu/pix2pix/datasets/facades.tar.gz) and
  extract it into manual_dir, so that manual_dir holds:

    facades/train/1.jpg ...   400 pairs
    facades/val/1.jpg ...     100 pairs
    facades/test/1.jpg ...    106 pairs

  (or train/, val/ and test/ directly in manual_dir). Each file is a 512x256
  RGB JPEG: the photo on the left (A), its label rendering on the right (B).
  manual_dir is DownloadConfig(manual_dir=DIR) (`tfds build --manual_dir DIR`),
  or DATA_DIR/downloads/manual when the training loop builds it on first use.
  """
  BUILDER_CONFIGS = [
      FacadesConfig(name='default', description='256x256, every pair: 400 train / 100 val / 106 test.'),
      FacadesConfig(name='tiny', max_examples_per_split=16,
                    description='256x256, at most 16 pairs per split (smoke runs).'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            # PNG, lossless: the colours of the archive's JPEG are kept as decoded.
            'label_rgb': tfds.features.Image(shape=(SIZE, SIZE, 3)),
            'image': tfds.features.Image(shape=(SIZE, SIZE, 3)),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('label_rgb', 'image'),
        disable_shuffling=True,  # Records keep the file order: record i of a split is its i-th file.
        homepage='https://cmp.felk.cvut.cz/~tylecr1/facade/',
        citation='@inproceedings{Tylecek13, author={Radim Tyle{\\v c}ek and Radim {\\v S}{\\\'a}ra}, '
                 'title={Spatial Pattern Templates for Recognition of Objects with Regular Structure}, '
                 'booktitle={Proc. GCPR}, year={2013}}',
    )

  def _split_generators(self, dl_manager):
    manual_dir = registry.manual_dir(dl_manager, 'Facades', "facades/{train,val,test}/ with pix2pix's 512x256 "
                                     'photo|label JPEGs', 'Facades')
    root = _split_root(manual_dir)
    limit = self.builder_config.max_examples_per_split
    generators = {}
    for split in SPLITS:
      files = _split_files(root / split)
      if limit is None and len(files) != SPLIT_SIZES[split]:
        logging.warning('Facades: %s holds %d pairs; pix2pix\'s archive has %d.', root / split, len(files),
                        SPLIT_SIZES[split])
      generators[split] = self._generate_examples(files[:limit])
    return generators

  def _generate_examples(self, files: list[epath.Path]):
    for path in files:
      photo, label_rgb = split_pair(_read_rgb(path), path)
      yield path.stem, {'label_rgb': label_rgb, 'image': photo, 'file_name': path.name}


# ---------------------------------------------------------------- transforms and registry


class RenderingToClasses(grain.transforms.Map):
  """A facades record -> {image: uint8 photo, label: uint8 class ids}."""

  def map(self, element):
    return {'image': np.asarray(element['image'], np.uint8),
            'label': classes_from_rendering(element['label_rgb'])}


class Pix2PixJitter(grain.transforms.RandomMap):
  """pix2pix's training jitter of {image, label}: resize, the same random crop of both, a random flip.

  The photo is resized with PIL bicubic (pix2pix's get_transform), the class
  ids nearest neighbour; both with PIL's pixel-centre geometry, so they stay
  aligned.
  """

  def __init__(self, load_size: int = LOAD_SIZE, crop_size: int = SIZE):
    if load_size < crop_size:
      raise ValueError(f'load_size {load_size} < crop_size {crop_size}.')
    self.load_size, self.crop_size = load_size, crop_size

  def random_map(self, element, rng: np.random.Generator):
    s, c = self.load_size, self.crop_size
    image = street_layouts.resize_image(element['image'], s, s)
    label = street_layouts.resize_classes(element['label'], s, s)
    top, left = (int(v) for v in rng.integers(0, s - c + 1, size=2))
    image, label = image[top:top + c, left:left + c], label[top:top + c, left:left + c]
    if rng.integers(2):
      image, label = image[:, ::-1], label[:, ::-1]
    return {'image': np.ascontiguousarray(image), 'label': np.ascontiguousarray(label)}


class ClassesToLayout(grain.transforms.Map):
  """{image, label (class ids)} -> {x: one-hot layout, y: photo in [0, 1], label: int32}."""

  def map(self, element):
    return layout_example(element['image'], element['label'])


def make_transforms(data_config: ml_collections.ConfigDict, train: bool):
  if train and bool(registry.data_option(data_config, 'jitter', True)):
    return [RenderingToClasses(), Pix2PixJitter(), ClassesToLayout()]
  return [RenderingToClasses(), ClassesToLayout()]


def layout_to_rgb(x_BxHxWxC: np.ndarray) -> np.ndarray:
  """One-hot layouts -> the archive's label colours, float32 [..., H, W, 3] in [0, 1]."""
  return PALETTE_Cx3[np.argmax(x_BxHxWxC, axis=-1)]


FACADES = registry.DatasetSpec(
    tfds_name='facades',
    builder_cls=Facades,
    train_split='train',
    eval_split='test',
    make_transforms=make_transforms,
    input_to_rgb=layout_to_rgb,
    class_names=CLASS_NAMES,
)
