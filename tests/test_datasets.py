"""The offline datasets: builders, exact toy_scenes modes, SR pairs, digit corruption."""

import itertools
import subprocess
import sys
import textwrap

import grain
import ml_collections
import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from multimodal_jax.data import digits_completion as dc
from multimodal_jax.data import local_photos_sr as sr
from multimodal_jax.data import registry
from multimodal_jax.data import toy_scenes as ts

# An image differs from its mode's render by the texture plus uint8 rounding.
NOISE_BOUND = ts.NOISE_AMPLITUDE + 0.5 / 255 + 1e-6

TOY_TINY = ts.ToyScenesConfig(name='test_tiny', height=16, width=32,
                              num_train=24, num_test=8)
CONDITIONAL_TINY = ts.ToyScenesConfig(name='test_tiny', conditional=True, height=16, width=32,
                                      num_train=24, num_test=8)
SR_TINY = sr.LocalPhotosSRConfig(name='test_tiny', factor=4, patch_size=32,
                                 photo_short_side=96,
                                 train_photos=('astronaut', 'coffee'),
                                 test_photos=('chelsea', 'china'))


def build(builder_cls, data_dir, config=None):
  # The same call the training pipeline makes.
  kwargs = {} if config is None else {'config': config}
  builder = builder_cls(data_dir=str(data_dir), file_format='array_record',
                        **kwargs)
  builder.download_and_prepare()
  return builder


def records(builder, split):
  source = builder.as_data_source(split)
  return [source[i] for i in range(len(source))]


def apply(transforms, element, rng=None):
  for transform in transforms:
    if isinstance(transform, grain.transforms.RandomMap):
      element = transform.random_map(element, rng)
    else:
      element = transform.map(element)
  return element


@pytest.fixture(scope='module')
def toy_builder(tmp_path_factory):
  return build(ts.ToyScenes, tmp_path_factory.mktemp('toy'), TOY_TINY)


@pytest.fixture(scope='module')
def sr_builder(tmp_path_factory):
  return build(sr.LocalPhotosSR, tmp_path_factory.mktemp('sr'), SR_TINY)


@pytest.fixture(scope='module')
def digits_builder(tmp_path_factory):
  return build(dc.DigitsCompletion, tmp_path_factory.mktemp('digits'))


# ---------------------------------------------------------------- registry


def test_registry_lists_the_offline_datasets():
  names = registry.dataset_names()
  for name in ['toy_scenes', 'toy_scenes_colorization', 'local_photos_sr',
               'digits_completion']:
    assert name in names
    spec = registry.get_dataset(name)
    assert spec.builder_cls is not None
    assert (spec.train_split, spec.eval_split) == ('train', 'test')
  assert registry.get_dataset('toy_scenes').builder_cls is ts.ToyScenes
  with pytest.raises(ValueError, match="valid names: .*'toy_scenes'"):
    registry.get_dataset('toy_scene')


