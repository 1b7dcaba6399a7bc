"""Pet heads from normals and LFW faces from landmarks (pets_lfw.py) on tiny fake manual_dirs."""

import shutil

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from multimodal_jax.data import pets_lfw as pl
from multimodal_jax.data import registry

# ---------------------------------------------------------------- Oxford-IIIT Pet

# Python's sorted order (upper case first); the even spread puts indices 5 and 10 of 11 in test.
PET_STEMS = ['Abyssinian_1', 'Abyssinian_2', 'Bengal_1', 'beagle_1', 'beagle_2', 'boxer_1', 'pug_1', 'pug_2',
             'pug_3', 'samoyed_1', 'shiba_inu_1']
PET_TEST = {'boxer_1', 'shiba_inu_1'}
PRECROPPED_NORMALS = 'pug_1'  # Its normals are given for the 96x96 head crop.
NORMAL_LEFT, NORMAL_RIGHT, NORMAL_CROP = (200, 100, 230), (60, 150, 220), (128, 30, 200)


def head_box(k):
  """1-based inclusive (xmin, ymin, xmax, ymax) of pet k: 20 x 18 pixels."""
  return 5 + k, 4 + k, 24 + k, 21 + k


def head_colour(k):
  return (10 * k + 5, 200, 250 - 10 * k)


RIM_COLOUR = (0, 0, 0)  # The box's outermost pixels: a crop one pixel short on any side loses some.


def unit(rgb):
  n = np.asarray(rgb, np.float64) / 127.5 - 1.0
  return n / np.linalg.norm(n)


def write_pets(root, stems=PET_STEMS):
  for folder in ('images', 'annotations/xmls', 'normals'):
    (root / folder).mkdir(parents=True)
  for k, stem in enumerate(stems):
    h, w = 36 + k, 40 + 2 * k
    xmin, ymin, xmax, ymax = head_box(k)
    image = np.random.default_rng(k).integers(0, 256, (h, w, 3), dtype=np.uint8)
    image[ymin - 1:ymax, xmin - 1:xmax] = RIM_COLOUR
    image[ymin:ymax - 1, xmin:xmax - 1] = head_colour(k)
    # PNG data under a .jpg name (as some Oxford files are): lossless, so the crop's colour is exact.
    Image.fromarray(image).save(root / 'images' / f'{stem}.jpg', format='PNG')
    (root / 'annotations' / 'xmls' / f'{stem}.xml').write_text(
        f'<annotation><filename>{stem}.jpg</filename><size><width>{w}</width><height>{h}</height>'
        f'<depth>3</depth></size><object><name>cat</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>'
        f'<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>')
    if stem == PRECROPPED_NORMALS:
      normals = np.full((96, 96, 3), NORMAL_CROP, np.uint8)
    else:
      normals = np.full((h, w, 3), (128, 128, 255), np.uint8)
      normals[ymin - 1:ymax, xmin - 1:xmin + 9] = NORMAL_LEFT
      normals[ymin - 1:ymax, xmin + 9:xmax] = NORMAL_RIGHT
    Image.fromarray(normals).save(root / 'normals' / f'{stem}.png')
  # Skipped: a photo without a head box, and a head box without normals.
  Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / 'images' / 'Persian_9.jpg')
  (root / 'annotations' / 'xmls' / 'yorkshire_terrier_1.xml').write_text(
      '<annotation><object><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox>'
      '</object></annotation>')
  Image.fromarray(np.zeros((30, 30, 3), np.uint8)).save(root / 'images' / 'yorkshire_terrier_1.jpg')
  return root


