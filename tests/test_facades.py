"""pix2pix's CMP Facades (facades.py) on a tiny fake archive of 512x256 photo|label JPEGs."""

import io
import itertools
import math

import ml_collections
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from multimodal_jax.data import facades as fc
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry

# The archive's label colours, written out by hand (not from the module's table): CMP label order.
EXPECTED_PALETTE = [(0, 0, 223), (0, 48, 255), (0, 128, 255), (0, 207, 255), (32, 255, 223), (112, 255, 143),
                    (191, 255, 64), (255, 239, 0), (255, 159, 0), (255, 80, 0), (255, 0, 0), (175, 0, 0)]
# The mock photo is a function of the class: one colour per class, unlike any label colour.
PHOTO_COLOURS = np.array([(40 + 17 * c, 200 - 13 * c, 90 + 11 * (c % 5)) for c in range(12)], np.uint8)
# 4 / 2 / 2 pairs; train's names test numeric order (10.jpg after 3.jpg).
SPLIT_FILES = {'train': ['10', '2', '1', '3'], 'val': ['5', '4'], 'test': ['7', '6']}
SORTED_FILES = {'train': ['1', '2', '3', '10'], 'val': ['4', '5'], 'test': ['6', '7']}
BLOCK = 16  # The mock layouts are 16x16 blocks: JPEG's chroma-subsampled blocks, so flat inside.


def mock_classes(seed: int) -> np.ndarray:
  """A random [256, 256] layout of 16x16 blocks using every class."""
  rng = np.random.default_rng(seed)
  blocks = rng.permutation(np.resize(np.arange(12), (16, 16)).ravel()).reshape(16, 16)
  return np.kron(blocks, np.ones((BLOCK, BLOCK), np.int64)).astype(np.uint8)


def mock_pair(seed: int) -> np.ndarray:
  classes = mock_classes(seed)
  return np.concatenate([PHOTO_COLOURS[classes], np.asarray(EXPECTED_PALETTE, np.uint8)[classes]], axis=1)


def write_archive(root, nested=True, split_files=SPLIT_FILES):
  base = root / 'facades' if nested else root
  for split, names in split_files.items():
    (base / split).mkdir(parents=True)
    for name in names:
      # JPEG quality 75 without chroma subsampling: flat 16x16 blocks come back within a few levels.
      Image.fromarray(mock_pair(int(name))).save(base / split / f'{name}.jpg', quality=75, subsampling=0)
  return root


def build(data_dir, manual_dir, config='default'):
  builder = fc.Facades(data_dir=str(data_dir), file_format='array_record', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def file_name(record) -> str:
  name = record['file_name']
  return name.decode() if isinstance(name, bytes) else name


def jpeg(image: np.ndarray, subsampling: int) -> np.ndarray:
  """A JPEG round trip at quality 75; subsampling 0: 4:4:4 chroma, 2: 4:2:0 (the archive's)."""
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format='JPEG', quality=75, subsampling=subsampling)
  return np.asarray(Image.open(buffer).convert('RGB'))


def window_classes(classes: np.ndarray, radius: int = 2) -> np.ndarray:
  """[H, W, 12]: whether each class occurs within the (2 radius + 1)^2 window around each pixel."""
  onehot = np.pad(np.eye(12, dtype=bool)[classes], ((radius, radius), (radius, radius), (0, 0)))
  h, w = classes.shape
  return np.any([onehot[dy:dy + h, dx:dx + w] for dy in range(2 * radius + 1) for dx in range(2 * radius + 1)],
                axis=0)


@pytest.fixture(scope='module')
def builder(tmp_path_factory):
  manual = write_archive(tmp_path_factory.mktemp('facades_manual'))
  return build(tmp_path_factory.mktemp('facades_data'), manual)


# ---------------------------------------------------------------- palette and class ids


def matlab_jet(m: int) -> np.ndarray:
  """MATLAB's jet(m), written from its definition."""
  n = math.ceil(m / 4)
  u = np.r_[np.arange(1, n + 1) / n, np.ones(n - 1), np.arange(n, 0, -1) / n]
  g = math.ceil(n / 2) - (m % 4 == 1) + np.arange(1, len(u) + 1)
  r, b = g + n, g - n
  g, r, b = g[g <= m], r[r <= m], b[b >= 1]
  jet = np.zeros((m, 3))
  jet[r - 1, 0], jet[g - 1, 1], jet[b - 1, 2] = u[:len(r)], u[:len(g)], u[len(u) - len(b):]
  return jet