def test_asking_for_one_dataset_imports_only_its_module():
  # In a fresh process: this one has imported every dataset module already.
  script = textwrap.dedent('''\
      import sys
      from multimodal_jax.data import registry
      names = registry.dataset_names()
      after_names = sorted(m for m in sys.modules if m.startswith('multimodal_jax.data.'))
      spec = registry.get_dataset('toy3d')
      assert registry.get_dataset('toy3d') is spec  # Resolved once.
      after_get = sorted(m for m in sys.modules if m.startswith('multimodal_jax.data.'))
      print(len(names), after_names, after_get)
      ''')
  proc = subprocess.run([sys.executable, '-c', script], cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert proc.stdout.split()[0] == str(len(registry.DATASETS))
  assert proc.stdout.rstrip().endswith(
      "['multimodal_jax.data.registry'] ['multimodal_jax.data.registry', 'multimodal_jax.data.toy3d']")
  assert 'multimodal_jax.data.facades' not in proc.stdout


@pytest.mark.parametrize('name', sorted(registry.DATASETS))
def test_every_table_entry_resolves_to_a_dataset_spec(name):
  assert registry.DATASETS[name].startswith('multimodal_jax.data.')
  assert isinstance(registry.get_dataset(name), registry.DatasetSpec)


def test_register_adds_a_user_dataset_but_not_under_a_taken_name(monkeypatch):
  monkeypatch.setattr(registry, '_SPECS', dict(registry._SPECS))  # pylint: disable=protected-access
  spec = registry.DatasetSpec(tfds_name='mine', builder_cls=None, train_split='train', eval_split='test',
                              make_transforms=lambda data_config, train: [], input_to_rgb=lambda x: x)
  registry.register('my_data', spec)
  assert registry.get_dataset('my_data') is spec
  assert 'my_data' in registry.dataset_names() and 'toy3d' in registry.dataset_names()
  with pytest.raises(ValueError, match="'my_data' is registered twice"):
    registry.register('my_data', spec)
  with pytest.raises(ValueError, match="'toy3d' is a built-in dataset"):
    registry.register('toy3d', spec)
  with pytest.raises(ValueError, match="valid names: .*'my_data'.*'toy3d'"):
    registry.get_dataset('my_dat')


@pytest.mark.parametrize('builder_cls', [ts.ToyScenes, ts.ToyScenesConditional, sr.LocalPhotosSR,
                                         dc.DigitsCompletion])
def test_every_builder_has_a_tiny_config_with_default_shapes(builder_cls):
  configs = builder_cls.builder_configs
  assert 'tiny' in configs
  default = builder_cls.BUILDER_CONFIGS[0]
  for field in ('height', 'width', 'num_modes', 'factor', 'patch_size'):
    assert getattr(configs['tiny'], field, None) == getattr(default, field,
                                                            None)


# ---------------------------------------------------------------- toy_scenes


@pytest.mark.parametrize('builder_cls,config', [
    (ts.ToyScenes, TOY_TINY), (ts.ToyScenesConditional, CONDITIONAL_TINY), (sr.LocalPhotosSR, SR_TINY),
    (dc.DigitsCompletion, 'tiny')])
def test_building_twice_gives_identical_records(builder_cls, config, tmp_path):
  first = build(builder_cls, tmp_path / 'a', config)
  second = build(builder_cls, tmp_path / 'b', config)
  for split in ('train', 'test'):
    a, b = records(first, split), records(second, split)
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
      assert ra.keys() == rb.keys()
      for key in ra:
        np.testing.assert_array_equal(ra[key], rb[key], err_msg=key)


def test_toy_scenes_records(toy_builder):
  train, test = records(toy_builder, 'train'), records(toy_builder, 'test')
  assert (len(train), len(test)) == (24, 8)
  for record in train + test:
    assert record['label'].shape == (16, 32) and record['label'].dtype == np.uint8
    assert record['image'].shape == (16, 32, 3) and record['image'].dtype == np.uint8
    np.testing.assert_array_equal(record['grey'], ts.luminance(record['image']))
    assert 0 <= record['mode'] < 12
  # Every record has its own layout and none is shared between the splits.
  ids = [r['layout_id'] for r in train + test]
  assert len(set(ids)) == len(ids)
  train_layouts = {r['label'].tobytes() for r in train}
  assert len(train_layouts) == len(train)
  assert not train_layouts & {r['label'].tobytes() for r in test}


def test_each_image_is_its_mode_render_plus_bounded_noise(toy_builder):
  for record in records(toy_builder, 'train'):
    image = record['image'] / 255.0
    renders_KxHxWx3 = ts.render_all_modes(record['label'])
    np.testing.assert_array_equal(
        renders_KxHxWx3[record['mode']],
        ts.render_mode(record['label'], record['mode']))
    error_K = np.abs(renders_KxHxWx3 - image).reshape(12, -1)
    assert error_K[record['mode']].max() <= NOISE_BOUND
    assert error_K[record['mode']].mean() > 0.005  # The texture is there.
    # Every other mode is farther, on average and at each pixel: its colour is
    # at least MIN_MODE_COLOUR_DISTANCE away and the noise at most NOISE_BOUND.
    others = np.delete(error_K, record['mode'], axis=0)
    assert others.mean(-1).min() >= ts.MIN_MODE_COLOUR_DISTANCE - NOISE_BOUND
    assert others.mean(-1).min() > 2 * error_K[record['mode']].mean()
    pixel_error = np.abs(renders_KxHxWx3 - image).mean(-1)  # [K, H, W]
    assert (pixel_error.argmin(0) == record['mode']).all()


def test_modes_are_distinct_for_every_class_and_layout():
  colours_KxCx3 = ts.mode_colours(ts.MAX_MODES)
  assert colours_KxCx3.shape == (16, ts.NUM_CLASSES, 3)
  # Inside [0, 1] with room for the noise, so it is never clipped.
  assert colours_KxCx3.min() >= ts.NOISE_AMPLITUDE
  assert colours_KxCx3.max() <= 1 - ts.NOISE_AMPLITUDE
  for a, b in itertools.combinations(range(16), 2):
    per_class = np.abs(colours_KxCx3[a] - colours_KxCx3[b]).mean(-1)
    assert per_class.min() >= ts.MIN_MODE_COLOUR_DISTANCE, (a, b)
  assert ts.MIN_MODE_COLOUR_DISTANCE > 2 * ts.NOISE_AMPLITUDE
  label = ts.sample_layout(np.random.default_rng(3), 32, 64)
  renders = ts.render_all_modes(label, num_modes=16)
  for a, b in itertools.combinations(range(16), 2):
    assert np.abs(renders[a] - renders[b]).mean() >= ts.MIN_MODE_COLOUR_DISTANCE
  # Mode sets are nested: K only limits which modes exist.
  np.testing.assert_array_equal(ts.render_all_modes(label, 12), renders[:12])
  with pytest.raises(ValueError):
    ts.render_mode(label, 12, num_modes=12)


def test_modes_are_uniform_and_layouts_varied():
  examples = [ts.make_example(0, 0, i, 32, 64, 12) for i in range(1200)]
  counts = np.bincount([e['mode'] for e in examples], minlength=12)
  assert counts.min() > 60 and counts.max() < 140  # Expected 100 each.
  labels = np.stack([e['label'] for e in examples])
  class_share = np.bincount(labels.ravel(), minlength=6) / labels.size
  assert (class_share > 0.005).all(), class_share
  assert len({l.tobytes() for l in labels}) == len(labels)
  horizons = (labels == ts.SKY).sum(1).max(-1)  # Rough sky depth varies.
  assert horizons.std() > 2


def test_one_mode_data_is_a_function_of_the_layout():
  """toy_scenes `one_mode`: every image is mode 0's render of its layout plus the texture, nothing to choose."""
  config = {c.name: c for c in ts.ToyScenes.BUILDER_CONFIGS}['one_mode']
  assert (config.num_modes, config.independent_classes, config.mode_decay) == (1, False, 1.0)
  for i in range(30):
    e = ts.make_example(0, 0, i, 32, 64, config.num_modes)
    assert e['mode'] == 0
    assert np.abs(e['image'] / 255.0 - ts.render_mode(e['label'], 0, num_modes=1)).max() <= NOISE_BOUND
  # The same layouts as the default data (the mode draw comes after the layout).
  np.testing.assert_array_equal(ts.make_example(0, 0, 3, 32, 64, 1)['label'],
                                ts.make_example(0, 0, 3, 32, 64, 12)['label'])


def test_lighting_data_shifts_each_segment_by_its_own_offset():
  """toy_scenes `lighting`: class c is mode 0's colour + lighting[c] (clipped) within the texture; offsets
  uniform in [-s, s], independent across classes; the other variants' images are unchanged."""
  config = {c.name: c for c in ts.ToyScenes.BUILDER_CONFIGS}['lighting']
  s = config.segment_lighting
  assert (config.num_modes, config.independent_classes, s) == (1, False, ts.SEGMENT_LIGHTING)
  examples = [ts.make_example(0, 0, i, 32, 64, 1, segment_lighting=s) for i in range(400)]
  for e in examples[:20]:
    offset_HxWx1 = e['lighting'][e['label']][..., None]
    clean = np.clip(ts.render_mode(e['label'], 0, num_modes=1) + offset_HxWx1, 0, 1)
    assert np.abs(e['image'] / 255.0 - clean).max() <= NOISE_BOUND
  lighting_ExC = np.stack([e['lighting'] for e in examples])
  assert lighting_ExC.shape == (400, ts.NUM_CLASSES) and np.abs(lighting_ExC).max() <= s
  assert np.abs(lighting_ExC.std(0) - s / np.sqrt(3)).max() < 0.02  # U[-s, s]
  assert np.abs(np.corrcoef(lighting_ExC.T) - np.eye(ts.NUM_CLASSES)).max() < 0.2
  plain = ts.make_example(0, 0, 3, 32, 64, 1)
  assert 'lighting' not in plain
  np.testing.assert_array_equal(plain['label'], examples[3]['label'])
  # The offsets are drawn after the texture: off the clipped pixels, lighting image = plain image + offset.
  shift_HxWx1 = examples[3]['lighting'][plain['label']][..., None] * 255.0
  inside = (examples[3]['image'] > 0) & (examples[3]['image'] < 255) & (plain['image'] > 0) & (plain['image'] < 255)
  assert inside.mean() > 0.5
  delta = examples[3]['image'].astype(np.float32) - plain['image'] - shift_HxWx1
  assert np.abs(delta[inside]).max() <= 1.0
  # No discrete modes: evaluation gets no true modes, so reports no mode metrics.
  spec = registry.get_dataset('toy_scenes')
  assert spec.true_modes(plain['label'], config) is None
  assert spec.true_modes(plain['label'], {c.name: c for c in ts.ToyScenes.BUILDER_CONFIGS}['one_mode']).shape == (
      1, 32, 64, 3)


def test_segments_data_draws_each_class_its_own_mode():
  """toy_scenes `segments`: class c of an image is within the noise of mode_C[c]'s colour, modes independent."""
  examples = [ts.make_example(0, 0, i, 32, 64, 12, independent_classes=True) for i in range(300)]
  for e in examples[:20]:
    assert e['mode'].shape == (ts.NUM_CLASSES,) and e['mode'].dtype == np.int32
    clean = ts.render_class_modes(e['label'], e['mode'])
    assert np.abs(e['image'] / 255.0 - clean).max() <= NOISE_BOUND
  modes_ExC = np.stack([e['mode'] for e in examples])
  # Independent: the sky's mode says nothing about the ground's (same mode 1/12 of the time, not always).
  assert 0.03 < np.mean(modes_ExC[:, ts.SKY] == modes_ExC[:, ts.GROUND]) < 0.15
  assert (np.bincount(modes_ExC.ravel(), minlength=12) > 100).all()  # 150 each expected
  # One mode for every class is the one-mode render; the default data is unchanged by the option.
  label = examples[0]['label']
  np.testing.assert_array_equal(ts.render_class_modes(label, np.full(ts.NUM_CLASSES, 5)), ts.render_mode(label, 5))
  # The default data keeps its draws: one mode per image, drawn right after the layout from the same stream.
  rng = np.random.default_rng([0, 0, 7])
  layout, mode = ts.sample_layout(rng, 32, 64), int(rng.integers(12))
  noise = rng.uniform(-ts.NOISE_AMPLITUDE, ts.NOISE_AMPLITUDE, (32, 64, 1)).astype(np.float32)
  default = ts.make_example(0, 0, 7, 32, 64, 12)
  assert default['mode'].shape == () and default['mode'] == mode
  np.testing.assert_array_equal(default['label'], layout)
  np.testing.assert_array_equal(
      default['image'], np.clip(np.round((ts.render_mode(layout, mode) + noise) * 255.0), 0, 255).astype(np.uint8))
  with pytest.raises(ValueError, match="modes_C must be 6 modes in"):
    ts.render_class_modes(label, np.arange(5))


# ---------------------------------------------------------------- toy_scenes_conditional


def test_conditional_draws_are_pinned():
  """(free classes, mode, crc32 of the image) of the first training and test examples at 32x64, seed 0."""
  import zlib  # pylint: disable=g-import-not-at-top
  expected = {(0, 0): ((3, 4, 5), 1, 3412310907), (0, 1): ((2, 3, 5), 5, 1935389021), (0, 2): ((), 0, 591872110),
              (0, 3): ((), 0, 1169744187), (0, 4): ((1, 2, 5), 1, 185801010), (0, 5): ((3, 5), 1, 2887503875),
              (1, 0): ((2,), 0, 3478182322)}
  for (split_code, index), (free, mode, crc) in expected.items():
    e = ts.make_conditional_example(0, split_code, index, 32, 64)
    assert (tuple(ts.free_classes(e['label'])), int(e['mode']), zlib.crc32(e['image'].tobytes())) == (
        free, mode, crc), (split_code, index)
    # The default data's layout, with the free classes' ids moved up by FREE_CLASS_OFFSET.
    np.testing.assert_array_equal(e['label'] % ts.FREE_CLASS_OFFSET,
                                  ts.make_example(0, split_code, index, 32, 64, 12)['label'])
    assert e['layout_id'] == split_code * 2**32 + index


def test_conditional_records_are_the_pure_draws_with_disjoint_splits(tmp_path):
  builder = build(ts.ToyScenesConditional, tmp_path, CONDITIONAL_TINY)
  by_id = {}
  for split, code in (('train', 0), ('test', 1)):
    for record in records(builder, split):
      index = int(record['layout_id']) - code * 2**32
      e = ts.make_conditional_example(0, code, index, 16, 32)
      for key in ('label', 'image', 'grey', 'mode'):
        np.testing.assert_array_equal(record[key], e[key], err_msg=key)
      by_id[int(record['layout_id'])] = record['label'].tobytes()
  assert len(by_id) == 24 + 8 and len(set(by_id.values())) == 32
  assert builder.info.features['label'].shape == (16, 32) and builder.info.features['mode'].shape == ()
  # The tiny and default configs share the shapes (`runlocal` keeps the model's input).
  configs = ts.ToyScenesConditional.builder_configs
  assert configs['default'].conditional and configs['tiny'].conditional
  assert (configs['tiny'].num_train, configs['tiny'].num_test) == (64, 16)


def test_conditional_colours_are_two_tolerances_apart_per_class():
  colours = ts.mode_colours(ts.MAX_MODES)
  fixed, (free_a, free_b) = colours[ts.FIXED_CLASS_MODE], (colours[m] for m in ts.FREE_CLASS_MODES)
  for a, b in ((fixed, free_a), (fixed, free_b), (free_a, free_b)):
    assert np.abs(a - b).mean(-1).min() >= 2 * ts.MIN_MODE_COLOUR_DISTANCE
  assert ts.CONDITIONAL_CLASS_NAMES[ts.FREE_CLASS_OFFSET + ts.CAR] == 'free_car'
  assert ts.CONDITIONAL_CLASS_NAMES[ts.SKY] == 'fixed_sky' and ts.NUM_CONDITIONAL_CLASSES == 12


def test_each_conditional_image_is_one_of_its_own_modes_which_vary_the_free_classes_only():
  spec = registry.get_dataset('toy_scenes_conditional')
  config = ts.ToyScenesConditional.builder_configs['default']
  colours = ts.mode_colours(ts.MAX_MODES)
  for i in range(40):
    e = ts.make_conditional_example(0, 0, i, 32, 64)
    label, free = e['label'], ts.free_classes(e['label'])
    modes = spec.true_modes(label, config)
    assert modes.shape == (2**len(free), 32, 64, 3) and modes.dtype == np.float32
    np.testing.assert_array_equal(modes[e['mode']], ts.render_conditional_mode(label, int(e['mode'])))
    assert np.abs(e['image'] / 255.0 - modes[e['mode']]).max() <= NOISE_BOUND
    fixed_pixels = label < ts.FREE_CLASS_OFFSET
    # Fixed classes: their temperate colour in every mode; free class b: desert or autumn by bit b.
    np.testing.assert_array_equal(modes[:, fixed_pixels], np.broadcast_to(
        colours[ts.FIXED_CLASS_MODE][label[fixed_pixels]], modes[:, fixed_pixels].shape))
    for k in range(len(modes)):
      for b, c in enumerate(free):
        expected = colours[ts.FREE_CLASS_MODES[(k >> b) & 1], c]
        np.testing.assert_array_equal(modes[k][label == ts.FREE_CLASS_OFFSET + c], np.broadcast_to(
            expected, ((label == ts.FREE_CLASS_OFFSET + c).sum(), 3)))
  assert spec.modes_depend_on_input(config) and spec.mode_tolerance == ts.MIN_MODE_COLOUR_DISTANCE / 2
  assert not registry.get_dataset('toy_scenes').modes_depend_on_input
  with pytest.raises(ValueError, match=r'mode must be in \[0, 1\)'):
    ts.render_conditional_mode(ts.make_conditional_example(0, 0, 2, 32, 64)['label'], 1)


def test_conditional_mode_counts_are_uniform_from_1_to_16():
  examples = [ts.make_conditional_example(0, 0, i, 32, 64) for i in range(1000)]
  num_free = np.array([len(ts.free_classes(e['label'])) for e in examples])
  counts = np.bincount(num_free, minlength=ts.MAX_FREE_CLASSES + 1)
  assert len(counts) == ts.MAX_FREE_CLASSES + 1
  assert counts.min() > 150 and counts.max() < 250, counts  # 200 each expected (4 sd: +-51)
  # The mode is uniform within the input's own set: each free class takes either colour half the time.
  bits = np.concatenate([[(int(e['mode']) >> b) & 1 for b in range(f)] for e, f in zip(examples, num_free)])
  assert abs(bits.mean() - 0.5) < 0.04, bits.mean()
  assert all(0 <= e['mode'] < 2**f for e, f in zip(examples, num_free))
  # Every class is sometimes free and sometimes fixed.
  free_share = np.mean([np.isin(np.arange(6), ts.free_classes(e['label'])) for e in examples], axis=0)
  assert (free_share > 0.15).all() and (free_share < 0.7).all(), free_share


def test_conditional_transforms_and_spec():
  spec = registry.get_dataset('toy_scenes_conditional')
  assert spec.builder_cls is ts.ToyScenesConditional and spec.class_names == ts.CONDITIONAL_CLASS_NAMES
  e = ts.make_conditional_example(0, 0, 0, 32, 64)
  out = apply(spec.make_transforms(ml_collections.ConfigDict(), True), e)
  assert out['x'].shape == (32, 64, 12) and out['y'].shape == (32, 64, 3) and out['mode'].shape == ()
  np.testing.assert_array_equal(out['x'].argmax(-1), e['label'])
  np.testing.assert_array_equal(out['label'], e['label'])
  rgb = spec.input_to_rgb(out['x'][None])
  assert rgb.shape == (1, 32, 64, 3) and 0 <= rgb.min() and rgb.max() <= 1
  # A free class is shown lighter than its fixed version.
  free = e['label'] >= ts.FREE_CLASS_OFFSET
  assert rgb[0][free].mean() > ts.label_to_rgb(e['label'] % ts.FREE_CLASS_OFFSET)[free].mean()


# (config file, a variant on toy_scenes, the same variant on toy_scenes_conditional)
CONDITIONAL_CONFIGS = [
    ('layout_imle.py', '', 'conditional'), ('layout_imle.py', 'no_rebalance', 'conditional,no_rebalance'),
    ('layout_imle.py', 'runlocal', 'conditional,runlocal'),
    ('layout_imle.py', 'crn_best_of_k', 'conditional,crn_best_of_k'),
    ('regression.py', '', 'conditional'), ('regression.py', 'runlocal', 'conditional,runlocal'),
    ('cgml.py', 'toy_scenes', 'conditional'), ('cgml.py', 'toy_scenes,runlocal', 'conditional,runlocal'),
    ('latent_codes.py', '', 'conditional'), ('latent_codes.py', 'runlocal', 'conditional,runlocal'),
    ('diversity.py', '', 'conditional'), ('diversity.py', 'crn', 'crn,conditional'),
    ('diversity.py', 'runlocal', 'conditional,runlocal'),
]


def _load_config(name, arg):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location('cfg', REPO / 'configs' / name)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg or None), module