def build(builder_cls, data_dir, manual_dir, config='default'):
  builder = builder_cls(data_dir=str(data_dir), file_format='array_record', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def stem_of(record):
  name = record['file_name']
  return (name.decode() if isinstance(name, bytes) else str(name))[:-4]


@pytest.fixture(scope='module')
def pets_builder(tmp_path_factory):
  manual = write_pets(tmp_path_factory.mktemp('pets_manual'))
  return build(pl.PetsNormals, tmp_path_factory.mktemp('pets_data'), manual)


def test_pets_builder_configs_and_features(tmp_path):
  assert pl.PetsNormals.name == 'pets_normals'
  assert list(pl.PetsNormals.builder_configs) == ['default', 'tiny']
  assert pl.PetsNormals.builder_configs['tiny'].max_examples_per_split == 16
  features = pl.PetsNormals(data_dir=str(tmp_path)).info.features
  assert features['image'].shape == (96, 96, 3) and features['normals'].shape == (96, 96, 3)


def test_pets_split_is_sorted_and_spread():
  got = pl.pets_split(list(reversed(PET_STEMS)))
  assert set(got['test']) == PET_TEST and got['train'] == [s for s in PET_STEMS if s not in PET_TEST]
  full = pl.pets_split([f'{i:05d}' for i in range(3686)])
  assert (len(full['train']), len(full['test'])) == (3000, 686)
  test_positions = np.array([int(s) for s in full['test']])
  assert np.diff(test_positions).max() <= 6  # Spread over all breeds, not a final block.


def test_pets_records_split_crop_and_normals(pets_builder):
  by_split = {split: records(pets_builder, split) for split in ('train', 'test')}
  assert {stem_of(r) for r in by_split['test']} == PET_TEST
  assert {stem_of(r) for r in by_split['train']} == set(PET_STEMS) - PET_TEST
  for record in by_split['train'] + by_split['test']:
    k = PET_STEMS.index(stem_of(record))
    image, normals = record['image'], record['normals']
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert normals.shape == (96, 96, 3) and normals.dtype == np.float16
    # The head box (1-based, inclusive): a one-colour head in a one-pixel rim, resized bicubic; a box one
    # pixel larger brings in noise, one pixel smaller loses rim.
    xmin, ymin, xmax, ymax = head_box(k)
    box = np.zeros((ymax - ymin + 1, xmax - xmin + 1, 3), np.uint8)
    box[1:-1, 1:-1] = head_colour(k)
    np.testing.assert_array_equal(image, np.asarray(Image.fromarray(box).resize((96, 96), Image.BICUBIC)))
    np.testing.assert_array_equal(image[14:-14, 14:-14], np.broadcast_to(head_colour(k), (68, 68, 3)))
    assert (image[:2] < 60).all() and (image[-2:] < 60).all() and (image[:, :2] < 60).all()
    assert (image[:, -2:] < 60).all()
    normals = normals.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1), 1.0, atol=2e-3)
    if stem_of(record) == PRECROPPED_NORMALS:
      np.testing.assert_allclose(normals, np.broadcast_to(unit(NORMAL_CROP), normals.shape), atol=2e-3)
    else:  # Left half NORMAL_LEFT, right half NORMAL_RIGHT; the blend between them is unit length again.
      np.testing.assert_allclose(normals[:, :40], np.broadcast_to(unit(NORMAL_LEFT), (96, 40, 3)), atol=2e-3)
      np.testing.assert_allclose(normals[:, 56:], np.broadcast_to(unit(NORMAL_RIGHT), (96, 40, 3)), atol=2e-3)


def test_pets_transform_and_registry(pets_builder):
  spec = registry.get_dataset('pets_normals')
  assert spec.builder_cls is pl.PetsNormals and (spec.train_split, spec.eval_split) == ('train', 'test')
  (transform,) = spec.make_transforms(ml_collections.ConfigDict({'options': {}}), True)
  record = records(pets_builder, 'test')[0]
  example = transform.map(record)
  assert example['x'].shape == (96, 96, 3) and example['x'].dtype == np.float32
  assert example['y'].shape == (96, 96, 3) and example['y'].dtype == np.float32
  assert -1.0 <= example['x'].min() and example['x'].max() <= 1.0
  np.testing.assert_allclose(example['y'] * 255.0, record['image'], atol=1e-4)
  rgb = spec.input_to_rgb(np.array([[[[-1.0, 0.0, 1.0]]]], np.float32))
  np.testing.assert_allclose(rgb, [[[[0.0, 0.5, 1.0]]]])


