"""cGML's three networks (cgml_iclr2021 §3, Fig. 1-2): encoder H, generator G, Z-network.

  H(x)          -> (h, skips): a conv encoder to a bottleneck h (the paper's
                   "high-level representation of x", §3), keeping the features
                   of every resolution for U-Net skips.
  G(h, skips, z) -> y: a decoder; z is injected at the bottleneck (broadcast
                   over its spatial grid and concatenated to h), then U-Net
                   skips from H are concatenated at every resolution (§5:
                   "U-Net style skip connections are added").
  Z(z_t, h)     -> (z_hat_{t+1}, rho_hat): one network predicting the expected
                   next latent r'(z_t, x) = E[z_{t+1}] (§2.1) and the expected
                   momentum E[rho] (§2.2), as the paper's "single network Z".

Choices where the paper (its appendix is not in our copy) is silent:
  * Lipschitz constraint (§3, "we force Lipschitz continuity on both Z and
    the G", Eq. 3): spectral normalisation (Miyato et al., 2018) of every
    Dense/Conv kernel of G and Z. Conv kernels are normalised as the
    [kh*kw*cin, cout] matrix, as in SN-GAN. sigma is estimated by
    `power_iterations` power iterations from a fixed start vector at every
    call (no persistent `u` collection), so every network stays a pure
    function of its params and no step has to carry extra mutable state;
    power iteration under-estimates sigma slightly, so a layer's norm can
    exceed 1 by a little. Each normalised kernel is multiplied by
    `lipschitz_scale`, so G's Lipschitz constant in z is about
    lipschitz_scale**depth (images need > 1: two completions of a digit
    differ by more than 2 = the diameter of the unit sphere), and Z's by
    `znet_lipschitz_scale` (its predicted move and rho must fall from their
    far-field values to ~0 within a short distance of a mode). H is left
    unconstrained (the paper constrains only G and Z).
  * Z predicts the displacement: z_hat = z_t + delta (z_{t+1} is close to
    z_t), and rho_hat = softplus(.) >= 0.
  * Z sees h flattened (the bottleneck of the conv encoder is small).
  * Two families, picked by `config.model.name`: `cgml_mlp` (the toy of
    §4 / Fig. 3: three-layer MLPs for H, G and Z) and `cgml_unet` (images:
    a Pathak-style conv encoder/decoder without the channel-wise FC layer,
    with U-Net skips, §5).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from multimodal_jax.models import registry

LIPSCHITZ_METHODS = ["spectral_norm", "none"]


def spectral_normalize(kernel_IxO: jax.Array, power_iterations: int) -> jax.Array:
  """kernel / sigma_max(kernel), sigma from power iteration (Miyato et al., 2018, Alg. 1).

  The singular vectors are computed without gradient (as in SN-GAN) and
  sigma = v^T W u carries the gradient to W. The start vector is a fixed
  pseudo-random unit vector, so the result is a deterministic function of W.
  """
  w_IxO = kernel_IxO.reshape(-1, kernel_IxO.shape[-1])
  w_const = jax.lax.stop_gradient(w_IxO)
  # A fixed generic start vector, a trace-time numpy constant (drawing it with
  # jax.random at every call makes XLA constant-fold a threefry per layer).
  u_O = np.random.default_rng(0).standard_normal(w_IxO.shape[-1]).astype(np.float32)
  u_O = jnp.asarray(u_O / np.linalg.norm(u_O), w_IxO.dtype)

  def power_iteration(_, u_O):
    v_I = w_const @ u_O
    v_I = v_I / (jnp.linalg.norm(v_I) + 1e-12)
    u_O = w_const.T @ v_I
    return u_O / (jnp.linalg.norm(u_O) + 1e-12)

  u_O = jax.lax.fori_loop(0, max(power_iterations, 1), power_iteration, u_O)
  v_I = w_const @ u_O
  v_I = v_I / (jnp.linalg.norm(v_I) + 1e-12)
  sigma = v_I @ w_IxO @ u_O
  return kernel_IxO / jnp.maximum(sigma, 1e-12)


class LipschitzDense(nn.Module):
  """Dense layer whose kernel is spectrally normalised (times `scale`) when `lipschitz`."""
  features: int
  lipschitz: bool = True
  scale: float = 1.0
  power_iterations: int = 5
  dtype: Any = jnp.float32  # of the product; sigma is estimated in float32

  @nn.compact
  def __call__(self, x_BxI: jax.Array) -> jax.Array:
    kernel = self.param("kernel", nn.initializers.lecun_normal(), (x_BxI.shape[-1], self.features))
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.lipschitz:
      kernel = self.scale * spectral_normalize(kernel, self.power_iterations)
    return x_BxI.astype(self.dtype) @ kernel.astype(self.dtype) + bias.astype(self.dtype)


class LipschitzConv(nn.Module):
  """SAME-padded conv whose [kh*kw*cin, cout] kernel matrix is spectrally normalised."""
  features: int
  kernel_size: Sequence[int] = (3, 3)
  strides: Sequence[int] = (1, 1)
  lipschitz: bool = True
  scale: float = 1.0
  power_iterations: int = 5
  dtype: Any = jnp.float32  # of the convolution; sigma is estimated in float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array) -> jax.Array:
    shape = tuple(self.kernel_size) + (x_BxHxWxC.shape[-1], self.features)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
    bias = self.param("bias", nn.initializers.zeros, (self.features,))
    if self.lipschitz:
      kernel = self.scale * spectral_normalize(kernel, self.power_iterations)
    y = jax.lax.conv_general_dilated(
        x_BxHxWxC.astype(self.dtype), kernel.astype(self.dtype), window_strides=tuple(self.strides),
        padding="SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return y + bias.astype(self.dtype)


def _output(y: jax.Array, activation: str) -> jax.Array:
  """The image in float32, whatever the network computed in (losses never see the compute dtype)."""
  y = y.astype(jnp.float32)
  if activation == "sigmoid":
    return nn.sigmoid(y)
  if activation == "linear":
    return y
  raise ValueError(f"Unknown output activation {activation!r}; valid: ['sigmoid', 'linear']")


# ---------------------------------------------------------------- MLPs (the toy of §4)


class MLPEncoder(nn.Module):
  """H: flatten(x) -> 3-layer MLP -> h [B, h_dim]. Unconstrained."""
  hidden: int = 64
  h_dim: int = 32
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array):
    a = x_BxHxWxC.reshape(x_BxHxWxC.shape[0], -1)
    a = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(a))
    a = nn.relu(nn.Dense(self.hidden, dtype=self.dtype)(a))
    return nn.Dense(self.h_dim, dtype=self.dtype)(a), ()


class MLPGenerator(nn.Module):
  """G: [h, z] -> 3-layer Lipschitz MLP -> y reshaped to `out_shape` (H, W, C)."""
  out_shape: Sequence[int]
  hidden: int = 64
  lipschitz: bool = True
  lipschitz_scale: float = 1.0
  power_iterations: int = 5
  output_activation: str = "linear"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_BxK: jax.Array, skips: Any, z_BxD: jax.Array) -> jax.Array:
    del skips
    dense = lambda n: LipschitzDense(n, self.lipschitz, self.lipschitz_scale, self.power_iterations, self.dtype)
    a = jnp.concatenate([h_BxK.astype(self.dtype), z_BxD.astype(self.dtype)], axis=-1)
    a = nn.relu(dense(self.hidden)(a))
    a = nn.relu(dense(self.hidden)(a))
    y = dense(math.prod(self.out_shape))(a)
    return _output(y, self.output_activation).reshape((-1,) + tuple(self.out_shape))


# ---------------------------------------------------------------- conv U-Net (images, §5)


class ConvEncoder(nn.Module):
  """H: conv stem then `num_levels` stride-2 convs (features x2 each) -> h at 1/2^L size.

  Returns (h [B, H/2^L, W/2^L, F*2^L], skips): skips[i] is the feature map at
  resolution 1/2^i, i = 0..L-1, for the U-Net decoder.
  """
  features: int = 32
  num_levels: int = 3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x_BxHxWxC: jax.Array):
    a = nn.leaky_relu(nn.Conv(self.features, (3, 3), dtype=self.dtype)(x_BxHxWxC), 0.2)
    skips = []
    for level in range(self.num_levels):
      skips.append(a)
      a = nn.Conv(self.features * 2**(level + 1), (4, 4), strides=(2, 2), dtype=self.dtype)(a)
      a = nn.leaky_relu(nn.GroupNorm(num_groups=None, group_size=8, dtype=self.dtype)(a), 0.2)
    return a, tuple(skips)


class ConvGenerator(nn.Module):
  """G: z (Dense, broadcast over the bottleneck grid) ++ h -> up-convs with U-Net skips -> y."""
  out_channels: int
  features: int = 32
  num_levels: int = 3
  lipschitz: bool = True
  lipschitz_scale: float = 1.0
  power_iterations: int = 5
  output_activation: str = "sigmoid"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, h_BxhxwxK: jax.Array, skips: Sequence[jax.Array], z_BxD: jax.Array) -> jax.Array:
    conv = lambda n: LipschitzConv(n, (3, 3), (1, 1), self.lipschitz, self.lipschitz_scale,
                                   self.power_iterations, self.dtype)
    b, hh, ww, k = h_BxhxwxK.shape
    h_BxhxwxK, skips = h_BxhxwxK.astype(self.dtype), [s.astype(self.dtype) for s in skips]
    z_code = LipschitzDense(k, self.lipschitz, self.lipschitz_scale, self.power_iterations, self.dtype)(z_BxD)
    z_map = jnp.broadcast_to(z_code[:, None, None, :], (b, hh, ww, k))
    a = nn.relu(conv(k)(jnp.concatenate([h_BxhxwxK, z_map], axis=-1)))
    for level in reversed(range(self.num_levels)):
      skip = skips[level]
      a = jax.image.resize(a, (b,) + skip.shape[1:3] + (a.shape[-1],), "nearest")
      a = jnp.concatenate([a, skip], axis=-1)
      a = nn.relu(conv(self.features * 2**level)(a))
    return _output(conv(self.out_channels)(a), self.output_activation)


# ---------------------------------------------------------------- Z-network (§2.1-2.2)


class ZNetwork(nn.Module):
  """Z(z_t, h[, t]) -> (z_hat_{t+1} = z_t + delta, rho_hat >= 0): a Lipschitz MLP on [z_t, flatten(h)(, t)].

  With `iteration_input`, Z also sees the iteration's place in the round,
  t / l in [0, 1) (`t_fraction_B`): see methods/cgml.py for why.
  """
  hidden: int = 64
  num_layers: int = 3
  lipschitz: bool = True
  lipschitz_scale: float = 1.0
  power_iterations: int = 5
  dtype: Any = jnp.float32  # computation; z_hat and rho_hat come back float32
  iteration_input: bool = False

  @nn.compact
  def __call__(self, z_BxD: jax.Array, h_Bx_: jax.Array,
               t_fraction_B: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    dense = lambda n: LipschitzDense(n, self.lipschitz, self.lipschitz_scale, self.power_iterations, self.dtype)
    inputs = [z_BxD, h_Bx_.reshape(h_Bx_.shape[0], -1)]
    if self.iteration_input:
      if t_fraction_B is None:
        raise ValueError("This Z-network sees the iteration (iteration_input=True): pass t_fraction_B.")
      inputs.append(jnp.broadcast_to(jnp.asarray(t_fraction_B, jnp.float32), z_BxD.shape[:1])[:, None])
    a = jnp.concatenate([i.astype(self.dtype) for i in inputs], axis=-1)
    for _ in range(self.num_layers - 1):
      a = nn.relu(dense(self.hidden)(a))
    out = dense(z_BxD.shape[-1] + 1)(a).astype(jnp.float32)
    return z_BxD + out[:, :-1], nn.softplus(out[:, -1])


def _lipschitz_options(model: ml_collections.ConfigDict) -> dict[str, Any]:
  return dict(lipschitz=model.lipschitz == "spectral_norm", lipschitz_scale=model.lipschitz_scale,
              power_iterations=model.power_iterations)


def _znet(model: ml_collections.ConfigDict) -> ZNetwork:
  return ZNetwork(hidden=model.znet_hidden, num_layers=model.znet_layers,
                  iteration_input=model.znet_iteration_input,
                  **dict(_lipschitz_options(model), lipschitz_scale=model.znet_lipschitz_scale))


def build_mlp(model: ml_collections.ConfigDict, io: registry.ModelIO) -> dict[str, nn.Module]:
  """`model.name='cgml_mlp'`: {encoder H, generator G, znet Z} for outputs of shape `io.y_shape`."""
  return {"encoder": MLPEncoder(hidden=model.hidden, h_dim=model.h_dim),
          "generator": MLPGenerator(out_shape=tuple(io.y_shape), hidden=model.hidden,
                                    output_activation=model.output_activation, **_lipschitz_options(model)),
          "znet": _znet(model)}


def build_unet(model: ml_collections.ConfigDict, io: registry.ModelIO) -> dict[str, nn.Module]:
  """`model.name='cgml_unet'`: {encoder H, generator G, znet Z} for outputs of shape `io.y_shape`."""
  return {"encoder": ConvEncoder(features=model.features, num_levels=model.num_levels),
          "generator": ConvGenerator(out_channels=io.y_shape[-1], features=model.features,
                                     num_levels=model.num_levels, output_activation=model.output_activation,
                                     **_lipschitz_options(model)),
          "znet": _znet(model)}
