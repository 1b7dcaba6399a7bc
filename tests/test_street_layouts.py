"""GTA-5 and Cityscapes layouts (street_layouts.py) on a tiny fake GTA-5 folder and hand-made records."""

import ml_collections
import numpy as np
from PIL import Image
import pytest
import scipy.io
import tensorflow_datasets as tfds

from multimodal_jax.data import registry
from multimodal_jax.data import street_layouts as sl

NUM_FRAMES = 6
SOURCE_H, SOURCE_W = 64, 128
TEST_CONFIG = sl.GTA5LayoutsConfig(name='test_tiny', height=32, width=64)

# Cityscapes label id -> train class, written out from labels.py by hand (not from the module's table).
EXPECTED_CLASS = {23: 10, 11: 2, 21: 8, 7: 0, 26: 13, 0: 19, 29: 19, 33: 18, 34: 19}


def source_label_ids(frame: int) -> np.ndarray:
  """[64, 128] label ids; every block starts and ends on even pixels, so a /2 resize is exact."""
  ids = np.zeros((SOURCE_H, SOURCE_W), np.uint8)
  ids[0:16] = 23  # sky
  ids[16:32, :64] = 11  # building
  ids[16:32, 64:] = 21  # vegetation
  ids[32:48] = 7  # road
  ids[32:48, 8 * frame:8 * frame + 16] = 26  # a car, placed by frame number
  ids[48:56] = 0  # unlabeled
  ids[56:60] = 29  # caravan: no train id
  ids[60:64] = 33  # bicycle
  ids[62:64, 124:128] = 34  # not a Cityscapes id
  return ids


def source_image(frame: int) -> np.ndarray:
  return np.random.default_rng(frame).integers(0, 256, (SOURCE_H, SOURCE_W, 3), dtype=np.uint8)


def expected_classes(label_ids: np.ndarray) -> np.ndarray:
  return np.vectorize(EXPECTED_CLASS.__getitem__)(label_ids[::2, ::2]).astype(np.uint8)


def expected_image(image: np.ndarray, height: int, width: int) -> np.ndarray:
  return np.asarray(Image.fromarray(image).resize((width, height), Image.BICUBIC))


def write_manual_dir(root, frames=range(1, NUM_FRAMES + 1)):
  (root / 'images').mkdir(parents=True)
  (root / 'labels').mkdir()
  for frame in frames:
    Image.fromarray(source_image(frame)).save(root / 'images' / f'{frame:05d}.png')
    label = Image.fromarray(source_label_ids(frame), mode='L')
    if frame % 2:  # GTA-5's own labels are palette PNGs: their indices, not their colours, are the ids.
      label = label.convert('P')
      label.putpalette(np.random.default_rng(0).integers(0, 256, 768).astype(np.uint8).tolist())
    label.save(root / 'labels' / f'{frame:05d}.png')
  return root


def build(data_dir, manual_dir, config=TEST_CONFIG):
  builder = sl.GTA5Layouts(data_dir=str(data_dir), file_format='array_record', config=config)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  return builder


def records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def frame_of(record) -> int:
  """Which source frame a stored record came from (its image identifies it)."""
  matches = [f for f in range(1, NUM_FRAMES + 1)
             if np.array_equal(record['image'], expected_image(source_image(f), 32, 64))]
  assert len(matches) == 1, matches
  return matches[0]


@pytest.fixture(scope='module')
def manual_dir(tmp_path_factory):
  return write_manual_dir(tmp_path_factory.mktemp('gta5_manual'))


@pytest.fixture(scope='module')
def gta5_builder(tmp_path_factory, manual_dir):
  return build(tmp_path_factory.mktemp('gta5_data'), manual_dir)


# ---------------------------------------------------------------- the builder


def test_builder_configs_and_stored_features(tmp_path):
  configs = sl.GTA5Layouts.builder_configs
  assert list(configs) == ['default', 'tiny']
  assert sl.GTA5Layouts.name == 'gta5_layouts'
  for name in ('default', 'tiny'):
    features = sl.GTA5Layouts(data_dir=str(tmp_path), config=name).info.features
    assert features['image'].shape == (256, 512, 3) and features['image'].np_dtype == np.uint8
    assert features['label'].shape == (256, 512) and features['label'].np_dtype == np.uint8
  assert configs['default'].max_examples_per_split is None
  assert configs['tiny'].max_examples_per_split == 16