def test_palette_is_jet64_rows_5k_plus_1_and_well_separated():
  np.testing.assert_array_equal(fc.PALETTE_RGB, EXPECTED_PALETTE)
  rows = [5 * k + 1 for k in range(1, 13)]
  np.testing.assert_array_equal(np.round(matlab_jet(64)[np.array(rows) - 1] * 255), EXPECTED_PALETTE)
  closest = min(np.linalg.norm(np.subtract(a, b, dtype=float))
                for a, b in itertools.combinations(EXPECTED_PALETTE, 2))
  assert closest > 57  # background (0, 0, 223) and facade (0, 48, 255)
  assert fc.CLASS_NAMES == ('background', 'facade', 'window', 'door', 'cornice', 'sill', 'balcony', 'blind',
                            'deco', 'molding', 'pillar', 'shop')


def test_class_ids_recovered_exactly_from_a_rendering_after_jpeg_and_noise():
  classes = mock_classes(0)
  rendering = fc.render_classes(classes)
  np.testing.assert_array_equal(fc.classes_from_rendering(rendering), classes)
  compressed = jpeg(rendering, subsampling=0)
  assert np.abs(compressed.astype(int) - rendering).max() > 0  # JPEG did move the colours
  np.testing.assert_array_equal(fc.classes_from_rendering(compressed), classes)
  # Any noise of norm < half the closest pair's distance (57.7 / 2) keeps every pixel's class.
  assert fc.CERTAIN_DISTANCE == pytest.approx(57.6888 / 2, abs=1e-3)
  noise = np.random.default_rng(1).integers(-12, 13, rendering.shape)  # norm <= 20.8
  noisy = np.clip(rendering.astype(int) + noise, 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(fc.classes_from_rendering(noisy), classes)


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_subsampled_chroma_blurs_class_boundaries_only(seed):
  classes = mock_classes(seed)
  compressed = jpeg(fc.render_classes(classes), subsampling=2)  # 4:2:0, as the archive's label maps
  got = fc.classes_from_rendering(compressed)
  interior = window_classes(classes).sum(-1) == 1  # 2 pixels or more from a class boundary
  np.testing.assert_array_equal(got[interior], classes[interior])
  # At boundaries blends of two colours are often nearest to a third (purple between red and blue is
  # nearest to the dark blue background); choosing among the certain classes nearby avoids most of it.
  plain_nearest = np.square(compressed[..., None, :].astype(int) - fc.PALETTE_RGB.astype(int)).sum(-1).argmin(-1)
  assert (plain_nearest != classes).mean() > 0.03
  assert (got != classes).mean() < 0.01


def test_class_ids_of_the_measured_archive_colours():
  # Median colours measured inside flat regions of a real archive label map (see the module docstring).
  measured = {(0, 0, 222): 0, (0, 48, 255): 1, (0, 127, 255): 2, (113, 252, 154): 5, (192, 254, 63): 6,
              (249, 239, 17): 7, (174, 0, 1): 11}
  colours = np.array(list(measured), np.uint8)[None]
  np.testing.assert_array_equal(fc.classes_from_rendering(colours)[0], list(measured.values()))


# ---------------------------------------------------------------- the builder


def test_builder_configs_and_stored_features(tmp_path):
  assert fc.Facades.name == 'facades'
  assert list(fc.Facades.builder_configs) == ['default', 'tiny']
  assert fc.Facades.builder_configs['default'].max_examples_per_split is None
  assert fc.Facades.builder_configs['tiny'].max_examples_per_split == 16
  features = fc.Facades(data_dir=str(tmp_path)).info.features
  for key in ('label_rgb', 'image'):
    assert features[key].shape == (256, 256, 3) and features[key].np_dtype == np.uint8
  assert 'file_name' in features


def test_splits_sizes_and_file_order(builder):
  assert set(builder.info.splits) == {'train', 'val', 'test'}
  for split, names in SORTED_FILES.items():
    split_records = records(builder, split)
    assert [file_name(r) for r in split_records] == [f'{n}.jpg' for n in names]
    for record in split_records:
      assert record['image'].shape == record['label_rgb'].shape == (256, 256, 3)
      assert record['image'].dtype == record['label_rgb'].dtype == np.uint8


def test_photo_is_the_left_half_and_the_label_map_the_right(builder):
  for split, names in SORTED_FILES.items():
    for record, name in zip(records(builder, split), names):
      classes = mock_classes(int(name))
      # Right half: the label rendering; its classes come back exactly despite the JPEG.
      np.testing.assert_array_equal(fc.classes_from_rendering(record['label_rgb']), classes)
      # Left half: the photo (JPEG noise only), nowhere near the label colours.
      photo_error = np.abs(record['image'].astype(int) - PHOTO_COLOURS[classes])
      assert photo_error.mean() < 2 and photo_error.max() < 24
      assert np.abs(record['image'].astype(int) - fc.render_classes(classes)).mean() > 50


def test_flat_layout_and_a_limit_per_split(tmp_path):
  manual = write_archive(tmp_path / 'manual', nested=False)
  builder = build(tmp_path / 'data', manual, fc.FacadesConfig(name='test_one', max_examples_per_split=1))
  assert {split: [file_name(r) for r in records(builder, split)] for split in fc.SPLITS} == {
      'train': ['1.jpg'], 'val': ['4.jpg'], 'test': ['6.jpg']}


def test_a_pair_of_another_height_is_resized_per_half():
  classes = mock_classes(3)[::2, ::2]  # 128x128: 8-pixel blocks
  pair = np.concatenate([PHOTO_COLOURS[classes], fc.render_classes(classes)], axis=1)
  photo, label_rgb = fc.split_pair(pair, 'small.jpg')
  assert photo.shape == label_rgb.shape == (256, 256, 3)
  np.testing.assert_array_equal(fc.classes_from_rendering(label_rgb), mock_classes(3))


# ---------------------------------------------------------------- errors


def one_line_error(error_type, tmp_path, manual):
  with pytest.raises(error_type) as error:
    build(tmp_path / 'data', manual)
  message = str(error.value)
  assert '\n' not in message
  return message


def test_missing_manual_dir_is_a_one_line_error_naming_it(tmp_path):
  missing = tmp_path / 'no_such_manual_dir'
  message = one_line_error(FileNotFoundError, tmp_path, missing)
  assert str(missing) in message and 'facades/{train,val,test}/' in message


def test_manual_dir_without_the_split_folders_names_it_and_the_layout(tmp_path):
  manual = tmp_path / 'manual'
  (manual / 'other').mkdir(parents=True)
  message = one_line_error(FileNotFoundError, tmp_path, manual)
  assert str(manual) in message and 'facades/{train,val,test}/' in message and '512x256' in message


@pytest.mark.parametrize('nested', [True, False])
def test_a_missing_split_folder_is_named(tmp_path, nested):
  manual = write_archive(tmp_path / 'manual', nested=nested, split_files={'train': ['1'], 'test': ['2']})
  val = manual / 'facades' / 'val' if nested else manual / 'val'
  assert str(val) in one_line_error(FileNotFoundError, tmp_path, manual)


def test_an_empty_split_folder_is_named(tmp_path):
  manual = write_archive(tmp_path / 'manual', split_files={'train': ['1'], 'val': [], 'test': ['2']})
  assert str(manual / 'facades' / 'val') in one_line_error(FileNotFoundError, tmp_path, manual)


def test_a_pair_that_is_not_2_to_1_is_a_value_error_naming_it(tmp_path):
  manual = write_archive(tmp_path / 'manual', split_files={'train': ['1'], 'val': ['2'], 'test': ['3']})
  square = manual / 'facades' / 'val' / '2.jpg'
  Image.fromarray(mock_pair(2)[:, :256]).save(square)
  message = one_line_error(ValueError, tmp_path, manual)
  assert str(square) in message and '256x256' in message


# ---------------------------------------------------------------- transforms and registry


def options(**values):
  return ml_collections.ConfigDict({'options': values})


def run(transforms, record, rng=None):
  element = record
  for transform in transforms:
    element = transform.random_map(element, rng) if hasattr(transform, 'random_map') else transform.map(element)
  return element


def check_layout_example(example):
  assert example['x'].shape == (256, 256, 12) and example['x'].dtype == np.float32
  assert example['y'].shape == (256, 256, 3) and example['y'].dtype == np.float32
  assert example['label'].shape == (256, 256) and example['label'].dtype == np.int32
  np.testing.assert_array_equal(example['x'].sum(-1), 1.0)
  np.testing.assert_array_equal(example['x'].argmax(-1), example['label'])
  assert 0.0 <= example['y'].min() and example['y'].max() <= 1.0


def test_evaluation_transform_has_no_augmentation(builder):
  spec = registry.get_dataset('facades')
  transforms = spec.make_transforms(options(), False)
  assert len(transforms) == 2
  record = records(builder, 'test')[0]
  example = run(transforms, record)
  check_layout_example(example)
  np.testing.assert_array_equal(example['label'], mock_classes(6))
  np.testing.assert_array_equal(example['y'], record['image'] / np.float32(255.0))


def test_jitter_is_on_for_training_unless_turned_off():
  spec = registry.get_dataset('facades')
  assert isinstance(spec.make_transforms(options(), True)[1], fc.Pix2PixJitter)
  assert len(spec.make_transforms(ml_collections.ConfigDict(), True)) == 3
  assert len(spec.make_transforms(options(jitter=False), True)) == 2


def resized(record):
  return (np.asarray(Image.fromarray(record['image']).resize((286, 286), Image.BICUBIC)),
          np.asarray(Image.fromarray(fc.classes_from_rendering(record['label_rgb'])).resize((286, 286),
                                                                                           Image.NEAREST)))


def find_crop(label_286, label_256):
  """The (top, left, flip) of pix2pix's jitter that turns label_286 into label_256; it must be unique."""
  found = [(top, left, flip) for top in range(31) for left in range(31) for flip in (False, True)
           if np.array_equal(label_286[top:top + 256, left:left + 256][:, ::-1 if flip else 1], label_256)]
  assert len(found) == 1, found
  return found[0]


def test_training_jitter_keeps_layout_and_photo_aligned_and_is_deterministic(builder):
  transforms = registry.get_dataset('facades').make_transforms(options(), True)
  record = records(builder, 'train')[2]
  photo_286, label_286 = resized(record)
  draws = set()
  for seed in range(12):
    example = run(transforms, record, np.random.default_rng(seed))
    check_layout_example(example)
    again = run(transforms, record, np.random.default_rng(seed))
    for key in ('x', 'y', 'label'):
      np.testing.assert_array_equal(again[key], example[key])
    # The layout is the nearest-neighbour 286 resize of the classes, cropped and maybe flipped ...
    top, left, flip = find_crop(label_286, example['label'])
    draws.add((top, left, flip))
    # ... and the photo is the bicubic 286 resize cropped and flipped the same way.
    photo = photo_286[top:top + 256, left:left + 256][:, ::-1 if flip else 1]
    np.testing.assert_array_equal(example['y'], photo / np.float32(255.0))
    # Away from class boundaries the photo shows each pixel's class's colour.
    label = example['label']
    pad = np.pad(label, 2, mode='edge')
    interior = np.all([pad[2 + dy:258 + dy, 2 + dx:258 + dx] == label
                       for dy in range(-2, 3) for dx in range(-2, 3)], axis=0)
    assert interior.mean() > 0.4
    error = np.abs(example['y'] * 255.0 - PHOTO_COLOURS[label])[interior]
    assert error.mean() < 2 and error.max() < 24
  assert len(draws) == 12 and {flip for _, _, flip in draws} == {False, True}


def test_registry_entry():
  spec = registry.get_dataset('facades')
  assert spec.builder_cls is fc.Facades and spec.tfds_name == 'facades'
  assert (spec.train_split, spec.eval_split) == ('train', 'test')
  assert spec.class_names == fc.CLASS_NAMES
  rgb = spec.input_to_rgb(np.eye(12, dtype=np.float32)[np.array([[[0, 1, 11, 5]]])])
  assert rgb.shape == (1, 1, 4, 3)
  np.testing.assert_allclose(rgb[0, 0] * 255.0, [EXPECTED_PALETTE[c] for c in (0, 1, 11, 5)], atol=1e-4)


def test_the_training_pipeline_builds_and_reads_it_from_the_default_manual_dir(tmp_path):
  write_archive(tmp_path / 'data' / 'downloads' / 'manual')
  config = ml_collections.ConfigDict({
      'seed': 0,
      'data': {'name': 'facades', 'builder_config': 'tiny', 'data_dir': str(tmp_path / 'data'),
               'batch_size': 2, 'num_workers': 0, 'options': {}},
  })
  batch = next(pipeline.create_train_iterator(config))
  assert batch['x'].shape == (2, 256, 256, 12) and batch['y'].shape == (2, 256, 256, 3)
  assert batch['label'].shape == (2, 256, 256) and batch['index'].shape == (2,)
  evaluation = pipeline.load_eval_examples(config, 2)
  np.testing.assert_array_equal(evaluation['label'], np.stack([mock_classes(6), mock_classes(7)]))
  np.testing.assert_array_equal(evaluation['index'], [0, 1])
