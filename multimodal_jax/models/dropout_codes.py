"""Multi-branch generators of latent drop-out codes (latent_dropout_codes_he_schiele_fritz_eccv2018 §3.1, §3.3).

One network produces n hypotheses of one input, Y_i = f2(f1(X), d(z_i))
(Eq. 1). Three architectures of Fig. 3, all built from the CRN's refinement
modules (models/crn.py; the paper's backbone is "CRN-style"), with the split
after module M_{split_at}:

  * 'shared' (the paper's model): one set of parameters; channel-wise dropout
    (Eq. 2) on F_{split_at}: a code z in U(0, 1)^C (C = features[split_at])
    gives the mask d(z)_c = 1[z_c > r], the same at every location, and
    O = F * d(z) / (1 - r). n fixed codes are used in training; any number of
    new codes at test time (`code_shape` = (C,)).
  * 'separate' ("early split with separate parameters"): n copies of f2 with
    their own parameters after the same split, no dropout; exactly n outputs.
  * 'late_split' (CRN's multi-output head, Chen & Koltun): one network, n
    images from its last 1x1 conv: `crn.CRN(num_outputs=n)`.

Calling convention (registry kind `BRANCHED`):

    module.apply(variables, x_BxHxWxC, z=None) -> y [B, N, H, W, Cy] in [0, 1]

'shared' takes codes z [B, N, C] (N codes per example) or [N, C] (the same N
codes for every example) and returns one image per code; 'separate' and
'late_split' take no code and return their n outputs (N = n).
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.models import crn
from multimodal_jax.models import registry
from multimodal_jax.models import rrdb

ARCHITECTURES = ("shared", "separate", "late_split")


def channel_dropout(f_BxHxWxC: jax.Array, z_BxC: jax.Array, rate: float) -> jax.Array:
  """Eq. 2: O(c, h, w) = I(c, h, w) * 1[z_c > r] / (1 - r), one mask per example for all locations.

  A code z [B, H, W, C] (one entry per location: `dropout_mode='element'`)
  gives ordinary element-wise dropout instead, the comparison of §4.2 / Fig. 9.
  """
  keep = (z_BxC > rate).astype(f_BxHxWxC.dtype)
  return f_BxHxWxC * (keep[:, None, None, :] if keep.ndim == 2 else keep) / (1.0 - rate)


class Cascade(nn.Module):
  """CRN modules M_start..M_{stop-1}: each takes concat(label resized, previous features upsampled x2)."""
  features: Sequence[int]
  base_height: int
  base_width: int
  start: int
  stop: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, label_BxHxWxC: jax.Array, f: jax.Array | None) -> jax.Array:
    for i in range(self.start, self.stop):
      hw = (self.base_height * 2**i, self.base_width * 2**i)
      label = crn._resize(label_BxHxWxC, hw)  # pylint: disable=protected-access
      h = label if f is None else jnp.concatenate([label, rrdb.upsample2x(f, True)], axis=-1)
      f = crn.RefinementModule(self.features[i], self.dtype, name=f"M{i}")(h)
    return f


class Head(nn.Module):
  """f2 of one branch: modules M_{split_at+1}.. and the 1x1 conv to the image in [0, 1]."""
  features: Sequence[int]
  base_height: int
  base_width: int
  start: int
  out_channels: int
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, label_BxHxWxC: jax.Array, f: jax.Array) -> jax.Array:
    f = Cascade(self.features, self.base_height, self.base_width, self.start, len(self.features), self.dtype,
                name="cascade")(label_BxHxWxC, f)
    out = nn.Conv(self.out_channels, (1, 1), dtype=self.dtype, name="to_image")(f)
    return (jnp.tanh(out.astype(jnp.float32)) + 1.0) / 2.0


class _HeadStep(Head):
  """A Head as the body of nn.scan over branches: ((label, f), _) -> ((label, f), image)."""

  def __call__(self, carry, _):  # pylint: disable=arguments-differ
    return carry, Head.__call__(self, *carry)


class BranchedCRN(nn.Module):
  """The 'shared' and 'separate' architectures (module docstring); 'late_split' is `crn.CRN`.

  Attributes:
    out_channels: channels of each image.
    features: channels of F_0..F_{n-1}, one per CRN module (M_0 at base resolution).
    base_height, base_width: M_0's resolution; the label map must be at
      the last module's, base * 2^(len(features) - 1).
    architecture: 'shared' or 'separate'.
    split_at: the split follows module M_{split_at} (0 <= split_at < len(features)).
    num_branches: n: the training codes ('shared') or the branches ('separate').
    dropout_rate: r of Eq. 2 ('shared').
    dropout_mode: 'channel' (Eq. 2: a code of C entries, one per channel) or
      'element' (ordinary dropout driven by a code of h x w x C entries, one
      per feature of F_{split_at}: the paper's Fig. 9 comparison).
  """
  out_channels: int = 3
  features: Sequence[int] = (64, 64, 48, 32)
  base_height: int = 4
  base_width: int = 8
  architecture: str = "shared"
  split_at: int = 1
  num_branches: int = 16
  dropout_rate: float = 0.5
  dropout_mode: str = "channel"
  dtype: Any = jnp.float32

  @property
  def code_channels(self) -> int:
    return int(self.features[self.split_at])

  @property
  def code_shape(self) -> tuple[int, ...]:
    """One output's code: (C,) for channel-wise dropout, (h, w, C) at F_{split_at}'s resolution for element-wise."""
    if self.dropout_mode == "element":
      return (self.base_height * 2**self.split_at, self.base_width * 2**self.split_at, self.code_channels)
    return (self.code_channels,)

  def check(self, x_shape: Sequence[int]) -> None:
    """Raises (one line) unless the settings and one label map's shape (H, W, C) fit."""
    if self.architecture not in ("shared", "separate"):
      raise ValueError(f"BranchedCRN architecture must be 'shared' or 'separate', got {self.architecture!r}.")
    if not 0 <= self.split_at < len(self.features):
      raise ValueError(f"split_at must be in [0, {len(self.features)}) (a module index), got {self.split_at}.")
    if self.dropout_mode not in ("channel", "element"):
      raise ValueError(f"dropout_mode must be 'channel' or 'element', got {self.dropout_mode!r}.")
    if self.num_branches < 1 or not 0.0 <= self.dropout_rate < 1.0:
      raise ValueError(f"num_branches must be >= 1 and dropout_rate in [0, 1); got {self.num_branches} and "
                       f"{self.dropout_rate}.")
    crn.CRN(features=self.features, base_height=self.base_height, base_width=self.base_width,
            parent=None).check_label_shape(x_shape)

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array, z: jax.Array | None = None) -> jax.Array:
    """[B, N, H, W, out_channels]; z: codes [B, N, C] or [N, C] ('shared'), None ('separate')."""
    self.check(x_BxHxWxC.shape[1:])
    x = x_BxHxWxC.astype(self.dtype)
    b = x.shape[0]
    f1 = Cascade(self.features, self.base_height, self.base_width, 0, self.split_at + 1, self.dtype,
                 name="trunk")(x, None)
    head_args = (self.features, self.base_height, self.base_width, self.split_at + 1, self.out_channels,
                 self.dtype)
    if self.architecture == "shared":
      code = self.code_shape
      shape = ", ".join(map(str, code))
      if z is None or z.ndim - len(code) not in (1, 2) or tuple(z.shape[z.ndim - len(code):]) != code:
        raise ValueError(f"The 'shared' architecture takes codes z of shape [B, N, {shape}] or [N, {shape}]; "
                         f"got {None if z is None else tuple(z.shape)}.")
      z_BxNx = jnp.broadcast_to(z, (b,) + z.shape) if z.ndim == len(code) + 1 else z
      n = z_BxNx.shape[1]
      # Every (example, code) pair is one row of a [B N] batch through f2.
      f = channel_dropout(jnp.repeat(f1, n, axis=0), z_BxNx.reshape((b * n,) + code), self.dropout_rate)
      y = Head(*head_args, name="head")(jnp.repeat(x, n, axis=0), f)
      return y.reshape((b, n) + y.shape[1:])
    if z is not None:
      raise ValueError("The 'separate' architecture has a fixed set of branches and takes no code.")
    # n heads with stacked parameters ([n, ...] per leaf), applied one after another: an unrolled
    # scan. nn.vmap gave the same parameters but batched the kernels into grouped convolutions,
    # which XLA:CPU ran 66x slower (a training step of the default: 14.3 s against 0.22 s).
    heads = nn.scan(_HeadStep, variable_axes={"params": 0}, split_rngs={"params": True}, length=self.num_branches,
                    out_axes=1, unroll=self.num_branches)
    _, y_BxNxHxWxC = heads(*head_args, name="heads")((x, f1), None)
    return y_BxNxHxWxC