def test_records_are_resized_and_mapped_to_train_classes(gta5_builder):
  split_records = records(gta5_builder, 'train')
  assert split_records
  for record in split_records:
    frame = frame_of(record)  # also checks the image is the bicubic resize of its frame
    label = record['label']
    assert label.shape == (32, 64) and label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected_classes(source_label_ids(frame)))
    # Known pixels: road (id 7) -> 0, car (26) -> 13, unlabeled (0) -> void 19, caravan (29) -> void,
    # bicycle (33) -> 18, an id outside Cityscapes' -> void.
    assert label[20, 63] == 0 and label[20, 4 * frame] == 13 and label[24, 0] == 19
    assert label[28, 0] == 19 and label[30, 0] == 18 and label[31, 63] == 19
    assert record['image'].shape == (32, 64, 3) and record['image'].dtype == np.uint8


def test_split_without_split_mat_is_contiguous_blocks_by_frame(gta5_builder):
  # 6 frames: round(6 * 12403 / 24966) = 3 train, round(6 * 6382 / 24966) = 2 validation, 1 test.
  got = {split: sorted(frame_of(r) for r in records(gta5_builder, split))
         for split in ('train', 'validation', 'test')}
  assert got == {'train': [1, 2, 3], 'validation': [4, 5], 'test': [6]}
  full = sl.fallback_split(list(range(1, 24967)))
  assert {k: len(v) for k, v in full.items()} == {'train': 12403, 'validation': 6382, 'test': 6181}


def test_split_mat_is_used_when_present(tmp_path):
  manual = write_manual_dir(tmp_path / 'manual', frames=range(1, 5))
  # MATLAB column vectors of 1-based frame numbers, as GTA-5's split.mat; frame 9 is absent (skipped).
  scipy.io.savemat(manual / 'split.mat', {'trainIds': np.array([[4], [2]]), 'valIds': np.array([[1], [9]]),
                                          'testIds': np.array([[3]])})
  builder = build(tmp_path / 'data', manual)
  got = {split: sorted(frame_of(r) for r in records(builder, split)) for split in ('train', 'validation', 'test')}
  assert got == {'train': [2, 4], 'validation': [1], 'test': [3]}


def test_missing_manual_dir_is_a_one_line_error_naming_it(tmp_path):
  missing = tmp_path / 'no_such_gta5'
  with pytest.raises(FileNotFoundError) as error:
    build(tmp_path / 'data', missing)
  assert str(missing) in str(error.value) and '\n' not in str(error.value)


def test_empty_labels_folder_is_a_one_line_error_naming_it(tmp_path):
  manual = tmp_path / 'manual'
  (manual / 'images').mkdir(parents=True)
  Image.fromarray(source_image(1)).save(manual / 'images' / '00001.png')
  (manual / 'labels').mkdir()
  with pytest.raises(FileNotFoundError) as error:
    build(tmp_path / 'data', manual)
  assert str(manual / 'labels') in str(error.value) and '\n' not in str(error.value)


# ---------------------------------------------------------------- transforms and registry


def check_layout_example(example, height, width):
  assert example['x'].shape == (height, width, 20) and example['x'].dtype == np.float32
  assert example['y'].shape == (height, width, 3) and example['y'].dtype == np.float32
  assert example['label'].shape == (height, width) and example['label'].dtype == np.int32
  np.testing.assert_array_equal(example['x'].sum(-1), 1.0)
  np.testing.assert_array_equal(example['x'].argmax(-1), example['label'])
  assert 0.0 <= example['y'].min() and example['y'].max() <= 1.0


def test_gta5_transform_outputs(gta5_builder):
  spec = registry.get_dataset('gta5_layouts')
  (transform,) = spec.make_transforms(ml_collections.ConfigDict({'options': {}}), False)
  record = records(gta5_builder, 'validation')[0]
  example = transform.map(record)
  check_layout_example(example, 32, 64)
  np.testing.assert_array_equal(example['label'], record['label'])
  np.testing.assert_allclose(example['y'] * 255.0, record['image'], atol=1e-4)


