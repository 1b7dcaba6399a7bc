"""A small residual conv generator: the deterministic baseline's network.

x [B, H, W, Cx] -> y [B, H * s, W * s, Cy] in [0, 1], where s is a power of
two (1 for layouts and completion, 8 for x8 super-resolution). Optional extra
input channels (latent codes broadcast over space) are concatenated to x by
the caller.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp


class ResidualBlock(nn.Module):
  features: int

  @nn.compact
  def __call__(self, h):
    r = nn.Conv(self.features, (3, 3))(nn.relu(h))
    r = nn.Conv(self.features, (3, 3))(nn.relu(r))
    return h + r


class ConvGenerator(nn.Module):
  """Conv in -> `num_blocks` residual blocks -> x2 upsample stages -> conv out -> sigmoid."""
  out_channels: int
  features: int = 32
  num_blocks: int = 4
  upsample_factor: int = 1

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    num_up = int(round(math.log2(self.upsample_factor)))
    if 2**num_up != self.upsample_factor:
      raise ValueError(f"upsample_factor must be a power of 2, got {self.upsample_factor}")
    h = nn.Conv(self.features, (3, 3))(x_BxHxWxC)
    for _ in range(self.num_blocks):
      h = ResidualBlock(self.features)(h)
    for _ in range(num_up):
      b, hh, ww, c = h.shape
      h = jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest")
      h = nn.relu(nn.Conv(self.features, (3, 3))(h))
    y = nn.Conv(self.out_channels, (3, 3))(h)
    return nn.sigmoid(y)
