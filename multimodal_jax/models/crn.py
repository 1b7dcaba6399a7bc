"""The Cascaded Refinement Network (Chen & Koltun, 2017) with cIMLE's noise inputs.

cimle_semantic_layouts_iccv2019 §3.3: the generator of conditional IMLE on
semantic layouts is CRN (§3.3.1) turned into an implicit model by extra noise
input channels, optionally produced by a noise encoder (§3.3.2).

  label map x [B, H, W, C] (one-hot) (+ code z)  ->  image y [B, H, W, Cy] in [0, 1]
                                                  (or k images [B, k, H, W, Cy])

Choices where the paper is silent, or where we depart from it:
  * Layer normalisation (§3.3.1 "layer normalization"): statistics over
    (H, W, C) of each example, learned scale and offset per channel. That is
    what CRN's released TensorFlow code does (`slim.layer_norm`'s defaults:
    begin_norm_axis=1, begin_params_axis=-1); normalising each pixel over its
    channels only would also erase how strongly a pixel responds relative to
    its neighbours. The convolutions keep their biases (slim drops them when a
    normaliser follows); a per-channel bias is not absorbed by a normalisation
    whose mean is taken over all channels, and costs 1/(9 C_in) of a kernel.
  * Resizing: `jax.image.resize(..., 'bilinear')`, whose downsampling is
    antialiased (a triangle filter as wide as the scale, like the area
    averaging of CRN's code): a one-hot map reduced 64x by point-sampling
    bilinear interpolation would keep only 2x2 of every 64x64 pixels. The x2
    upsampling of features is the half-pixel bilinear `rrdb.upsample2x`.
  * Output: CRN maps the last features to the image with a linear 1x1 conv;
    we squash it into [0, 1] as every generator here: y = (tanh(o) + 1) / 2
    (as `rrdb`).
  * Noise encoder input (`noise_encoder_code`): cimle_srim_ijcv §5.2.5 gives
    it for GTA-5 at 256 x 512: a code z~ of 256 x 512 x 10 and the label map
    (256 x 512 x 30 there; data/street_layouts.py has 20 classes) in, the
    encoded z' of 256 x 512 x 10 out, hidden width 100. That is 'full': z is
    [B, H, W, e] at the label map's resolution and the encoder runs there, with
    no resize. The ICCV'19 paper says only "noise sampled from a Gaussian",
    forced onto "a low-dimensional manifold" (§3.3.2), and "10 noise
    channels" (§4.2); IJCV §5.2.1 calls z~ "lower-dimensional", though §5.2.5's
    z~ is as large as z'. For the local toy data, two low-dimensional codes:
    'spatial', at M0's resolution (4 x 8 x e), and 'vector', one e-vector per
    example broadcast over M0's grid, for an appearance that is one property
    of the whole image (a palette): no receptive field has to agree across
    independent spatial draws. Both run the encoder at M0's resolution and
    upsample its output bilinearly to the label map's.
  * Noise encoder output (`noise_encoder_output_gain` g): the paper's
    encoder ends in a linear conv (g = 0, the default). With g > 0 we bound it,
    z_hat = tanh(g E(L, z)). Why: with a linear output, leaky ReLU, and
    layer norm over each example's features, the network is close to
    positively homogeneous in z, so the output depends mostly on z's
    direction. On toy_scenes the code plane then decodes as a fan of wedges.
    Between each pair of wedges lies a blended band that takes the same share
    of every circle, and the same share of N(0, I) (experiments/results/layout_imle.md:
    precision 0.85 / 0.89 / 0.88 at radius 0.3 / 1 / 2). A saturating output
    makes the encoded noise nearly constant wherever every channel is
    saturated, so each cell is flat. A transition is then a strip about
    1 / (g |grad E|) wide, and it narrows as |z| grows.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.models import registry
from multimodal_jax.models import rrdb

_LEAK = 0.2
# `CRN.noise_encoder_code`: where the noise encoder's Gaussian code lives (module docstring).
NOISE_ENCODER_CODES = ("full", "spatial", "vector")
# §3.3.1: channels of F_0..F_8 for 1024 x 2048 outputs (M0 at 4 x 8). At the
# IMLE paper's 256 x 512 the network is M0..M6: the first seven entries.
PAPER_FEATURES = (1024,) * 5 + (512, 512, 128, 32)


def _lrelu(h: jax.Array) -> jax.Array:
  return nn.leaky_relu(h, _LEAK)


def _resize(a_BxHxWxC: jax.Array, hw: tuple[int, int]) -> jax.Array:
  """Bilinear resize to hw (antialiased when shrinking); the identity at the same size."""
  if tuple(a_BxHxWxC.shape[1:3]) == tuple(hw):
    return a_BxHxWxC
  return jax.image.resize(a_BxHxWxC, (a_BxHxWxC.shape[0], *hw, a_BxHxWxC.shape[-1]), "bilinear")


class RefinementModule(nn.Module):
  """One CRN module M_i (§3.3.1): two 3x3 convs, each followed by layer norm and leaky ReLU (0.2).

  The layer norm takes its statistics over (H, W, C) per example and has a
  scale and offset per channel (module docstring).
  """
  features: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_BxHxWxC: jax.Array) -> jax.Array:
    h = h_BxHxWxC
    for j in (1, 2):
      h = nn.Conv(self.features, (3, 3), dtype=self.dtype, name=f"conv{j}")(h)
      h = nn.LayerNorm(reduction_axes=(1, 2, 3), feature_axes=-1, dtype=self.dtype, name=f"norm{j}")(h)
      h = _lrelu(h)
    return h


class NoiseEncoder(nn.Module):
  """§3.3.2 "Noise Encoder": z_hat = E(L, z), a 3-layer conv net on concat(L, z).

  It runs at the code's resolution (h, w): the label map is resized to (h, w)
  and concatenated with z; 3x3 convs of `features` channels with leaky ReLU,
  then a linear 3x3 conv to `out_channels` = d (squashed by tanh(output_gain
  * .) when output_gain > 0, module docstring); the result is upsampled
  bilinearly to the label map's (H, W). A code at the label map's resolution
  (cimle_srim_ijcv §5.2.5, 'full') is never resized: `_resize` returns its
  input unchanged at equal size.
  """
  features: int
  out_channels: int
  output_gain: float = 0.0
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, label_BxHxWxC: jax.Array, z_Bxhxwxe: jax.Array) -> jax.Array:
    """z_hat [B, H, W, out_channels]; z is [B, h, w, e]: (h, w) = (H, W) ('full'), M_0's grid ('spatial',
    or a vector broadcast over it)."""
    code_hw = z_Bxhxwxe.shape[1:3]
    h = jnp.concatenate([_resize(label_BxHxWxC, code_hw), z_Bxhxwxe.astype(label_BxHxWxC.dtype)], axis=-1)
    h = _lrelu(nn.Conv(self.features, (3, 3), dtype=self.dtype, name="conv1")(h))
    h = _lrelu(nn.Conv(self.features, (3, 3), dtype=self.dtype, name="conv2")(h))
    z_hat = nn.Conv(self.out_channels, (3, 3), dtype=self.dtype, name="conv3")(h)
    if self.output_gain > 0:
      z_hat = jnp.tanh(self.output_gain * z_hat)
    return _resize(z_hat, label_BxHxWxC.shape[1:3])


class CRN(nn.Module):
  """CRN (cimle_semantic_layouts §3.3.1) with noise channels and noise encoder (§3.3.2).

  Modules M_0..M_{n-1}, n = len(features): M_i works at (base_height 2^i,
  base_width 2^i) and outputs F_i with features[i] channels. M_0's input is
  L^ resized to its resolution; M_i's is concat(L^ resized to its resolution,
  F_{i-1} upsampled x2). A 1x1 conv maps F_{n-1} to num_outputs images. The
  label map must be at the last module's resolution, base * 2^(n-1) exactly.

  L^ and the code z (`code_shape` gives z's shape for one example):
    * noise_channels d = 0: L^ = L, plain CRN; z is ignored (may be None).
    * d > 0, noise_encoder=False ("Additional Noise Channels"): z is
      [B, H, W, d] at the label map's resolution (or a vector [B, d],
      broadcast over space as `registry.concat_code` does); L^ = concat(L, z).
    * d > 0, noise_encoder=True ("Noise Encoder"): z is Gaussian noise,
      [B, H, W, e] at the label map's resolution (noise_encoder_code='full',
      cimle_srim_ijcv §5.2.5), [B, base_height, base_width, e] at M_0's
      resolution ('spatial') or a vector [B, e] broadcast over M_0's grid
      ('vector'), e = noise_encoder_input_channels; z_hat = NoiseEncoder(L, z)
      [B, H, W, d] (sown as intermediates/noise_encoder_output) and
      L^ = concat(L, z_hat).
  With d > 0, z is required (z = 0 gives the deterministic network).

  Attributes:
    out_channels: channels of each output image (3).
    features: channels of F_0..F_{n-1}, one entry per module. The paper's
      (§3.3.1) `PAPER_FEATURES` are for 9 modules (1024 x 2048 from 4 x 8);
      256 x 512 uses its first seven.
    base_height, base_width: M_0's resolution (4 x 8 in the paper).
    noise_channels: d, noise channels concatenated to the label map (10 in §4.2).
    noise_encoder: whether z goes through the noise encoder first.
    encoder_features: width of the noise encoder's hidden convs (100).
    noise_encoder_input_channels: e, channels of the encoder's Gaussian input
      (10 in cimle_srim_ijcv §5.2.5; the ICCV'19 paper does not give it).
    noise_encoder_code: 'full' (z at the label map's resolution, IJCV §5.2.5),
      'spatial' (z at M_0's resolution) or 'vector' (one e-vector per example);
      module docstring.
    noise_encoder_output_gain: g; 0 keeps the paper's linear encoder output,
      g > 0 gives z_hat = tanh(g E(L, z)) (module docstring).
    num_outputs: k; k > 1 is Chen & Koltun's multi-output baseline (one 1x1
      conv emitting k images), returned as [B, k, H, W, out_channels].
    dtype: computation dtype (parameters stay float32; the output is float32).
  """
  out_channels: int = 3
  features: Sequence[int] = PAPER_FEATURES[:7]
  base_height: int = 4
  base_width: int = 8
  noise_channels: int = 0
  noise_encoder: bool = False
  encoder_features: int = 100
  noise_encoder_input_channels: int = 4
  noise_encoder_code: str = "spatial"
  noise_encoder_output_gain: float = 0.0
  num_outputs: int = 1
  dtype: Any = jnp.float32

  @property
  def resolutions(self) -> list[tuple[int, int]]:
    """(h_i, w_i) of M_0..M_{n-1}."""
    return [(self.base_height * 2**i, self.base_width * 2**i) for i in range(len(self.features))]

  def _check_noise_encoder_code(self) -> None:
    if self.noise_encoder_code not in NOISE_ENCODER_CODES:
      raise ValueError(f"CRN noise_encoder_code must be one of {', '.join(map(repr, NOISE_ENCODER_CODES))}, got "
                       f"{self.noise_encoder_code!r}.")

  def check_label_shape(self, x_shape: Sequence[int]) -> None:
    """Raises unless one label map's (H, W, ...) is the last module's resolution."""
    if not self.features:
      raise ValueError("CRN needs at least one module: `features` is empty.")
    self._check_noise_encoder_code()
    if not self.noise_encoder_output_gain >= 0:
      raise ValueError(f"CRN noise_encoder_output_gain must be >= 0 (0: a linear encoder output), got "
                       f"{self.noise_encoder_output_gain}.")
    if self.num_outputs < 1 or self.noise_channels < 0:
      raise ValueError(f"CRN needs num_outputs >= 1 and noise_channels >= 0, got {self.num_outputs} and "
                       f"{self.noise_channels}.")
    out_hw = self.resolutions[-1]
    if tuple(x_shape[:2]) != out_hw:
      raise ValueError(
          f"CRN with {len(self.features)} modules from a {self.base_height}x{self.base_width} base outputs "
          f"{out_hw[0]}x{out_hw[1]} (base * 2^{len(self.features) - 1}), but the label map is "
          f"{x_shape[0]}x{x_shape[1]}: change the number of `features` entries or base_height/base_width.")

  def code_shape(self, x_shape: Sequence[int]) -> tuple[int, ...]:
    """The shape of one example's code z for a label map of shape x_shape = (H, W, C); () for none."""
    if self.noise_channels == 0:
      return ()
    if not self.noise_encoder:
      return (*x_shape[:2], self.noise_channels)
    self._check_noise_encoder_code()
    if self.noise_encoder_code == "full":
      return (*x_shape[:2], self.noise_encoder_input_channels)
    if self.noise_encoder_code == "vector":
      return (self.noise_encoder_input_channels,)
    return (self.base_height, self.base_width, self.noise_encoder_input_channels)

  def check_code_shape(self, x_shape: Sequence[int], code_shape: Sequence[int] | None) -> None:
    """Raises unless one example's code (None: no code) fits a label map of shape x_shape."""
    expected = self.code_shape(x_shape)
    accepted = [expected]
    if self.noise_channels and not self.noise_encoder:
      accepted.append((self.noise_channels,))  # a vector, broadcast over space
    if not expected:
      return  # plain CRN: any code is ignored
    if code_shape is None or tuple(code_shape) not in accepted:
      encoder = f", noise_encoder_code={self.noise_encoder_code!r}" if self.noise_encoder else ""
      raise ValueError(f"CRN with noise_channels={self.noise_channels}, noise_encoder={self.noise_encoder}{encoder} "
                       f"takes a code z of shape [B, {', '.join(map(str, expected))}] for label maps "
                       f"{tuple(x_shape)}; got {'none' if code_shape is None else list(code_shape)}.")

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, z: jax.Array | None = None) -> jax.Array:
    """y [B, H, W, out_channels] in [0, 1] ([B, k, H, W, out_channels] for num_outputs k > 1).

    Args:
      x_BxHxWxC: the (one-hot) label map at the output resolution.
      z: the code (class docstring), or None when noise_channels = 0.
    """
    self.check_label_shape(x_BxHxWxC.shape[1:])
    x = x_BxHxWxC.astype(self.dtype)
    if self.noise_channels:
      self.check_code_shape(x.shape[1:], None if z is None else z.shape[1:])
      if self.noise_encoder:
        if z.ndim == 2:  # a vector code: broadcast over M_0's grid
          z = jnp.broadcast_to(z[:, None, None, :], (z.shape[0], self.base_height, self.base_width, z.shape[-1]))
        z = NoiseEncoder(self.encoder_features, self.noise_channels, self.noise_encoder_output_gain, self.dtype,
                         name="noise_encoder")(x, z)
        self.sow("intermediates", "noise_encoder_output", z)
      x = registry.concat_code(x, z.astype(self.dtype))
    f = None
    for i, (hw, width) in enumerate(zip(self.resolutions, self.features)):
      label = _resize(x, hw)
      h = label if f is None else jnp.concatenate([label, rrdb.upsample2x(f, True)], axis=-1)
      f = RefinementModule(width, self.dtype, name=f"M{i}")(h)
    out = nn.Conv(self.out_channels * self.num_outputs, (1, 1), dtype=self.dtype, name="to_image")(f)
    y = (jnp.tanh(out.astype(jnp.float32)) + 1.0) / 2.0
    if self.num_outputs == 1:
      return y
    b, h, w, _ = y.shape
    return jnp.moveaxis(y.reshape(b, h, w, self.num_outputs, self.out_channels), 3, 1)


def _from_config(cfg: ml_collections.ConfigDict, out_channels: int) -> CRN:
  return CRN(out_channels=out_channels, features=tuple(int(f) for f in cfg.features),
             base_height=cfg.base_height, base_width=cfg.base_width, noise_channels=cfg.noise_channels,
             noise_encoder=cfg.noise_encoder, encoder_features=cfg.encoder_features,
             noise_encoder_input_channels=cfg.noise_encoder_input_channels,
             noise_encoder_code=cfg.get("noise_encoder_code", "spatial"),
             noise_encoder_output_gain=cfg.get("noise_encoder_output_gain", 0.0), num_outputs=cfg.num_outputs)


def code_shape(cfg: ml_collections.ConfigDict, x_shape: Sequence[int]) -> tuple[int, ...]:
  """The code shape (one example) that the `crn` built from `cfg` takes for label maps x_shape = (H, W, C).

  For a method that must know what to draw before building the model: () (no
  code), (H, W, d) (noise channels), or for the noise encoder (H, W, e)
  ('full'), (base_height, base_width, e) ('spatial') or (e,) ('vector'),
  e = noise_encoder_input_channels.
  """
  return _from_config(cfg, out_channels=1).code_shape(x_shape)


def build(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> CRN:
  """`model.name='crn'`: fields features, base_height, base_width, noise_channels, noise_encoder,
  noise_encoder_input_channels, noise_encoder_code (optional, 'spatial'; `NOISE_ENCODER_CODES`),
  noise_encoder_output_gain (optional, 0), encoder_features, num_outputs.

  The label map (x) and the image (y) must have the same spatial size, equal to
  the last module's resolution, and `io.code_shape` must be what the network
  takes (`code_shape`: () when noise_channels = 0).
  """
  if tuple(io.x_shape[:2]) != tuple(io.y_shape[:2]):
    raise ValueError(f"crn maps a label map to an image of the same size, but x is "
                     f"{io.x_shape[0]}x{io.x_shape[1]} and y is {io.y_shape[0]}x{io.y_shape[1]}.")
  model = _from_config(cfg, out_channels=io.y_shape[-1])
  model.check_label_shape(io.x_shape)
  expected = model.code_shape(io.x_shape)
  if tuple(io.code_shape) != expected:
    model.check_code_shape(io.x_shape, io.code_shape or None)
    if not expected:
      raise ValueError(f"crn with noise_channels=0 takes no code, but the method feeds one of shape "
                       f"{tuple(io.code_shape)}: set model.noise_channels > 0.")
  return model