def test_flip_is_optional_and_flips_x_y_and_label_together(gta5_builder):
  spec = registry.get_dataset('gta5_layouts')
  assert len(spec.make_transforms(ml_collections.ConfigDict({'options': {}}), True)) == 1
  with_flip = ml_collections.ConfigDict({'options': {'flip': True}})
  assert len(spec.make_transforms(with_flip, False)) == 1  # Evaluation never flips.
  to_layout, flip = spec.make_transforms(with_flip, True)
  assert isinstance(flip, sl.RandomHorizontalFlip)
  example = to_layout.map(records(gta5_builder, 'train')[0])
  flipped = 0
  for seed in range(16):
    out = flip.random_map(dict(example), np.random.default_rng(seed))
    was_flipped = np.array_equal(out['label'], example['label'][:, ::-1])
    assert was_flipped != np.array_equal(out['label'], example['label'])  # The layout is not symmetric.
    for key in ('x', 'y'):
      np.testing.assert_array_equal(out[key], example[key][:, ::-1] if was_flipped else example[key])
    flipped += was_flipped
  assert 0 < flipped < 16


def test_tfds_cityscapes_has_the_features_the_transform_reads(tmp_path):
  features = tfds.builder('cityscapes/semantic_segmentation', data_dir=str(tmp_path)).info.features
  assert features['image_left'].shape == (1024, 2048, 3)
  assert features['segmentation_label'].shape == (1024, 2048, 1)
  assert registry.get_dataset('cityscapes_layouts').tfds_name == 'cityscapes/semantic_segmentation'


def test_cityscapes_transform_on_a_hand_made_record():
  label_ids = source_label_ids(2)[..., None]  # [64, 128, 1], as tfds' segmentation_label
  image = source_image(2)
  record = {'image_id': b'bonn_000001_000019', 'image_left': image, 'segmentation_label': label_ids}
  example = sl.CityscapesToLayout(height=32, width=64).map(record)
  check_layout_example(example, 32, 64)
  np.testing.assert_array_equal(example['label'], expected_classes(label_ids[..., 0]))
  np.testing.assert_allclose(example['y'] * 255.0, expected_image(image, 32, 64), atol=1e-4)
  assert example['label'][20, 0] == 0 and example['label'][20, 8] == 13 and example['label'][24, 0] == 19


def test_cityscapes_transform_at_the_paper_size():
  label_ids = np.full((1024, 2048, 1), 26, np.uint8)  # car
  label_ids[:512] = 7  # road
  record = {'image_left': np.full((1024, 2048, 3), 200, np.uint8), 'segmentation_label': label_ids}
  spec = registry.get_dataset('cityscapes_layouts')
  (transform,) = spec.make_transforms(ml_collections.ConfigDict({'options': {}}), False)
  example = transform.map(record)
  check_layout_example(example, 256, 512)
  assert (example['label'][:128] == 0).all() and (example['label'][128:] == 13).all()
  np.testing.assert_allclose(example['y'], 200 / 255.0, atol=1e-6)


def test_registry_entries():
  for name, builder_cls in (('gta5_layouts', sl.GTA5Layouts), ('cityscapes_layouts', None)):
    spec = registry.get_dataset(name)
    assert spec.builder_cls is builder_cls
    assert (spec.train_split, spec.eval_split) == ('train', 'validation')
    assert len(spec.class_names) == 20
    assert spec.class_names[0] == 'road' and spec.class_names[13] == 'car' and spec.class_names[19] == 'void'
    rgb = spec.input_to_rgb(np.eye(20, dtype=np.float32)[np.array([[[0, 13, 19, 10]]])])
    assert rgb.shape == (1, 1, 4, 3)
    np.testing.assert_allclose(rgb[0, 0] * 255.0, [(128, 64, 128), (0, 0, 142), (0, 0, 0), (70, 130, 180)],
                               atol=1e-4)