@pytest.mark.parametrize('name,plain_arg,conditional_arg', CONDITIONAL_CONFIGS)
def test_conditional_variants_change_only_the_data_name(name, plain_arg, conditional_arg):
  """`:conditional` of every toy_scenes config: toy_scenes_conditional in place of toy_scenes, nothing else
  (tests/test_train.py loads and validates every listed variant)."""
  plain, module = _load_config(name, plain_arg)
  conditional, _ = _load_config(name, conditional_arg)
  assert conditional_arg in module.VARIANTS
  assert (plain.data.name, conditional.data.name) == ('toy_scenes', 'toy_scenes_conditional')
  assert conditional.data.builder_config in ts.ToyScenesConditional.builder_configs or not (
      conditional.data.builder_config)
  a, b = plain.to_dict(), conditional.to_dict()
  a['data'].pop('name'), b['data'].pop('name')
  assert a == b
  assert 'mode_sets' in conditional.evals


def test_label_to_rgb_works_on_batches():
  label_2xHxW = np.stack([np.zeros((4, 6), np.int32),
                          np.full((4, 6), ts.CAR)])
  rgb = ts.label_to_rgb(label_2xHxW)
  assert rgb.shape == (2, 4, 6, 3) and rgb.dtype == np.float32
  assert 0 <= rgb.min() and rgb.max() <= 1
  assert not np.allclose(rgb[0], rgb[1])
  assert len({tuple(ts.label_to_rgb(np.array(c))) for c in range(6)}) == 6