def test_crop_head_rejects_normals_of_another_size():
  with pytest.raises(ValueError, match='expected the image'):
    pl.crop_head(np.zeros((40, 50, 3), np.uint8), np.zeros((40, 49, 3), np.uint8), (2, 2, 20, 20))


def test_tfds_oxford_iiit_pet_has_head_boxes_but_no_normals(tmp_path):
  # Why pets_normals reads the archive itself: the boxes are in tfds (zero where there is no xml), the normals not.
  features = tfds.builder('oxford_iiit_pet', data_dir=str(tmp_path)).info.features
  assert 'head_bbox' in features and 'normals' not in features


@pytest.mark.parametrize('missing', ['normals', 'annotations/xmls', 'images'])
def test_pets_missing_folder_is_a_one_line_error_naming_it(tmp_path, missing):
  manual = write_pets(tmp_path / 'manual', stems=PET_STEMS[:2])
  shutil.rmtree(manual / missing)
  with pytest.raises(FileNotFoundError) as error:
    build(pl.PetsNormals, tmp_path / 'data', manual)
  assert str(manual / missing) in str(error.value) and '\n' not in str(error.value)


def test_pets_missing_manual_dir_is_a_one_line_error_naming_it(tmp_path):
  missing = tmp_path / 'no_such_pets'
  with pytest.raises(FileNotFoundError) as error:
    build(pl.PetsNormals, tmp_path / 'data', missing)
  assert str(missing) in str(error.value) and '\n' not in str(error.value)


# ---------------------------------------------------------------- LFW

# name -> number of images; Carol_C has no landmarks (skipped).
LFW_TRAIN = {'Alice_A': 2, 'Bob_B': 1, 'Carol_C': 1}
LFW_TEST = {'Dave_D': 1, 'Eve_E': 3}
NOSE = 30  # A landmark placed at (100, 120) + the image's offset.
# box_scale 1.28 on a landmark box of 100 x 100 gives a 128-pixel square: the crop is the image's pixels, unscaled.
EXACT = pl.LFWLandmarksConfig(name='test_exact', box_scale=1.28)
EXACT_ALL = pl.LFWLandmarksConfig(name='test_exact_all', box_scale=1.28, images_per_person=None)


def lfw_offset(stem):
  j = sum(map(ord, stem)) % 7
  return j * 3 - 9, j * 2 - 6


def lfw_landmarks(stem):
  """68 points spanning exactly [75, 175] x [75, 175], shifted by the image's offset."""
  points = np.random.default_rng(sum(map(ord, stem))).uniform(80, 170, (68, 2))
  points[0], points[1], points[NOSE] = (75, 75), (175, 175), (100, 120)
  return points + lfw_offset(stem)


def lfw_image(stem):
  return np.random.default_rng(len(stem) + sum(map(ord, stem))).integers(0, 256, (250, 250, 3), dtype=np.uint8)


def write_people_file(path, people):
  path.write_text(f'{len(people)}\n' + ''.join(f'{name}\t{num}\n' for name, num in people.items()))


def write_lfw(root):
  (root / pl.LFW_IMAGE_FOLDER).mkdir(parents=True)
  (root / 'landmarks').mkdir()
  write_people_file(root / 'peopleDevTrain.txt', LFW_TRAIN)
  write_people_file(root / 'peopleDevTest.txt', LFW_TEST)
  for name, num in {**LFW_TRAIN, **LFW_TEST}.items():
    (root / pl.LFW_IMAGE_FOLDER / name).mkdir()
    for k in range(1, num + 1):
      stem = f'{name}_{k:04d}'
      Image.fromarray(lfw_image(stem)).save(root / pl.LFW_IMAGE_FOLDER / name / f'{stem}.jpg', format='PNG')
      if name != 'Carol_C':
        (root / 'landmarks' / f'{stem}.txt').write_text(
            ''.join(f'{x:.6f} {y:.6f}\n' for x, y in lfw_landmarks(stem)))
  return root


