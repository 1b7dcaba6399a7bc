"""A small residual conv generator: the deterministic baseline's network.

x [B, H, W, Cx] -> y [B, H * s, W * s, Cy] in [0, 1], where s is a power of
two (1 for layouts and completion, 8 for x8 super-resolution). An optional
code z is concatenated to x's channels (`registry.concat_code`), which makes
it the generator of conditional IMLE on any task.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.models import consistency
from multimodal_jax.models import registry


class ResidualBlock(nn.Module):
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h):
    r = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.relu(h))
    r = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.relu(r))
    return h + r


class ConvGenerator(nn.Module):
  """Conv in -> `num_blocks` residual blocks -> x2 upsample stages -> conv out -> sigmoid.

  With `global_skip` an upsampling method ('bicubic', 'bilinear'; see
  models/registry.py) the output is clip(up(x) + conv_out, 0, 1) instead of
  the sigmoid, the last conv zero-initialised: the network starts as the
  upsampled input and learns the residual.
  """
  out_channels: int
  features: int = 32
  num_blocks: int = 4
  upsample_factor: int = 1
  global_skip: str = "none"
  consistency: str = "none"  # 'bicubic': project onto the input's downscaling (models/consistency.py)
  dtype: Any = jnp.float32  # computation; parameters and the output stay float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, z: jax.Array | None = None,
               bilinear: bool | jax.Array = False) -> jax.Array:
    """y [B, H s, W s, out_channels] in [0, 1]; `bilinear` (may be traced) picks the upsampling."""
    num_up = int(round(math.log2(self.upsample_factor)))
    if 2**num_up != self.upsample_factor:
      raise ValueError(f"upsample_factor must be a power of 2, got {self.upsample_factor}")
    h = nn.Conv(self.features, (3, 3), dtype=self.dtype)(registry.concat_code(x_BxHxWxC, z))
    for _ in range(self.num_blocks):
      h = ResidualBlock(self.features, self.dtype)(h)
    for _ in range(num_up):
      b, hh, ww, c = h.shape
      up = lambda method, a: jax.image.resize(a, (b, 2 * hh, 2 * ww, c), method)
      if isinstance(bilinear, bool):
        h = up("bilinear" if bilinear else "nearest", h)
      else:
        h = jax.lax.cond(bilinear, lambda a: up("bilinear", a), lambda a: up("nearest", a), h)
      h = nn.relu(nn.Conv(self.features, (3, 3), dtype=self.dtype)(h))
    if self.global_skip == "none":
      y = nn.sigmoid(nn.Conv(self.out_channels, (3, 3), dtype=self.dtype)(h).astype(jnp.float32))
    else:
      residual = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
      base = registry.upsample_reference(x_BxHxWxC[..., :self.out_channels], self.upsample_factor,
                                         self.global_skip)
      y = jnp.clip(base + residual.astype(jnp.float32), 0.0, 1.0)
    return consistency.apply(self.consistency, y, x_BxHxWxC)


def code_shape(cfg: ml_collections.ConfigDict, x_shape: tuple[int, ...]) -> tuple[int, ...] | None:
  """`code_dim` > 0: a vector code of that many entries, broadcast over space (`registry.concat_code`).

  Unset or 0: the method chooses (IMLE: a code map at x's resolution with `imle.code_channels`). A
  per-pixel noise map lets the generator turn noise into speckle that differs from pixel to pixel;
  a vector can only change the whole output together (a different completion, not noisier pixels).
  """
  del x_shape
  dim = cfg.get("code_dim", 0)
  return (dim,) if dim else None


def build(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> ConvGenerator:
  """`model.name='conv_generator'`: fields features, num_blocks, global_skip, consistency."""
  return ConvGenerator(out_channels=io.y_shape[-1], features=cfg.features, num_blocks=cfg.num_blocks,
                       upsample_factor=io.upsample_factor, global_skip=io.resolve_global_skip(cfg.global_skip),
                       consistency=cfg.get("consistency", "none"))