def test_toy_scenes_transforms(toy_builder):
  record = records(toy_builder, 'test')[0]
  config = ml_collections.ConfigDict({'options': {}})
  spec = registry.get_dataset('toy_scenes')
  out = apply(spec.make_transforms(config, True), record)
  assert set(out) == {'x', 'y', 'mode', 'label'}
  assert out['x'].shape == (16, 32, 6) and out['x'].dtype == np.float32
  np.testing.assert_array_equal(out['x'].sum(-1), 1.0)
  np.testing.assert_array_equal(out['x'].argmax(-1), record['label'])
  assert out['y'].shape == (16, 32, 3) and out['y'].dtype == np.float32
  np.testing.assert_allclose(out['y'] * 255, record['image'], atol=1e-4)
  assert out['mode'].dtype == np.int32 and out['mode'] == record['mode']
  np.testing.assert_array_equal(spec.input_to_rgb(out['x'][None])[0],
                                ts.label_to_rgb(record['label']))

  spec = registry.get_dataset('toy_scenes_colorization')
  out = apply(spec.make_transforms(config, False), record)
  assert set(out) == {'x', 'y', 'mode'}
  assert out['x'].shape == (16, 32, 1) and out['x'].dtype == np.float32
  assert 0 <= out['x'].min() and out['x'].max() <= 1
  np.testing.assert_allclose(out['x'] * 255, record['grey'], atol=1e-4)
  rgb = spec.input_to_rgb(out['x'][None])
  assert rgb.shape == (1, 16, 32, 3)
  np.testing.assert_array_equal(rgb[0, ..., 2], out['x'][..., 0])