@pytest.fixture(scope='module')
def lfw_manual(tmp_path_factory):
  return write_lfw(tmp_path_factory.mktemp('lfw_manual'))


@pytest.fixture(scope='module')
def lfw_builder(tmp_path_factory, lfw_manual):
  return build(pl.LFWLandmarks, tmp_path_factory.mktemp('lfw_data'), lfw_manual, EXACT)


def test_lfw_builder_configs_and_features(tmp_path):
  assert pl.LFWLandmarks.name == 'lfw_landmarks'
  configs = pl.LFWLandmarks.builder_configs
  assert list(configs) == ['default', 'all_images', 'tiny']
  assert configs['default'].images_per_person == 1 and configs['all_images'].images_per_person is None
  assert configs['tiny'].max_examples_per_split == 16 and configs['default'].box_scale == 1.3
  features = pl.LFWLandmarks(data_dir=str(tmp_path)).info.features
  assert features['image'].shape == (128, 128, 3) and features['landmarks'].shape == (68, 2)


def test_lfw_splits_one_image_per_person_or_all(lfw_builder, tmp_path, lfw_manual):
  got = {split: sorted(stem_of(r) for r in records(lfw_builder, split)) for split in ('train', 'test')}
  assert got == {'train': ['Alice_A_0001', 'Bob_B_0001'], 'test': ['Dave_D_0001', 'Eve_E_0001']}
  every = build(pl.LFWLandmarks, tmp_path / 'data', lfw_manual, EXACT_ALL)
  got = {split: sorted(stem_of(r) for r in records(every, split)) for split in ('train', 'test')}
  assert got == {'train': ['Alice_A_0001', 'Alice_A_0002', 'Bob_B_0001'],
                 'test': ['Dave_D_0001', 'Eve_E_0001', 'Eve_E_0002', 'Eve_E_0003']}


def test_lfw_crop_and_landmarks_move_together(lfw_builder):
  for record in records(lfw_builder, 'train') + records(lfw_builder, 'test'):
    stem = stem_of(record)
    dx, dy = lfw_offset(stem)
    # The landmark box's centre (125.5 + offset in pixel edges) minus 64: the crop starts at 62 + offset.
    left, top = 62 + dx, 62 + dy
    assert record['image'].shape == (128, 128, 3) and record['image'].dtype == np.uint8
    np.testing.assert_array_equal(record['image'], lfw_image(stem)[top:top + 128, left:left + 128])
    assert record['landmarks'].shape == (68, 2) and record['landmarks'].dtype == np.float32
    np.testing.assert_allclose(record['landmarks'], lfw_landmarks(stem) - (left, top), atol=1e-4)
    np.testing.assert_allclose(record['landmarks'][NOSE], (38.0, 58.0), atol=1e-4)


def test_lfw_transform_heatmap_peak_at_the_landmark(lfw_builder):
  spec = registry.get_dataset('lfw_landmarks')
  assert spec.builder_cls is pl.LFWLandmarks and (spec.train_split, spec.eval_split) == ('train', 'test')
  (transform,) = spec.make_transforms(ml_collections.ConfigDict({'options': {}}), False)
  assert transform.sigma == 2.0
  record = records(lfw_builder, 'test')[0]
  example = transform.map(record)
  assert example['x'].shape == (128, 128, 68) and example['x'].dtype == np.float32
  assert example['y'].shape == (128, 128, 3) and example['y'].dtype == np.float32
  np.testing.assert_allclose(example['y'] * 255.0, record['image'], atol=1e-4)
  nose = example['x'][..., NOSE]
  assert np.unravel_index(np.argmax(nose), nose.shape) == (58, 38)  # (row y, column x)
  np.testing.assert_allclose(nose[58, 38], 1.0, rtol=1e-6)
  np.testing.assert_allclose(nose[58, 40], np.exp(-4 / (2 * 2.0 ** 2)), rtol=1e-5)
  grey = spec.input_to_rgb(example['x'][None])
  assert grey.shape == (1, 128, 128, 3)
  np.testing.assert_allclose(grey[0, 58, 38], 1.0, rtol=1e-6)
  np.testing.assert_array_equal(grey[..., 0], grey[..., 2])


