"""The latent drop-out codes paper's datasets: pet heads from normals, faces from landmarks.

He, Schiele, Fritz, "Diverse conditional image generation by stochastic
regression with latent drop-out codes", ECCV 2018, §4.1. Neither can be
downloaded here; both are read from a tfds manual_dir (layouts in the
builders' `MANUAL_DOWNLOAD_INSTRUCTIONS`) and built like street_layouts':

    import tensorflow_datasets as tfds
    from multimodal_jax.data import pets_lfw
    pets_lfw.PetsNormals(data_dir=DATA_DIR, file_format='array_record').download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir='~/oxford_pets'))

or by the training loop on first use, from DATA_DIR/downloads/manual.

`pets_normals` (Oxford-IIIT Pet, Parkhi et al. 2012; §4.1, §4.2): "3,000
images to train a model and 686 images to test ... We first use bounding
boxes to crop the animals' heads and resize them into 96 × 96 pixels.
Finally, we utilize PixelNet to estimate the normals." Only images with a
head box (annotations/xmls/<stem>.xml, 3686 of them) are used. The head box
(VOC-style, 1-based inclusive pixel indices: the crop is columns xmin-1 ..
xmax-1) is cropped from the image and resized to 96x96 with PIL bicubic.
Normals are not in any archive: the user estimates them (the paper used
PixelNet) and stores them as RGB PNGs, n = rgb / 127.5 - 1, either for the
whole image (same size; the head box is then cropped from them too) or for
the 96x96 head crop (the paper's order; used as they are). A whole-image
normal map is resized with bilinear interpolation of n, then re-normalised
to unit length (interpolating unit vectors shortens them; bicubic would
also overshoot); vectors shorter than 1e-6 stay zero. They are stored as
float16 (rounding error < 5e-4, below the PNG's 1/127.5 step).
Split: the stems with a box, an image and normals, in sorted (Python string)
order; test takes round(n * 686 / 3686) of them, spread evenly through that
order (index i is test when floor((i + 1) t / n) > floor(i t / n)), the rest
train: 3000 / 686 for the full set. Spread, not a final block, because sorted
stems are grouped by breed and a block would hold out the last breeds only.
The authors' code has its own split (split/test.txt in
github.com/SSAW14/Image_Generation_with_Latent_Code: random indices 1..3686
into their pre-cropped images, whose mapping to Oxford file names is not
published), so this one is ours.
Why manual_dir and not tfds' `oxford_iiit_pet`: tfds' 4.0.0 builder does
carry a `head_bbox` (read from the same xmls, normalised, and an all-zero
box for images without an xml; its catalogue page says "In the test split,
the bounding boxes are empty"). The boxes alone would not need this builder;
the normals do: they are a manual step keyed by file stem, and the paper's
3686 images would need both tfds splits filtered on non-empty boxes.
Records: {image: uint8 [96, 96, 3], normals: float16 [96, 96, 3],
file_name}. Examples: {x: normals float32 [96, 96, 3] in [-1, 1] (unit
length), y: image float32 [96, 96, 3] in [0, 1]}.

`lfw_landmarks` (LFW deep-funneled, Huang et al. 2007; §4.1, §4.3): "we
apply the peopleDevTrain/peopleDevTest split containing 4,038 and 1,711
images ... employ the MTCNN face detection model to extract faces ... TCDCN
extracting 68 facial landmarks ... resize the bounding box regions into
128×128 pixels ... input with size 128×128×68". peopleDevTrain.txt /
peopleDevTest.txt list 4038 / 1711 *people* (their first line is that
count); the authors' training script reads 4038 images numbered 1..4038, so
the paper used one image per person. Builder config field
`images_per_person`: 1 (`default`: each listed person's first image,
<Name>_0001.jpg, giving the paper's 4038 / 1711) or None (`all_images`:
every image of the listed people, 9525 / 3708). The landmarks are the
user's (the paper: MTCNN + TCDCN), 68 points in pixels of the 250x250 image
(iBUG-68 order: it fixes which heatmap channel is which landmark); images
without a landmark file are skipped with a warning (a detector miss).
Face box (the paper used MTCNN's box; we derive one from the landmarks so
that no detector is needed): the landmarks' bounding box, centred, made
square with side `box_scale` (1.3) x its longer side, rounded to whole
pixels, cropped (zero padding outside the image) and resized to 128x128 with
PIL bicubic. Landmarks move with it: x' = (x + 0.5 - left) * 128 / side - 0.5
(pixel centres at integers in both frames).
Records: {image: uint8 [128, 128, 3], landmarks: float32 [68, 2] (x, y in
crop pixels), file_name}. Examples: {x: heatmaps float32 [128, 128, 68],
y: the crop float32 [128, 128, 3] in [0, 1]}. Heatmap k is
exp(-|p - l_k|^2 / (2 sigma^2)) over pixel centres p: 1 at the landmark,
sigma = `config.data.options.heatmap_sigma` (default 2.0 pixels). sigma = 0
gives what the authors' released code feeds the network instead: a single 1
at the landmark rounded to the nearest pixel and clipped into the crop.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence
import xml.etree.ElementTree as ET

from absl import logging
from etils import epath
import grain
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

PETS_SIZE = 96  # §4.1: "resize them into 96 × 96 pixels".
PETS_SPLIT_SIZES = {'train': 3000, 'test': 686}  # §4.1.
PETS_NUM_IMAGES = sum(PETS_SPLIT_SIZES.values())  # 3686, the images with a head box.

FACE_SIZE = 128  # §4.1: "resize the bounding box regions into 128×128 pixels".
NUM_LANDMARKS = 68
DEFAULT_BOX_SCALE = 1.3
DEFAULT_HEATMAP_SIGMA = 2.0
LFW_SPLIT_FILES = {'train': 'peopleDevTrain.txt', 'test': 'peopleDevTest.txt'}
LFW_IMAGE_FOLDER = 'lfw-deepfunneled'

_NUMBER = re.compile(r'[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?')


def _require_dir(folder: epath.Path, what: str, builder: str) -> None:
  if not folder.is_dir():
    raise FileNotFoundError(f'{folder} does not exist; expected {what} (see {builder}.MANUAL_DOWNLOAD_INSTRUCTIONS).')


def _read_rgb(path: epath.Path) -> np.ndarray:
  # Some Oxford-IIIT Pet ".jpg" files are PNG, GIF, CMYK or RGBA: PIL reads them by content.
  with path.open('rb') as f:
    return np.asarray(Image.open(f).convert('RGB'))


def resize_rgb(image_HxWx3: np.ndarray, size: int) -> np.ndarray:
  """uint8 RGB -> uint8 [size, size, 3], PIL bicubic (antialiased when downsampling)."""
  image = Image.fromarray(np.asarray(image_HxWx3, np.uint8))
  return np.asarray(image.resize((size, size), Image.BICUBIC))


# ---------------------------------------------------------------- Oxford-IIIT Pet heads and normals


def read_head_box(xml_path: epath.Path) -> tuple[int, int, int, int]:
  """An Oxford-IIIT Pet annotation xml -> the head box (left, top, right, bottom) as 0-based pixel edges."""
  try:
    root = ET.fromstring(xml_path.read_text())
    box = root.find('object/bndbox')
    xmin, ymin, xmax, ymax = (float(box.find(k).text) for k in ('xmin', 'ymin', 'xmax', 'ymax'))
  except (ET.ParseError, AttributeError, TypeError, ValueError):
    raise ValueError(f'{xml_path} is not an Oxford-IIIT Pet annotation; expected <object><bndbox> with '
                     'xmin, ymin, xmax, ymax.') from None
  # 1-based inclusive pixel indices -> the 0-based half-open range of pixels PIL's crop takes.
  return round(xmin) - 1, round(ymin) - 1, round(xmax), round(ymax)


def pets_split(stems: Sequence[str]) -> dict[str, list[str]]:
  """Sorted stems -> {train, test}: round(n * 686 / 3686) test stems spread evenly, the rest train."""
  stems = sorted(stems)
  n = len(stems)
  num_test = n - round(n * PETS_SPLIT_SIZES['train'] / PETS_NUM_IMAGES)
  is_test = [(i + 1) * num_test // n > i * num_test // n for i in range(n)]
  return {'train': [s for s, t in zip(stems, is_test) if not t],
          'test': [s for s, t in zip(stems, is_test) if t]}


def decode_normals(rgb_HxWx3: np.ndarray) -> np.ndarray:
  """RGB-encoded normals (uint8) -> float32 n = rgb / 127.5 - 1."""
  return np.asarray(rgb_HxWx3, np.float32) / 127.5 - 1.0


def unit_length(normals_HxWx3: np.ndarray, eps: float = 1e-6) -> np.ndarray:
  """Each vector divided by its length; vectors shorter than eps become zero."""
  length = np.linalg.norm(normals_HxWx3, axis=-1, keepdims=True)
  return np.where(length > eps, normals_HxWx3 / np.maximum(length, eps), 0.0).astype(np.float32)


def resize_normals(normals_HxWx3: np.ndarray, size: int) -> np.ndarray:
  """float32 normals -> [size, size, 3]: bilinear per component (PIL 'F'), then unit length again."""
  channels = [np.asarray(Image.fromarray(np.ascontiguousarray(normals_HxWx3[..., c], np.float32), mode='F')
                         .resize((size, size), Image.BILINEAR)) for c in range(3)]
  return unit_length(np.stack(channels, axis=-1))


def crop_head(image_HxWx3: np.ndarray, normals_rgb: np.ndarray, box: tuple[int, int, int, int],
              size: int = PETS_SIZE, normals_path: object = '') -> tuple[np.ndarray, np.ndarray]:
  """Image and RGB-encoded normals -> (image uint8, normals float32), both [size, size, 3] head crops.

  `normals_rgb` is either the whole image's normal map (same height and width;
  the box is cropped from it) or the head crop's, already size x size.
  """
  h, w = image_HxWx3.shape[:2]
  left, top, right, bottom = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
  if right <= left or bottom <= top:
    raise ValueError(f'The head box {box} lies outside the {w}x{h} image (of {normals_path}).')
  image = resize_rgb(image_HxWx3[top:bottom, left:right], size)
  normals = decode_normals(normals_rgb)
  if normals.shape[:2] == (h, w):
    normals = resize_normals(normals[top:bottom, left:right], size)
  elif normals.shape[:2] == (size, size):
    normals = unit_length(normals)
  else:
    raise ValueError(f'{normals_path} is {normals.shape[1]}x{normals.shape[0]}; expected the image\'s '
                     f'{w}x{h} or the {size}x{size} head crop.')
  return image, normals


@dataclasses.dataclass
class PetsNormalsConfig(tfds.core.BuilderConfig):
  """Stored size and, for smoke runs, how many examples of each split to keep (None: all)."""
  size: int = PETS_SIZE
  max_examples_per_split: int | None = None


class PetsNormals(registry.LocalBuilder):
  """Oxford-IIIT Pet heads at 96x96 with their surface normals, from a manual download."""

  name = 'pets_normals'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download the Oxford-IIIT Pet dataset (https://www.robots.ox.ac.uk/~vgg/data/pets/:
  images.tar.gz and annotations.tar.gz), extract both into manual_dir, and add
  one normal map per image (the paper estimated them with PixelNet), so that
  manual_dir holds:

    images/<stem>.jpg              the photos (e.g. images/Abyssinian_1.jpg)
    annotations/xmls/<stem>.xml    head boxes (<object><bndbox><xmin>...); only
                                   images with one (3686) are used
    normals/<stem>.png             RGB-encoded normals, n = rgb / 127.5 - 1,
                                   either of the whole image (same size) or of
                                   the 96x96 head crop

  manual_dir is DownloadConfig(manual_dir=DIR) (`tfds build --manual_dir DIR`),
  or DATA_DIR/downloads/manual when the training loop builds it on first use.
  """
  BUILDER_CONFIGS = [
      PetsNormalsConfig(name='default', description='96x96 heads, 3000 train / 686 test (the paper\'s).'),
      PetsNormalsConfig(name='tiny', max_examples_per_split=16,
                        description='96x96 heads, at most 16 per split (smoke runs).'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(s, s, 3)),
            'normals': tfds.features.Tensor(shape=(s, s, 3), dtype=np.float16),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('normals', 'image'),
        homepage='https://www.robots.ox.ac.uk/~vgg/data/pets/',
        citation='@inproceedings{parkhi12a, title={Cats and Dogs}, author={Parkhi, O. M. and Vedaldi, A. and '
                 'Zisserman, A. and Jawahar, C. V.}, booktitle={CVPR}, year={2012}}',
    )

  def _split_generators(self, dl_manager):
    manual_dir = registry.manual_dir(dl_manager, 'Oxford-IIIT Pet', 'images/, annotations/xmls/ and normals/',
                             'PetsNormals')
    xml_dir, image_dir, normal_dir = manual_dir / 'annotations' / 'xmls', manual_dir / 'images', manual_dir / 'normals'
    _require_dir(image_dir, 'the Oxford-IIIT Pet photos <stem>.jpg', 'PetsNormals')
    _require_dir(xml_dir, 'the Oxford-IIIT Pet head boxes <stem>.xml', 'PetsNormals')
    _require_dir(normal_dir, 'one normal map <stem>.png per image', 'PetsNormals')
    xml_stems = {p.stem for p in xml_dir.iterdir() if p.suffix == '.xml'}
    if not xml_stems:
      raise FileNotFoundError(f'{xml_dir} holds no <stem>.xml head boxes; see '
                              'PetsNormals.MANUAL_DOWNLOAD_INSTRUCTIONS.')
    image_stems = {p.stem for p in image_dir.iterdir() if p.suffix == '.jpg'}
    normal_stems = {p.stem for p in normal_dir.iterdir() if p.suffix == '.png'}
    stems = xml_stems & image_stems & normal_stems
    if not stems:
      raise FileNotFoundError(f'None of the {len(xml_stems)} head boxes in {xml_dir} has both {image_dir}/<stem>.jpg '
                              f'and {normal_dir}/<stem>.png.')
    if len(stems) < len(xml_stems):
      logging.warning('Oxford-IIIT Pet: %d head boxes lack an image, %d lack normals; skipped.',
                      len(xml_stems - image_stems), len(xml_stems - normal_stems))
    limit = self.builder_config.max_examples_per_split
    return {split: self._generate_examples(manual_dir, split_stems[:limit])
            for split, split_stems in pets_split(sorted(stems)).items()}

  def _generate_examples(self, manual_dir: epath.Path, stems: list[str]):
    for stem in stems:
      normals_path = manual_dir / 'normals' / f'{stem}.png'
      image, normals = crop_head(_read_rgb(manual_dir / 'images' / f'{stem}.jpg'), _read_rgb(normals_path),
                                 read_head_box(manual_dir / 'annotations' / 'xmls' / f'{stem}.xml'),
                                 self.builder_config.size, normals_path)
      yield stem, {'image': image, 'normals': normals.astype(np.float16), 'file_name': f'{stem}.jpg'}