# ---------------------------------------------------------------- local_photos_sr


def test_default_photos_load_offline_and_splits_are_disjoint():
  assert not set(sr.TRAIN_PHOTOS) & set(sr.TEST_PHOTOS)
  assert len(sr.TRAIN_PHOTOS) >= 6 and len(sr.TEST_PHOTOS) >= 2
  for name in sr.PHOTOS:
    photo = sr.load_photo(name, 64)
    assert photo.dtype == np.uint8 and photo.ndim == 3 and photo.shape[2] == 3
    assert min(photo.shape[:2]) == 64
    assert photo.std() > 10, name  # A photograph, not a blank.


def test_sr_train_and_test_come_from_different_photos(sr_builder):
  train, test = records(sr_builder, 'train'), records(sr_builder, 'test')
  assert {r['source'].decode() for r in train} == set(SR_TINY.train_photos)
  assert {r['source'].decode() for r in test} == set(SR_TINY.test_photos)
  test_pixels = {r['hr'].tobytes() for r in test}
  assert not test_pixels & {r['hr'].tobytes() for r in train}


def test_lr_is_bicubic_downsampling_of_hr(sr_builder):
  for record in records(sr_builder, 'train')[:20]:
    hr, lr = record['hr'], record['lr']
    assert hr.shape == (32, 32, 3) and lr.shape == (8, 8, 3)
    expected = np.asarray(Image.fromarray(hr).resize((8, 8), Image.BICUBIC))
    np.testing.assert_array_equal(lr, expected)
    # Not a plain subsampling: the antialiasing kernel mixes neighbours.
    assert not np.array_equal(lr, hr[::4, ::4])
    assert hr.astype(np.float32).mean(-1).std() >= sr.MIN_PATCH_STD


