"""SRIM's generator: an ESRGAN residual-in-residual dense network with code inputs.

IJCV §5.1.1 (Fig. 4): the RRDB network of ESRGAN (Wang et al., 2018) with
  * the latent code z, `code_channels` (5 in the paper) channels at the
    *input* (low) resolution, concatenated with the LR image before the first
    convolution;
  * `log2(factor)` x2 stages of upsample + 3x3 conv + LeakyReLU (three for x8);
  * a tanh output, scaled and offset to [0, 1]: y = (tanh(o) + 1) / 2;
  * nearest-neighbour upsampling early in training, bilinear later: the
    `bilinear` argument is a (traced) boolean, so the switch is a `lax.cond`
    in one compiled step, not a recompilation.

Shapes and constants follow the authors' SRIM-pytorch / BasicSR `IMRRDBNet`:
a residual dense block has five 3x3 convs whose inputs are the concatenation
of all earlier maps (growth `growth` channels each, LeakyReLU(0.2) after the
first four), output scaled by 0.2 and added to its input; an RRDB chains three
of them, again scaled by 0.2 and added; the trunk of `num_blocks` RRDBs plus a
conv is added to the first conv's output. Weights start as Kaiming-normal
scaled by 0.1 (ESRGAN's `init_scale`), biases zero, so the residual branches
start near identity and the first output is ~0.5 everywhere.

Dense-block convolutions by linearity. conv_k(concat(x, x_1, ..., x_{k-1})) is
sum_j W_{k,j} * x_j. Rather than concatenating and convolving each time (the
authors' formulation), every map x_j is convolved *once* with the stacked
kernels of all later convs that read it, and the results are summed: same
function and FLOPs, but ~2x wider matrix products (higher FLOP/s on CPU) and
no concatenation copies. `dense_conv_style='concat'` keeps the literal form;
parameters differ only in layout (`concat_kernel` maps one onto the other).
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.models import consistency
from multimodal_jax.models import registry

# ESRGAN: Kaiming-normal (fan_in, gain sqrt(2)) scaled by 0.1 -> variance 0.02 / fan_in.
_KERNEL_INIT = nn.initializers.variance_scaling(2.0 * 0.1**2, "fan_in", "normal")
_LEAK = 0.2
_RESIDUAL_SCALE = 0.2
DENSE_CONV_STYLES = ("split", "concat")


def _conv(features: int, name: str | None = None, use_bias: bool = True, dtype: Any = jnp.float32,
          kernel_init=_KERNEL_INIT) -> nn.Conv:
  return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), kernel_init=kernel_init,
                 use_bias=use_bias, dtype=dtype, name=name)


def _split_kernel_init(fan_ins: list[int], widths: list[int]):
  """ESRGAN's init for a stacked 'from_j' kernel: column block r is a slice of a
  conv whose whole (concatenated) input has fan_in fan_ins[r] x 9, so it gets
  std 0.1 * sqrt(2 / (9 fan_ins[r])), as in the 'concat' layout."""
  def init(key, shape, dtype=jnp.float32):
    std = jnp.concatenate([jnp.full((w,), 0.1 * math.sqrt(2.0 / (9 * f)), dtype)
                           for f, w in zip(fan_ins, widths)])
    return jax.random.normal(key, shape, dtype) * std
  return init


def _lrelu(h: jax.Array) -> jax.Array:
  return nn.leaky_relu(h, _LEAK)


class ResidualDenseBlock(nn.Module):
  """Five densely connected 3x3 convs; out = 0.2 * conv5(...) + x (ESRGAN Fig. 4)."""
  features: int
  growth: int
  style: str = "split"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxF: jax.Array) -> jax.Array:
    widths = [self.growth] * 4 + [self.features]  # output channels of conv1..conv5
    if self.style == "concat":
      maps = [x_BxHxWxF]
      for k, width in enumerate(widths):
        h = _conv(width, f"conv{k + 1}", dtype=self.dtype)(jnp.concatenate(maps, axis=-1))
        if k < 4:
          maps.append(_lrelu(h))
      return h * _RESIDUAL_SCALE + x_BxHxWxF
    if self.style != "split":
      raise ValueError(f"Unknown dense_conv_style {self.style!r}; valid: {DENSE_CONV_STYLES}")
    # partial[k]: the running pre-activation of conv k+1 (sum of W_{k,j} * x_j so far).
    partial = [None] * 5
    current = x_BxHxWxF
    for j in range(5):
      # Map j (x for j = 0, else x_j) feeds convs j+1..5, as one wide conv.
      readers = widths[j:]
      fan_ins = [self.features + k * self.growth for k in range(j, 5)]
      out = _conv(sum(readers), f"from{j}", use_bias=False, dtype=self.dtype,
                  kernel_init=_split_kernel_init(fan_ins, readers))(current)
      offsets = [0] + list(itertools.accumulate(readers))
      for r, k in enumerate(range(j, 5)):
        piece = out[..., offsets[r]:offsets[r + 1]]
        partial[k] = piece if partial[k] is None else partial[k] + piece
      bias = self.param(f"bias{j + 1}", nn.initializers.zeros, (widths[j],), jnp.float32)
      h = partial[j] + bias.astype(partial[j].dtype)
      if j < 4:
        current = _lrelu(h)
    return h * _RESIDUAL_SCALE + x_BxHxWxF


class RRDB(nn.Module):
  """Residual in residual dense block: three RDBs, out = 0.2 * RDB3(RDB2(RDB1(x))) + x."""
  features: int
  growth: int
  style: str = "split"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for i in range(3):
      h = ResidualDenseBlock(self.features, self.growth, self.style, self.dtype, name=f"rdb{i + 1}")(h)
    return h * _RESIDUAL_SCALE + x


class _ScannedRRDB(nn.Module):
  """An RRDB as an `nn.scan` body: (carry, unused) -> (carry, None)."""
  features: int
  growth: int
  style: str = "split"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h: jax.Array, _: Any) -> tuple[jax.Array, None]:
    return RRDB(self.features, self.growth, self.style, self.dtype, name="rrdb")(h), None


def _nearest2x(h_BxHxWxC: jax.Array) -> jax.Array:
  b, h, w, c = h_BxHxWxC.shape
  up = jnp.broadcast_to(h_BxHxWxC[:, :, None, :, None, :], (b, h, 2, w, 2, c))
  return up.reshape(b, 2 * h, 2 * w, c)


def _linear2x(a: jax.Array, axis: int) -> jax.Array:
  """x2 linear interpolation along `axis`, half-pixel centres, edges clamped.

  out[2i] = 0.75 a[i] + 0.25 a[i-1], out[2i+1] = 0.75 a[i] + 0.25 a[i+1]
  (torch's nn.Upsample(mode='bilinear') and jax.image.resize('bilinear')).
  """
  n = a.shape[axis]
  take = lambda start, stop: jax.lax.slice_in_dim(a, start, stop, axis=axis)
  prev = jnp.concatenate([take(0, 1), take(0, n - 1)], axis=axis)
  nxt = jnp.concatenate([take(1, n), take(n - 1, n)], axis=axis)
  even, odd = 0.75 * a + 0.25 * prev, 0.75 * a + 0.25 * nxt
  out = jnp.stack([even, odd], axis=axis + 1)
  return out.reshape(a.shape[:axis] + (2 * n,) + a.shape[axis + 1:])


def _bilinear2x(h_BxHxWxC: jax.Array) -> jax.Array:
  return _linear2x(_linear2x(h_BxHxWxC, 1), 2)


def upsample2x(h_BxHxWxC: jax.Array, bilinear: bool | jax.Array) -> jax.Array:
  """x2 spatial upsampling, nearest or bilinear (half-pixel centres, as torch's nn.Upsample).

  Written with broadcasts and slices rather than `jax.image.resize`, whose
  gather-based gradient is slow on CPU. `bilinear` may be traced (the §5.1.1
  schedule is a function of the step): then both branches are compiled and
  `lax.cond` picks one at run time.
  """
  if isinstance(bilinear, bool):
    return (_bilinear2x if bilinear else _nearest2x)(h_BxHxWxC)
  return jax.lax.cond(bilinear, _bilinear2x, _nearest2x, h_BxHxWxC)


class RRDBNet(nn.Module):
  """The SRIM generator T(x, z) (IJCV §5.1.1, Fig. 4).

  Attributes:
    out_channels: channels of the output image (3).
    features: nf, width of the trunk (64 in ESRGAN / SRIM).
    num_blocks: number of RRDBs (23 in ESRGAN, 24 in the SRIM x8 configs).
    growth: gc, channels each dense conv adds (ESRGAN 32; SRIM x8 configs 128).
    upsample_factor: a power of two; one upsample + conv stage per factor 2.
    dense_conv_style: 'split' (same function, faster, see module docstring)
      or 'concat' (the literal concatenate-then-convolve form).
    unroll: RRDBs per iteration of the scan over blocks (parameters are
      stacked either way). 0 = all (fully unrolled): XLA:CPU runs the
      *backward* pass of a rolled loop ~9x slower, so training wants 0; 1
      compiles fastest and runs the forward pass (selection) as fast.
    dtype: computation dtype (parameters stay float32).
    global_skip: 'none' (the paper: y = (tanh(o) + 1) / 2) or an upsampling
      method ('bicubic', 'bilinear'): y = clip(up(x) + o, 0, 1) with the last
      conv zero-initialised, so the untrained network is exactly the upsampled
      input and learns the residual (not in the paper; `model.global_skip`,
      models/registry.py).
    consistency: 'none' (the paper) or 'bicubic': the output projected onto
      the images whose bicubic downscaling is exactly the input
      (models/consistency.py, Bahat & Michaeli's CEM; not in the paper).
  """
  out_channels: int = 3
  features: int = 64
  num_blocks: int = 23
  growth: int = 32
  upsample_factor: int = 8
  dense_conv_style: str = "split"
  unroll: int = 0
  dtype: Any = jnp.float32
  global_skip: str = "none"
  consistency: str = "none"

  @nn.compact
  def __call__(self, x_BxhxwxC: jax.Array, z_Bxhxwxcz: jax.Array | None = None,
               bilinear: bool | jax.Array = False) -> jax.Array:
    """Returns y [B, h * s, w * s, out_channels] in [0, 1].

    Args:
      x_BxhxwxC: the LR image.
      z_Bxhxwxcz: the latent code at the LR resolution, or None (no code input).
      bilinear: upsampling mode, nearest (False) or bilinear (True); may be traced.
    """
    num_up = int(round(math.log2(self.upsample_factor)))
    if 2**num_up != self.upsample_factor:
      raise ValueError(f"upsample_factor must be a power of 2, got {self.upsample_factor}")
    h = registry.concat_code(x_BxhxwxC, z_Bxhxwxcz)
    h = h.astype(self.dtype)
    first = _conv(self.features, "conv_first", dtype=self.dtype)(h)
    # Initialisation draws the same parameters either way; rolled, it compiles fast.
    unroll = 1 if self.is_initializing() else (self.unroll or self.num_blocks)
    # A scan over the RRDBs (parameters stacked on a leading [num_blocks]
    # axis): initialising num_blocks separate copies compiles for minutes on
    # CPU (one threefry per parameter); `unroll` trades compile time for speed.
    trunk, _ = nn.scan(_ScannedRRDB, variable_axes={"params": 0}, split_rngs={"params": True},
                       length=self.num_blocks, unroll=unroll)(self.features, self.growth, self.dense_conv_style,
                                               self.dtype, name="rrdbs")(first, None)
    h = first + _conv(self.features, "conv_trunk", dtype=self.dtype)(trunk)
    for i in range(num_up):
      h = _lrelu(_conv(self.features, f"conv_up{i}", dtype=self.dtype)(upsample2x(h, bilinear)))
    h = _lrelu(_conv(self.features, "conv_hr", dtype=self.dtype)(h))
    if self.global_skip == "none":
      out = _conv(self.out_channels, "conv_last", dtype=self.dtype)(h)
      y = (jnp.tanh(out.astype(jnp.float32)) + 1.0) / 2.0
    else:
      residual = _conv(self.out_channels, "conv_last", dtype=self.dtype, kernel_init=nn.initializers.zeros)(h)
      base = registry.upsample_reference(x_BxhxwxC[..., :self.out_channels], self.upsample_factor,
                                         self.global_skip)
      y = jnp.clip(base + residual.astype(jnp.float32), 0.0, 1.0)
    return consistency.apply(self.consistency, y, x_BxhxwxC)


def concat_kernel(split_params: dict, features: int, growth: int) -> dict:
  """One 'split'-style dense block's parameters -> the 'concat' layout.

  Returns {'convK': {'kernel': [3, 3, features + (K-1) * growth, width_K], 'bias'}}
  for K = 1..5: the kernel conv K applies to the concatenated input.
  """
  widths = [growth] * 4 + [features]
  out = {}
  for k in range(5):
    pieces = []
    for j in range(k + 1):
      kernel = split_params[f"from{j}"]["kernel"]
      start = sum(widths[j:k])
      pieces.append(kernel[..., start:start + widths[k]])
    out[f"conv{k + 1}"] = {"kernel": jnp.concatenate(pieces, axis=2), "bias": split_params[f"bias{k + 1}"]}
  return out


def flops_per_sample(features: int, num_blocks: int, growth: int, in_channels: int, lr_hw: tuple[int, int],
                     upsample_factor: int = 8, out_channels: int = 3) -> float:
  """Multiply-adds x 2 of one forward pass (convolutions only), for benchmarks."""
  h, w = lr_hw
  per_rdb = sum((features + k * growth) * (growth if k < 4 else features) for k in range(5))
  lr = 9 * h * w * (in_channels * features + num_blocks * 3 * per_rdb + features * features)
  hr, up = 0, 0
  num_up = int(round(math.log2(upsample_factor)))
  for i in range(1, num_up + 1):
    up += 9 * h * w * 4**i * features * features
  big = h * w * upsample_factor**2
  hr = 9 * big * (features * features + features * out_channels)
  return 2.0 * (lr + up + hr)


def build(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> RRDBNet:
  """`model.name='rrdb'`: fields features, num_blocks, growth, dense_conv_style, global_skip, consistency."""
  return RRDBNet(out_channels=io.y_shape[-1], features=cfg.features, num_blocks=cfg.num_blocks,
                 growth=cfg.growth, upsample_factor=io.upsample_factor,
                 dense_conv_style=cfg.dense_conv_style, global_skip=io.resolve_global_skip(cfg.global_skip),
                 consistency=cfg.get("consistency", "none"))
