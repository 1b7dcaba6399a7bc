"""AlexNet feature trunk (torchvision's single-tower variant) for LPIPS-alex.

LPIPS (Zhang et al., CVPR 2018, Eq. 1) with the 'alex' trunk compares the five
ReLU outputs of torchvision's `alexnet().features`; the lpips package's linear
heads (weights/v0.1/alex.pth) were fitted on exactly these activations, so the
layer hyper-parameters below copy torchvision's, not the original two-GPU
Krizhevsky net (which had 96/256/384/384/256 channels):

  conv1 11x11/4 pad 2 -> 64,  relu1, pool1 3x3/2
  conv2  5x5/1 pad 2 -> 192, relu2, pool2 3x3/2
  conv3  3x3/1 pad 1 -> 384, relu3
  conv4  3x3/1 pad 1 -> 256, relu4
  conv5  3x3/1 pad 1 -> 256, relu5, pool5 3x3/2

Taps: conv{k} (pre-activation), relu{k}, pool{1,2,5}. LPIPS uses relu1..relu5.
Input: RGB in [0, 1], normalised by `vgg.normalize_input` (the one place
preprocessing is applied); LPIPS passes input_norm='lpips'.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal_jax.models.vgg import normalize_input
from multimodal_jax.models.vgg import random_he_params

# (name, features, kernel, stride, padding, pool after the ReLU)
ALEXNET_LAYERS = (
    ('conv1', 64, 11, 4, 2, True),
    ('conv2', 192, 5, 1, 2, True),
    ('conv3', 384, 3, 1, 1, False),
    ('conv4', 256, 3, 1, 1, False),
    ('conv5', 256, 3, 1, 1, True),
)
# torchvision `features` indices of the convolutions, for the converter.
ALEXNET_TORCHVISION_INDEX = {'conv1': 0, 'conv2': 3, 'conv3': 6, 'conv4': 8, 'conv5': 10}


def alexnet_tap_names() -> tuple[str, ...]:
  names = []
  for name, *_, pool in ALEXNET_LAYERS:
    k = name[len('conv'):]
    names += [name, f'relu{k}'] + ([f'pool{k}'] if pool else [])
  return tuple(names)


class AlexNet(nn.Module):
  """torchvision AlexNet `features`, returning named taps.

  Attributes:
    input_norm: see `vgg.normalize_input`.
    dtype: computation dtype.
  """
  input_norm: str = 'torchvision'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWx3: jax.Array,
               taps: Sequence[str] | None = None) -> dict[str, jax.Array]:
    """Args: RGB images in [0, 1]; tap names (None = all). Returns {tap: [B,h,w,c]}."""
    order = alexnet_tap_names()
    wanted = order if taps is None else tuple(taps)
    unknown = [t for t in wanted if t not in order]
    if unknown:
      raise ValueError(f'Unknown AlexNet taps {unknown}; valid: {order}')
    last = max(order.index(t) for t in wanted) if wanted else -1

    h = normalize_input(x_BxHxWx3, self.input_norm).astype(self.dtype)
    out = {}
    for name, features, kernel, stride, pad, pool in ALEXNET_LAYERS:
      k = name[len('conv'):]
      h = nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                  padding=((pad, pad), (pad, pad)), dtype=self.dtype, name=name)(h)
      steps = [(name, None), (f'relu{k}', nn.relu)]
      if pool:
        # 3x3 stride-2 overlapping pool, floor mode (torch ceil_mode=False).
        steps.append((f'pool{k}', lambda v: nn.max_pool(v, (3, 3), strides=(2, 2), padding='VALID')))
      for tap, fn in steps:
        if fn is not None:
          h = fn(h)
        if tap in wanted:
          out[tap] = h
        if order.index(tap) >= last:
          return out
    return out


def init_alexnet_params(seed: int = 0) -> dict:
  """Random AlexNet parameters (`vgg.random_he_params`); for tests and timing only."""
  return random_he_params(AlexNet(), (1, 64, 64, 3), seed)