def test_sr_transforms(sr_builder):
  record = records(sr_builder, 'test')[0]
  spec = registry.get_dataset('local_photos_sr')
  out = apply(spec.make_transforms(ml_collections.ConfigDict(), True), record)
  assert set(out) == {'x', 'y'}
  assert out['x'].shape == (8, 8, 3) and out['y'].shape == (32, 32, 3)
  assert out['x'].dtype == out['y'].dtype == np.float32
  np.testing.assert_allclose(out['y'] * 255, record['hr'], atol=1e-4)
  np.testing.assert_allclose(out['x'] * 255, record['lr'], atol=1e-4)
  np.testing.assert_array_equal(spec.input_to_rgb(out['x'][None])[0], out['x'])


def test_sr_rejects_a_factor_that_does_not_divide_the_patch(tmp_path):
  config = sr.LocalPhotosSRConfig(name='bad', factor=3, patch_size=32)
  with pytest.raises(ValueError, match='not divisible'):
    sr.LocalPhotosSR(data_dir=str(tmp_path), config=config)


# ---------------------------------------------------------------- digits_completion


def digits_config(**options):
  return ml_collections.ConfigDict({'options': options})


def test_digits_records(digits_builder):
  train, test = records(digits_builder, 'train'), records(digits_builder, 'test')
  assert (len(train), len(test)) == (1500, 297)
  images, labels = dc.load_digits_32('test')
  source = digits_builder.as_data_source('test')
  assert source[0]['image'].shape == (32, 32, 1)
  # Records are stored in a hashed order: compare as sets.
  assert ({r['image'].tobytes() for r in test}
          == {image.tobytes() for image in images})
  assert sorted(r['label'] for r in test) == sorted(labels.tolist())
  assert images.max() >= 250 and images.min() == 0