# ---------------------------------------------------------------- LFW faces and landmarks


def read_people_file(path: epath.Path) -> list[tuple[str, int]]:
  """peopleDevTrain.txt / peopleDevTest.txt -> [(name, number of images)]; the first line is their count."""
  if not path.exists():
    raise FileNotFoundError(f'{path} does not exist; expected LFW\'s split file (see '
                            'LFWLandmarks.MANUAL_DOWNLOAD_INSTRUCTIONS).')
  lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
  try:
    count = int(lines[0][0])
    people = [(name, int(num)) for name, num in lines[1:]]
  except (IndexError, ValueError):
    raise ValueError(f'{path} is not an LFW people file; expected a count, then lines "Name<TAB>num_images".') from None
  if count != len(people):
    raise ValueError(f'{path} announces {count} people but lists {len(people)}.')
  return people


def read_landmarks(path: epath.Path) -> np.ndarray:
  """68 lines "x y" (pixels of the 250x250 image) -> float32 [68, 2]."""
  numbers = [float(v) for v in _NUMBER.findall(path.read_text())]
  if len(numbers) != 2 * NUM_LANDMARKS:
    raise ValueError(f'{path} holds {len(numbers)} numbers; expected {NUM_LANDMARKS} lines "x y".')
  return np.asarray(numbers, np.float32).reshape(NUM_LANDMARKS, 2)