def build(cfg: ml_collections.ConfigDict, io: registry.ModelIO) -> nn.Module:
  """`model.name='dropout_crn'`: fields architecture, features, base_height, base_width, split_at,
  num_branches, dropout_rate, dropout_mode (optional, 'channel') ('late_split': a `crn.CRN` with num_outputs = num_branches)."""
  if tuple(io.x_shape[:2]) != tuple(io.y_shape[:2]):
    raise ValueError(f"dropout_crn maps a label map to an image of the same size, but x is "
                     f"{io.x_shape[0]}x{io.x_shape[1]} and y is {io.y_shape[0]}x{io.y_shape[1]}.")
  if cfg.architecture not in ARCHITECTURES:
    raise ValueError(f"model.architecture must be one of {ARCHITECTURES}, got {cfg.architecture!r}.")
  features = tuple(int(f) for f in cfg.features)
  if cfg.architecture == "late_split":
    model = crn.CRN(out_channels=io.y_shape[-1], features=features, base_height=cfg.base_height,
                    base_width=cfg.base_width, num_outputs=cfg.num_branches)
    model.check_label_shape(io.x_shape)
    return model
  model = BranchedCRN(out_channels=io.y_shape[-1], features=features, base_height=cfg.base_height,
                      base_width=cfg.base_width, architecture=cfg.architecture, split_at=cfg.split_at,
                      num_branches=cfg.num_branches, dropout_rate=cfg.dropout_rate,
                      dropout_mode=cfg.get("dropout_mode", "channel"))
  model.check(io.x_shape)
  return model


def code_shape(cfg: ml_collections.ConfigDict, x_shape: Sequence[int]) -> tuple[int, ...]:
  """'shared': (C,) = (features[split_at],), one drop-out code per output ((h, w, C) for
  dropout_mode='element'); () otherwise."""
  del x_shape
  if cfg.architecture != "shared":
    return ()
  return BranchedCRN(features=tuple(int(f) for f in cfg.features), base_height=cfg.base_height,
                     base_width=cfg.base_width, split_at=cfg.split_at,
                     dropout_mode=cfg.get("dropout_mode", "channel"), parent=None).code_shape
