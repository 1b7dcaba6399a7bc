"""A small U-Net velocity field v(y_t, t, x) for conditional flow matching (methods/flow_matching.py).

    module.apply(variables, x_BxhxwxC, y_t_BxHxWxCy, t_B) -> v [B, H, W, Cy] (float32, unbounded)

The input x (a layout's one-hot map, a masked image, or a low-resolution
image) is brought to the output's size (bicubic upsampling when it is
smaller, `registry.upsample_reference`) and concatenated to y_t's channels,
as SR3 and Palette condition their denoisers. The time t in [0, 1] enters
every residual block through a sinusoidal embedding and an MLP, either added
to the block's features (`time_conditioning='add'`, DDPM's U-Net) or as a
per-channel scale and shift after its normalisation ('film').

With `condition_every_level` the input is also concatenated, average-pooled
to each level's size, before every level's blocks on the way down and up
(CRN feeds its layout to every module the same way).

Levels: `features[i]` channels at 1/2^i of the output's size, `num_blocks`
residual blocks per level on the way down and on the way up (with the skip
of the same level concatenated), strided 3x3 convolutions down and
nearest-neighbour resizes + a 3x3 convolution up. The last convolution is
zero-initialised, so the field starts at v = 0. Not from a paper: the small
reference network of issue 42.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.models import registry

TIME_CONDITIONINGS = ("add", "film")


def timestep_embedding(t_B: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal embedding [B, dim] of t in [0, 1] (scaled by 1000, DDPM's step range): cos half, sin half."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = 1000.0 * t_B.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  return jnp.pad(emb, ((0, 0), (0, dim - 2 * half)))


def _groups(channels: int) -> int:
  return math.gcd(8, channels)


class TimeResBlock(nn.Module):
  """GroupNorm -> swish -> conv, time (added or FiLM), GroupNorm -> swish -> conv, + a (1x1) skip."""
  features: int
  time_conditioning: str = "add"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h, emb):
    c_in = h.shape[-1]
    r = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(nn.GroupNorm(_groups(c_in), dtype=self.dtype)(h)))
    r = nn.GroupNorm(_groups(self.features), dtype=self.dtype)(r)
    if self.time_conditioning == "film":
      scale, shift = jnp.split(nn.Dense(2 * self.features, dtype=self.dtype)(nn.swish(emb)), 2, axis=-1)
      r = r * (1 + scale[:, None, None]) + shift[:, None, None]
    else:
      r = r + nn.Dense(self.features, dtype=self.dtype)(nn.swish(emb))[:, None, None]
    r = nn.Conv(self.features, (3, 3), dtype=self.dtype)(nn.swish(r))
    if c_in != self.features:
      h = nn.Conv(self.features, (1, 1), dtype=self.dtype)(h)
    return h + r


class VelocityUNet(nn.Module):
  """v(y_t, t, x) [B, H, W, out_channels]: see the module docstring."""
  out_channels: int
  features: Sequence[int] = (32, 64, 64)
  num_blocks: int = 1
  time_features: int = 64
  time_conditioning: str = "add"
  # The input concatenated again at every level (area-downsampled), as CRN feeds its layout to every
  # module: a narrow first level need not carry it all the way down.
  condition_every_level: bool = True
  dtype: Any = jnp.float32  # computation; parameters and the output stay float32

  @nn.compact
  def __call__(self, x_BxhxwxC: jax.Array, y_t_BxHxWxC: jax.Array, t_B: jax.Array) -> jax.Array:
    b, height, width, _ = y_t_BxHxWxC.shape
    levels = len(self.features)
    if height % 2**(levels - 1) or width % 2**(levels - 1):
      raise ValueError(f"velocity_unet: the output's size {height}x{width} is not divisible by 2^{levels - 1} "
                       f"({levels} levels, model.features={tuple(self.features)}); use fewer levels.")
    if self.time_conditioning not in TIME_CONDITIONINGS:
      raise ValueError(f"velocity_unet: time_conditioning {self.time_conditioning!r}; valid: {TIME_CONDITIONINGS}")
    factor = height // x_BxhxwxC.shape[1]
    cond = x_BxhxwxC if factor == 1 else registry.upsample_reference(x_BxhxwxC, factor, "bicubic")
    emb = timestep_embedding(jnp.broadcast_to(t_B, (b,)), self.time_features)
    emb = nn.Dense(4 * self.time_features, dtype=self.dtype)(emb)
    emb = nn.Dense(4 * self.time_features, dtype=self.dtype)(nn.swish(emb))
    block = lambda f: TimeResBlock(f, self.time_conditioning, self.dtype)

    h = nn.Conv(self.features[0], (3, 3), dtype=self.dtype)(
        jnp.concatenate([y_t_BxHxWxC, cond.astype(y_t_BxHxWxC.dtype)], axis=-1).astype(self.dtype))
    skips = []

    def with_condition(h):
      if not self.condition_every_level or h.shape[1] == height:
        return h
      k = height // h.shape[1]
      c = nn.avg_pool(cond, (k, k), strides=(k, k)).astype(h.dtype)
      return jnp.concatenate([h, c], axis=-1)

    for i, f in enumerate(self.features):
      h = with_condition(h)
      for _ in range(self.num_blocks):
        h = block(f)(h, emb)
      skips.append(h)
      if i < levels - 1:
        h = nn.Conv(self.features[i + 1], (3, 3), strides=(2, 2), dtype=self.dtype)(h)
    h = block(self.features[-1])(h, emb)
    for i in reversed(range(levels)):
      if i < levels - 1:
        bb, hh, ww, c = h.shape
        h = jax.image.resize(h, (bb, 2 * hh, 2 * ww, c), "nearest")
        h = nn.Conv(self.features[i], (3, 3), dtype=self.dtype)(h)
      h = with_condition(jnp.concatenate([h, skips[i]], axis=-1))
      for _ in range(self.num_blocks):
        h = block(self.features[i])(h, emb)
    h = nn.swish(nn.GroupNorm(_groups(h.shape[-1]), dtype=self.dtype)(h))
    v = nn.Conv(self.out_channels, (3, 3), kernel_init=nn.initializers.zeros, dtype=self.dtype)(h)
    return v.astype(jnp.float32)


def build(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> VelocityUNet:
  """`model.name='velocity_unet'`: fields features (per level), num_blocks, time_features, time_conditioning."""
  features = tuple(cfg.features) if isinstance(cfg.features, (tuple, list)) else (cfg.features,)
  return VelocityUNet(out_channels=io.y_shape[-1], features=features, num_blocks=cfg.num_blocks,
                      time_features=cfg.get("time_features", 64),
                      time_conditioning=cfg.get("time_conditioning", "add"),
                      condition_every_level=cfg.get("condition_every_level", False))