def face_box(landmarks_Kx2: np.ndarray, box_scale: float = DEFAULT_BOX_SCALE) -> tuple[int, int, int]:
  """The landmarks' bounding box, centred, squared and scaled -> (left, top, side) in whole pixels.

  Pixel edges: the box covers pixels left .. left + side - 1; a landmark at
  x (pixel centres at integers) sits at edge coordinate x + 0.5.
  """
  low, high = landmarks_Kx2.min(axis=0), landmarks_Kx2.max(axis=0)
  side = max(1, int(np.floor(box_scale * float((high - low).max()) + 0.5)))
  centre_x, centre_y = (low + high) / 2 + 0.5
  return int(np.floor(centre_x - side / 2 + 0.5)), int(np.floor(centre_y - side / 2 + 0.5)), side


def crop_face(image_HxWx3: np.ndarray, landmarks_Kx2: np.ndarray, size: int = FACE_SIZE,
              box_scale: float = DEFAULT_BOX_SCALE) -> tuple[np.ndarray, np.ndarray]:
  """Image and landmarks -> (the face crop uint8 [size, size, 3], landmarks float32 [K, 2] in its pixels)."""
  left, top, side = face_box(landmarks_Kx2, box_scale)
  crop = Image.fromarray(np.asarray(image_HxWx3, np.uint8)).crop((left, top, left + side, top + side))
  scale = size / side
  landmarks = (landmarks_Kx2 + 0.5 - np.array([left, top], np.float32)) * scale - 0.5
  return np.asarray(crop.resize((size, size), Image.BICUBIC)), landmarks.astype(np.float32)


