"""pix2pix's networks (Isola et al., 2017): the U-Net generator and the PatchGAN discriminator.

The base network of diversity_loss_yang_liu_cai §III-A / §IV ("the generator
of the Pix2pix"), which feeds its noise as one more input channel (§IV).

  UNet:     x [B, H, W, Cx] (+ code z)          ->  y [B, H, W, Cy] in [0, 1]
  PatchGAN: concat(x, y) [B, H, W, Cx + Cy]     ->  logits [B, h, w, 1]

Architecture (Isola et al. §3.2 and appendix; their Torch code
`defineG_unet` / `defineD_n_layers`, and the PyTorch port's `UnetGenerator` /
`NLayerDiscriminator`): every conv is 4x4 with padding 1, weights drawn from
N(0, 0.02).
  * U-Net with n = num_downs levels. Encoder level i (i = 0..n-1) halves the
    resolution with a stride-2 conv to ngf * min(2^i, 8) channels; it is
    LeakyReLU(0.2) -> conv -> norm, except level 0 (conv only, on the input)
    and the innermost level n-1 (no norm: its map is 1x1 at 256 x 256 with
    n = 8, where a per-map normalisation would output zeros). Decoder level
    i doubles the resolution: ReLU -> stride-2 transposed conv -> norm
    [-> dropout], to ngf * min(2^(i-1), 8) channels, and its output is
    concatenated with encoder level i-1's (the skip); level 0 maps to Cy
    channels and tanh, without norm. With n = 8 and ngf = 64 this is the
    paper's "U-Net 256": C64-C128-C256-C512-C512-C512-C512-C512 down,
    CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128 up (counting the
    concatenated channels).
  * PatchGAN with L = num_layers: conv(ndf, stride 2) -> LeakyReLU, then for
    l = 1..L-1 conv(ndf * min(2^l, 8), stride 2) -> norm -> LeakyReLU, then
    conv(ndf * min(2^L, 8), stride 1) -> norm -> LeakyReLU, then conv(1,
    stride 1). L = 3 is the paper's 70 x 70 PatchGAN, C64-C128-C256-C512
    (`receptive_field`).

Choices where we depart from, or choose between, the references:
  * Output: y = (tanh(o) + 1) / 2, as every generator here (pix2pix's tanh
    image in [-1, 1], moved to [0, 1]).
  * Dropout (rate 0.5) sits in the `dropout_blocks` = 3 decoder levels
    nearest the bottleneck (n-1, n-2, n-3), as in the paper's appendix
    ("CD512-CD1024-CD1024") and the Torch code (d1..d3). The PyTorch port
    puts it one level further out (n-2..n-4), so its num_downs = 5 network
    has no dropout at all; ours keeps three dropout levels at any depth.
    Dropout is pix2pix's only noise ("we provide noise only in the form of
    dropout, applied on several layers of our generator at both training and
    test time", §3.1): `train=True` is the default for sampling too, and the
    method decides (`train=False` gives the deterministic network).
  * Normalisation (`norm`): pix2pix uses batch normalisation with the
    statistics of the current batch at test time too, with batch size 1 in
    most experiments, i.e. instance normalisation (§3.3 says so). 'instance'
    (the default) normalises each example's map per channel over (H, W);
    'batch' uses the current batch's statistics over (B, H, W) per channel,
    at train and test time alike (no running averages); 'none' has no
    normalisation. Both keep a learned scale and offset per channel and
    neither has running state, so `variables` is {'params'} alone and no
    collection is mutable at apply. 'instance' is the default because it is
    the paper's batch-1 setting at any batch size and keeps every example's
    output independent of the rest of the batch: the diversity loss compares
    G(l, 0) with G(l, n), and sample batches and device shards must not leak
    into each other.
  * Biases: a conv has a bias exactly when no normalisation follows it (the
    offset of the normalisation takes its place). The PyTorch port with batch
    norm also drops the biases of the first and the innermost encoder convs,
    which no norm follows; we keep them (576 more parameters at U-Net 256).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.models import registry

NORMS = ("instance", "batch", "none")
_LEAK = 0.2
_KERNEL_INIT = nn.initializers.normal(0.02)  # the reference code's init, after DCGAN
_PADDING = ((1, 1), (1, 1))  # 4x4 conv, padding 1: stride 2 halves the size
# The transpose of a 4x4 stride-2 conv with padding 1 pads the dilated input by
# 4 - 1 - 1 = 2 on each side: the output is exactly twice the input.
_TRANSPOSE_PADDING = ((2, 2), (2, 2))


def _check_norm(norm: str) -> None:
  if norm not in NORMS:
    raise ValueError(f"Unknown pix2pix norm {norm!r}; valid: {list(NORMS)}")


class Normalize(nn.Module):
  """Normalisation with the statistics of the current input (no running state), scale and offset per channel.

  'instance': over (H, W) of each example; 'batch': over (B, H, W); 'none': the identity.
  """
  kind: str = "instance"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_BxHxWxC: jax.Array) -> jax.Array:
    _check_norm(self.kind)
    if self.kind == "none":
      return h_BxHxWxC
    axes = (1, 2) if self.kind == "instance" else (0, 1, 2)
    return nn.LayerNorm(epsilon=1e-5, reduction_axes=axes, feature_axes=-1, dtype=self.dtype,
                        name="norm")(h_BxHxWxC)


class UNet(nn.Module):
  """pix2pix's U-Net generator (module docstring), following the generator convention of `registry`.

  The input's height and width must be divisible by 2^num_downs.

  Attributes:
    out_channels: Cy (3).
    features: ngf, the channels of encoder level 0 (64; a 32 x 64 local
      variant uses 16). Level i has ngf * min(2^i, 8).
    num_downs: n, the number of stride-2 levels (8 for 256 x 256, the paper's
      "U-Net 256"; 5 for 32 x 64).
    norm: 'instance' (default), 'batch' or 'none' (module docstring).
    dropout_rate: the dropout rate of the `dropout_blocks` decoder levels
      nearest the bottleneck (0.5; 0 removes the dropout).
    dropout_blocks: how many decoder levels, from the innermost out, have dropout (3).
    dtype: computation dtype (parameters stay float32; the output is float32).
  """
  out_channels: int = 3
  features: int = 64
  num_downs: int = 8
  norm: str = "instance"
  dropout_rate: float = 0.5
  dropout_blocks: int = 3
  dtype: Any = jnp.float32

  def level_features(self, i: int) -> int:
    """Channels of encoder level i's output (= decoder level i + 1's)."""
    return self.features * min(2**i, 8)

  def check_input_shape(self, x_shape: tuple[int, ...]) -> None:
    """Raises unless one input's (H, W, ...) is divisible by 2^num_downs and the fields are valid."""
    _check_norm(self.norm)
    if self.num_downs < 1 or not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"pix2pix UNet needs num_downs >= 1 and dropout_rate in [0, 1), got {self.num_downs} "
                       f"and {self.dropout_rate}.")
    factor = 2**self.num_downs
    if x_shape[0] % factor or x_shape[1] % factor:
      raise ValueError(f"pix2pix UNet with num_downs={self.num_downs} needs a height and width divisible by "
                       f"{factor}, but the input is {x_shape[0]}x{x_shape[1]}.")

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, z: jax.Array | None = None, *, train: bool = True,
               paired_dropout: bool = False) -> jax.Array:
    """y [B, H, W, out_channels] in [0, 1].

    Args:
      x_BxHxWxC: the input (a one-hot layout), H and W divisible by 2^num_downs.
      z: an optional code concatenated to x's channels (`registry.concat_code`):
        [B, H, W, Cz], or a vector [B, Dz] broadcast over space.
      train: dropout on (draws from the 'dropout' rng) when True, the default
        for sampling too (class docstring); False gives the deterministic net.
      paired_dropout: the batch is two halves of the same size that share one
        dropout mask (the diversity loss's G(l, n) and G(l, 0), Yang et al.
        Alg. 1: the pair differs by the noise only).
    """
    self.check_input_shape(x_BxHxWxC.shape[1:])
    n = self.num_downs
    conv = lambda features, use_bias, name: nn.Conv(
        features, (4, 4), strides=(2, 2), padding=_PADDING, use_bias=use_bias, kernel_init=_KERNEL_INIT,
        dtype=self.dtype, name=name)
    up_conv = lambda features, use_bias, name: nn.ConvTranspose(
        features, (4, 4), strides=(2, 2), padding=_TRANSPOSE_PADDING, use_bias=use_bias,
        kernel_init=_KERNEL_INIT, dtype=self.dtype, name=name)
    has_norm = lambda i: self.norm != "none" and 0 < i < n - 1  # encoder levels 0 and n-1 have none

    h = registry.concat_code(x_BxHxWxC, z).astype(self.dtype)
    skips = []
    for i in range(n):
      if i > 0:
        h = nn.leaky_relu(h, _LEAK)
      h = conv(self.level_features(i), not has_norm(i), f"down{i}")(h)
      if has_norm(i):
        h = Normalize(self.norm, self.dtype, name=f"down{i}_norm")(h)
      skips.append(h)

    for i in reversed(range(n)):
      if i < n - 1:  # every level but the innermost reads the level below and its skip
        h = jnp.concatenate([h, skips[i]], axis=-1)
      h = nn.relu(h)
      if i == 0:
        h = up_conv(self.out_channels, True, "up0")(h)
        break
      h = up_conv(self.level_features(i - 1), self.norm == "none", f"up{i}")(h)
      h = Normalize(self.norm, self.dtype, name=f"up{i}_norm")(h)
      if i >= n - self.dropout_blocks and self.dropout_rate > 0:
        if paired_dropout:  # one mask [B/2, ...] for both halves (Dropout of ones = mask / keep rate)
          keep = nn.Dropout(self.dropout_rate, deterministic=not train)(jnp.ones_like(h[:h.shape[0] // 2]))
          h = h * jnp.concatenate([keep, keep])
        else:
          h = nn.Dropout(self.dropout_rate, deterministic=not train)(h)
    return (jnp.tanh(h.astype(jnp.float32)) + 1.0) / 2.0


def receptive_field(num_layers: int) -> int:
  """The receptive field (pixels, per side) of one PatchGAN logit: 70 for 3 layers, 34 for 2, 16 for 1.

  All L + 2 convs are 4x4; the first L have stride 2, the last two stride 1.
  A k x k conv widens the field by (k - 1) times the product of the strides
  before it: 1 + 3 (1 + 2 + ... + 2^(L-1) + 2^L + 2^L) = 3 (2^(L+1) + 2^L - 1) + 1.
  """
  if num_layers < 1:
    raise ValueError(f"PatchGAN needs num_layers >= 1, got {num_layers}.")
  return 3 * (2**(num_layers + 1) + 2**num_layers - 1) + 1


class PatchGAN(nn.Module):
  """pix2pix's PatchGAN discriminator D(x, y) (module docstring): one logit per overlapping patch.

  Each logit sees a `receptive_field(num_layers)`-pixel square of the input
  (70 x 70 for 3 layers). The output is the logit, without the sigmoid: the
  method applies the logistic loss. At 256 x 256 with 3 layers it is 30 x 30;
  in general each stride-2 conv maps a size s to s // 2 and each stride-1
  conv to s - 1 (`output_size`).

  Attributes:
    features: ndf, the first layer's channels (64); layer l has ndf * min(2^l, 8).
    num_layers: L, the number of stride-2 convs (3).
    norm: 'instance' (default), 'batch' or 'none' (module docstring).
    dtype: computation dtype (parameters stay float32; the logits are float32).
  """
  features: int = 64
  num_layers: int = 3
  norm: str = "instance"
  dtype: Any = jnp.float32

  @property
  def layers(self) -> list[tuple[int, int, bool]]:
    """(features, stride, normalised) of each 4x4 conv, the last one emitting the logit."""
    width = lambda l: self.features * min(2**l, 8)
    layers = [(width(0), 2, False)]
    layers += [(width(l), 2, True) for l in range(1, self.num_layers)]
    return layers + [(width(self.num_layers), 1, True), (1, 1, False)]

  def check_input_shape(self, xy_shape: tuple[int, ...]) -> None:
    """Raises unless the fields are valid and an input of shape (H, W, ...) gives a non-empty logit map."""
    _check_norm(self.norm)
    receptive_field(self.num_layers)
    out_hw = (self.output_size(xy_shape[0]), self.output_size(xy_shape[1]))
    if min(out_hw) < 1:
      raise ValueError(f"PatchGAN with num_layers={self.num_layers} outputs a {out_hw[0]}x{out_hw[1]} map for "
                       f"{xy_shape[0]}x{xy_shape[1]} inputs: use fewer layers or larger inputs.")

  def output_size(self, size: int) -> int:
    """The logit map's size along an axis of `size` input pixels."""
    for _, stride, _ in self.layers:
      size = size // 2 if stride == 2 else size - 1
    return size

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, y_BxHxWxC: jax.Array | None = None) -> jax.Array:
    """logits [B, h, w, 1] of D(x, y); with y None, x is the concatenation (x, y) itself."""
    h = x_BxHxWxC if y_BxHxWxC is None else jnp.concatenate(
        [x_BxHxWxC, y_BxHxWxC.astype(x_BxHxWxC.dtype)], axis=-1)
    self.check_input_shape(h.shape[1:])
    h = h.astype(self.dtype)
    last = len(self.layers) - 1
    for l, (features, stride, normalised) in enumerate(self.layers):
      normalised = normalised and self.norm != "none"
      h = nn.Conv(features, (4, 4), strides=(stride, stride), padding=_PADDING, use_bias=not normalised,
                  kernel_init=_KERNEL_INIT, dtype=self.dtype, name=f"conv{l}")(h)
      if l == last:
        break
      if normalised:
        h = Normalize(self.norm, self.dtype, name=f"norm{l}")(h)
      h = nn.leaky_relu(h, _LEAK)
    return h.astype(jnp.float32)


def build_unet(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> UNet:
  """`model.name='unet'`: fields features, num_downs, norm, dropout_rate.

  x and y must have the same spatial size, divisible by 2^num_downs. The
  method chooses the code (none here; `io.code_shape`, if any, must be a
  vector (D,) or a spatial code (H, W, c) at x's size, e.g. the diversity
  loss's one noise channel).
  """
  if tuple(io.x_shape[:2]) != tuple(io.y_shape[:2]):
    raise ValueError(f"unet maps an input to an output of the same size, but x is "
                     f"{io.x_shape[0]}x{io.x_shape[1]} and y is {io.y_shape[0]}x{io.y_shape[1]}.")
  code = tuple(io.code_shape)
  if not (len(code) <= 1 or (len(code) == 3 and code[:2] == tuple(io.x_shape[:2]))):
    raise ValueError(f"unet takes a code z of shape [B, D] or [B, {io.x_shape[0]}, {io.x_shape[1]}, c] "
                     f"(concatenated to x's channels), but the method feeds one of shape {list(code)}.")
  model = UNet(out_channels=io.y_shape[-1], features=cfg.features, num_downs=cfg.num_downs, norm=cfg.norm,
               dropout_rate=cfg.dropout_rate)
  model.check_input_shape(io.x_shape)
  return model


def build_patchgan(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> PatchGAN:
  """`discriminator.name='patchgan'`: fields features, num_layers, norm. It reads concat(x, y) at x's size."""
  if tuple(io.x_shape[:2]) != tuple(io.y_shape[:2]):
    raise ValueError(f"patchgan reads concat(x, y), which needs x and y of the same size, but x is "
                     f"{io.x_shape[0]}x{io.x_shape[1]} and y is {io.y_shape[0]}x{io.y_shape[1]}.")
  model = PatchGAN(features=cfg.features, num_layers=cfg.num_layers, norm=cfg.norm)
  model.check_input_shape(io.x_shape)
  return model