def test_digits_corruption_rate_and_form(digits_builder):
  source = digits_builder.as_data_source('train')
  transforms = dc.make_transforms(digits_config(), train=True)
  rng = np.random.default_rng(0)
  num_draws, num_corrupted, num_changed = 2000, 0, 0
  for i in range(num_draws):
    clean = source[i % len(source)]['image'].astype(np.float32) / 255.0
    out = apply(transforms, source[i % len(source)], rng)
    corrupted = bool(out['corrupted'])
    num_corrupted += corrupted
    num_changed += not np.array_equal(out['y'], clean)
    # Only the top half changes, and only brighter (pixelwise max).
    np.testing.assert_array_equal(out['y'][16:], clean[16:])
    assert (out['y'] >= clean - 1e-7).all()
    if not corrupted:
      np.testing.assert_array_equal(out['y'], clean)
  # Binomial(2000, 0.2): std 0.009.
  assert abs(num_corrupted / num_draws - 0.2) < 0.03
  assert num_changed >= 0.9 * num_corrupted


def test_digits_corruption_rate_option(digits_builder):
  record = digits_builder.as_data_source('train')[0]
  for rate in (0.0, 0.6):
    transforms = dc.make_transforms(digits_config(corruption_rate=rate), True)
    rng = np.random.default_rng(1)
    flags = [apply(transforms, record, rng)['corrupted'] for _ in range(500)]
    assert abs(np.mean(flags) - rate) < 0.07