def test_heatmap_sigma_option_sets_the_width():
  spec = registry.get_dataset('lfw_landmarks')
  landmarks = np.array([[10.0, 20.0]], np.float32)
  values = {}
  for sigma in (1.0, 3.0):
    (transform,) = spec.make_transforms(ml_collections.ConfigDict({'options': {'heatmap_sigma': sigma}}), True)
    assert transform.sigma == sigma
    heat = transform.map({'image': np.zeros((32, 32, 3), np.uint8), 'landmarks': landmarks})['x'][..., 0]
    assert heat[20, 10] == pytest.approx(1.0)
    values[sigma] = heat[20, 12]  # two pixels to the right
  assert values[1.0] == pytest.approx(np.exp(-4 / 2)) and values[3.0] == pytest.approx(np.exp(-4 / 18))
  with pytest.raises(ValueError, match='heatmap_sigma'):
    spec.make_transforms(ml_collections.ConfigDict({'options': {'heatmap_sigma': -1.0}}), True)


def test_sigma_zero_is_the_authors_one_hot_map_clipped_into_the_crop():
  heat = pl.render_heatmaps(np.array([[10.4, 20.6], [-3.0, 40.0]]), 32, 32, 0.0)
  assert heat.shape == (32, 32, 2) and heat.sum() == 2.0
  assert heat[21, 10, 0] == 1.0 and heat[31, 0, 1] == 1.0


def test_default_box_is_centred_with_the_margin_and_pads_outside_the_image():
  landmarks = lfw_landmarks('Alice_A_0001')
  _, moved = pl.crop_face(lfw_image('Alice_A_0001'), landmarks)
  low, high = moved.min(axis=0), moved.max(axis=0)
  np.testing.assert_allclose(high - low, 128 / 1.3, atol=1.0)  # 100 pixels of landmarks in 130 -> 128
  np.testing.assert_allclose((low + high) / 2, 63.5, atol=1.0)
  corner = np.array([[0.0, 0.0], [99.0, 99.0]])  # box 129 px from -14: 14 rows and columns of padding
  crop, _ = pl.crop_face(np.full((250, 250, 3), 200, np.uint8), corner, size=129)
  assert (crop[:14] == 0).all() and (crop[:, :14] == 0).all() and (crop[14:, 14:] == 200).all()


def test_read_landmarks_and_people_file_errors(tmp_path):
  bad = tmp_path / 'bad.txt'
  bad.write_text('1 2\n3 4\n')
  with pytest.raises(ValueError, match='68 lines'):
    pl.read_landmarks(bad)
  people = tmp_path / 'peopleDevTrain.txt'
  people.write_text('3\nAlice_A\t2\nBob_B\t1\n')
  with pytest.raises(ValueError, match='announces 3 people but lists 2'):
    pl.read_people_file(people)


@pytest.mark.parametrize('missing', [pl.LFW_IMAGE_FOLDER, 'landmarks', 'peopleDevTest.txt'])
def test_lfw_missing_parts_are_one_line_errors_naming_them(tmp_path, missing):
  manual = write_lfw(tmp_path / 'manual')
  target = manual / missing
  if target.is_dir():
    shutil.rmtree(target)
  else:
    target.unlink()
  with pytest.raises(FileNotFoundError) as error:
    build(pl.LFWLandmarks, tmp_path / 'data', manual, EXACT)
  assert str(target) in str(error.value) and '\n' not in str(error.value)