def render_heatmaps(landmarks_Kx2: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
  """Landmarks (x, y) -> float32 [height, width, K] of exp(-d^2 / (2 sigma^2)), 1 at the landmark.

  sigma = 0: a single 1 at each landmark rounded and clipped into the image,
  as the authors' released code feeds it.
  """
  landmarks = np.asarray(landmarks_Kx2, np.float64)
  if sigma == 0:
    heat_KxHxW = np.zeros((len(landmarks), height, width), np.float32)
    cols = np.clip(np.round(landmarks[:, 0]), 0, width - 1).astype(int)
    rows = np.clip(np.round(landmarks[:, 1]), 0, height - 1).astype(int)
    heat_KxHxW[np.arange(len(landmarks)), rows, cols] = 1.0
    return heat_KxHxW.transpose(1, 2, 0)
  # Separable: exp(-(dx^2 + dy^2) / 2s^2) = exp(-dx^2 / 2s^2) exp(-dy^2 / 2s^2).
  along_x_KxW = np.exp(-(np.arange(width)[None] - landmarks[:, :1]) ** 2 / (2 * sigma ** 2))
  along_y_KxH = np.exp(-(np.arange(height)[None] - landmarks[:, 1:]) ** 2 / (2 * sigma ** 2))
  return np.einsum('kh,kw->hwk', along_y_KxH, along_x_KxW).astype(np.float32)


@dataclasses.dataclass
class LFWLandmarksConfig(tfds.core.BuilderConfig):
  """Stored size, face box margin, images per listed person (None: all) and a per-split limit (None: all)."""
  size: int = FACE_SIZE
  box_scale: float = DEFAULT_BOX_SCALE
  images_per_person: int | None = 1
  max_examples_per_split: int | None = None


class LFWLandmarks(registry.LocalBuilder):
  """LFW deep-funneled faces at 128x128 with 68 landmarks each, from a manual download."""

  name = 'lfw_landmarks'
  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'Initial release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = """\
  Download LFW deep-funneled (lfw-deepfunneled.tgz) and the development split
  files peopleDevTrain.txt and peopleDevTest.txt (http://vis-www.cs.umass.edu/lfw/),
  extract the archive into manual_dir, and add 68 facial landmarks per image
  (the paper used MTCNN + TCDCN), so that manual_dir holds:

    lfw-deepfunneled/<Name>/<Name>_0001.jpg   the 250x250 photos
    peopleDevTrain.txt, peopleDevTest.txt     a count, then "Name<TAB>num_images"
    landmarks/<Name>_0001.txt                 68 lines "x y", pixels of the
                                              250x250 image (iBUG-68 order);
                                              images without one are skipped

  manual_dir is DownloadConfig(manual_dir=DIR) (`tfds build --manual_dir DIR`),
  or DATA_DIR/downloads/manual when the training loop builds it on first use.
  """
  BUILDER_CONFIGS = [
      LFWLandmarksConfig(name='default', description='128x128 faces, each listed person\'s first image: '
                         '4038 train / 1711 test (the paper\'s).'),
      LFWLandmarksConfig(name='all_images', images_per_person=None,
                         description='128x128 faces, every image of the listed people (9525 / 3708).'),
      LFWLandmarksConfig(name='tiny', max_examples_per_split=16,
                         description='128x128 faces, at most 16 per split (smoke runs).'),
  ]

  def _info(self) -> tfds.core.DatasetInfo:
    s = self.builder_config.size
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=(s, s, 3)),
            'landmarks': tfds.features.Tensor(shape=(NUM_LANDMARKS, 2), dtype=np.float32),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('landmarks', 'image'),
        homepage='http://vis-www.cs.umass.edu/lfw/',
        citation='@techreport{LFWTech, title={Labeled Faces in the Wild: A Database for Studying Face '
                 'Recognition in Unconstrained Environments}, author={Huang, Gary B. and Ramesh, Manu and '
                 'Berg, Tamara and Learned-Miller, Erik}, institution={University of Massachusetts, Amherst}, '
                 'number={07-49}, year={2007}}',
    )

  def _split_generators(self, dl_manager):
    manual_dir = registry.manual_dir(dl_manager, 'LFW', f'{LFW_IMAGE_FOLDER}/, landmarks/ and the peopleDev*.txt files',
                             'LFWLandmarks')
    image_dir, landmark_dir = manual_dir / LFW_IMAGE_FOLDER, manual_dir / 'landmarks'
    _require_dir(image_dir, 'LFW deep-funneled photos <Name>/<Name>_0001.jpg', 'LFWLandmarks')
    _require_dir(landmark_dir, 'one landmark file <Name>_0001.txt per image', 'LFWLandmarks')
    config = self.builder_config
    generators = {}
    for split, file_name in LFW_SPLIT_FILES.items():
      stems, unmarked = [], 0
      for name, num_images in read_people_file(manual_dir / file_name):
        for k in range(1, min(num_images, config.images_per_person or num_images) + 1):
          stem = f'{name}_{k:04d}'
          if not (image_dir / name / f'{stem}.jpg').exists():
            raise FileNotFoundError(f'{image_dir / name / stem}.jpg, listed in {file_name}, does not exist.')
          if (landmark_dir / f'{stem}.txt').exists():
            stems.append(stem)
          else:
            unmarked += 1
      if not stems:
        raise FileNotFoundError(f'{landmark_dir} holds no <Name>_NNNN.txt for the images of {file_name}.')
      if unmarked:
        logging.warning('LFW %s: %d of %d images have no landmark file in %s; skipped.',
                        split, unmarked, unmarked + len(stems), landmark_dir)
      generators[split] = self._generate_examples(manual_dir, stems[:config.max_examples_per_split])
    return generators

  def _generate_examples(self, manual_dir: epath.Path, stems: list[str]):
    config = self.builder_config
    for stem in stems:
      name = stem[:-5]
      image = _read_rgb(manual_dir / LFW_IMAGE_FOLDER / name / f'{stem}.jpg')
      landmarks = read_landmarks(manual_dir / 'landmarks' / f'{stem}.txt')
      crop, crop_landmarks = crop_face(image, landmarks, config.size, config.box_scale)
      yield stem, {'image': crop, 'landmarks': crop_landmarks, 'file_name': f'{stem}.jpg'}


# ---------------------------------------------------------------- transforms and registry


class StoredNormalsToImage(grain.transforms.Map):
  """A pets_normals record -> {x: normals float32 in [-1, 1], y: image float32 in [0, 1]}."""

  def map(self, element):
    return {'x': np.asarray(element['normals'], np.float32),
            'y': np.asarray(element['image'], np.float32) / 255.0}


class StoredLandmarksToImage(grain.transforms.Map):
  """A lfw_landmarks record -> {x: heatmaps float32 [S, S, 68], y: face float32 [S, S, 3] in [0, 1]}."""

  def __init__(self, sigma: float = DEFAULT_HEATMAP_SIGMA):
    self.sigma = sigma

  def map(self, element):
    image = np.asarray(element['image'])
    return {'x': render_heatmaps(element['landmarks'], image.shape[0], image.shape[1], self.sigma),
            'y': image.astype(np.float32) / 255.0}


def _pets_transforms(data_config: ml_collections.ConfigDict, train: bool):
  del data_config, train
  return [StoredNormalsToImage()]


def _lfw_transforms(data_config: ml_collections.ConfigDict, train: bool):
  del train
  sigma = float(registry.data_option(data_config, 'heatmap_sigma', DEFAULT_HEATMAP_SIGMA))
  if not sigma >= 0:
    raise ValueError(f'config.data.options.heatmap_sigma={sigma!r} is invalid: need >= 0 pixels '
                     '(0: one-hot landmark maps).')
  return [StoredLandmarksToImage(sigma)]


def normals_to_rgb(x_BxHxWx3: np.ndarray) -> np.ndarray:
  """Normals in [-1, 1] -> (n + 1) / 2, the usual normal-map colours."""
  return np.clip((np.asarray(x_BxHxWx3, np.float32) + 1.0) / 2.0, 0.0, 1.0)


def heatmaps_to_rgb(x_BxHxWxK: np.ndarray) -> np.ndarray:
  """Landmark heatmaps -> their maximum over landmarks, as grey RGB."""
  peak = np.clip(np.max(np.asarray(x_BxHxWxK, np.float32), axis=-1, keepdims=True), 0.0, 1.0)
  return np.repeat(peak, 3, axis=-1)


PETS_NORMALS = registry.DatasetSpec(
    tfds_name='pets_normals',
    builder_cls=PetsNormals,
    train_split='train',
    eval_split='test',
    make_transforms=_pets_transforms,
    input_to_rgb=normals_to_rgb,
)

LFW_LANDMARKS = registry.DatasetSpec(
    tfds_name='lfw_landmarks',
    builder_cls=LFWLandmarks,
    train_split='train',
    eval_split='test',
    make_transforms=_lfw_transforms,
    input_to_rgb=heatmaps_to_rgb,
)