def test_digits_masks_and_outputs(digits_builder):
  record = digits_builder.as_data_source('train')[3]
  transforms = dc.make_transforms(digits_config(mask_min_size=4,
                                                mask_max_size=10), True)
  rng = np.random.default_rng(2)
  sizes = set()
  for _ in range(200):
    out = apply(transforms, record, rng)
    assert set(out) == {'x', 'y', 'mask', 'corrupted'}
    assert out['x'].shape == (32, 32, 2) and out['y'].shape == (32, 32, 1)
    assert out['mask'].shape == (32, 32, 1)
    for key in ('x', 'y', 'mask'):
      assert out[key].dtype == np.float32
      assert 0 <= out[key].min() and out[key].max() <= 1
    mask = out['mask'][..., 0]
    assert set(np.unique(mask)) == {0.0, 1.0}
    assert not mask[16:].any()  # The mask lies in the top half.
    rows, cols = np.nonzero(mask)
    height, width = np.ptp(rows) + 1, np.ptp(cols) + 1
    assert height * width == mask.sum()  # A rectangle.
    assert 4 <= height <= 10 and 4 <= width <= 10
    sizes.add((height, width))
    np.testing.assert_array_equal(out['x'][..., 1], mask)
    np.testing.assert_array_equal(out['x'][..., 0], out['y'][..., 0] * (1 - mask))
  assert len(sizes) > 10  # Random-sized.
  rgb = registry.get_dataset('digits_completion').input_to_rgb(out['x'][None])
  assert rgb.shape == (1, 32, 32, 3)


def test_digits_eval_is_clean_with_fixed_masks(digits_builder):
  source = digits_builder.as_data_source('test')
  transforms = dc.make_transforms(digits_config(), train=False)
  assert not any(isinstance(t, grain.transforms.RandomMap) for t in transforms)
  masks = []
  for i in range(50):
    out = apply(transforms, source[i])
    np.testing.assert_array_equal(
        out['y'], source[i]['image'].astype(np.float32) / 255.0)
    assert out['corrupted'] == 0
    again = apply(dc.make_transforms(digits_config(), train=False), source[i])
    np.testing.assert_array_equal(out['mask'], again['mask'])
    masks.append(out['mask'].tobytes())
  assert len(set(masks)) > 25


def test_digits_corruption_is_redrawn_each_epoch_and_replays(digits_builder):
  full = digits_builder.as_data_source('train')
  source = [full[i] for i in range(300)]  # Few records keep grain quick.

  def corruption_flags(seed):
    loader = grain.DataLoader(
        data_source=source,
        sampler=grain.samplers.IndexSampler(
            num_records=len(source), shard_options=grain.sharding.NoSharding(),
            shuffle=False, num_epochs=2, seed=seed),
        operations=dc.make_transforms(digits_config(), True), worker_count=0)
    flags = np.array([int(e['corrupted']) for e in loader])
    return flags.reshape(2, len(source))  # [epoch, record]

  flags = corruption_flags(seed=5)
  assert abs(flags.mean() - 0.2) < 0.06  # Binomial(600, 0.2): std 0.016.
  # Different records are corrupted in the second epoch...
  assert (flags[0] != flags[1]).mean() > 0.2
  # ...yet the stream replays exactly from the seed.
  np.testing.assert_array_equal(flags, corruption_flags(seed=5))
