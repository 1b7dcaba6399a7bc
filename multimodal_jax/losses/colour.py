"""Colour science and colour losses in jnp (cgml_iclr2021 §5.2, colourisation).

  * sRGB (D65) <-> CIELAB: `rgb_to_lab`, `lab_to_rgb`, and `grey_to_lightness`
    (the L of an sRGB grey); all differentiable, so a loss may be written in
    (a, b) of a generated image.
  * `soft_histogram`: a per-image histogram of values in [0, 1] made
    differentiable by Gaussian soft binning, and `kl_to_uniform`, KL(p || U):
    together the histogram term lambda (KL(p_a || U) + KL(p_b || U)) of §5.2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# sRGB (D65) -> XYZ, and the D65 white point.
_RGB_TO_XYZ = jnp.array([[0.412453, 0.357580, 0.180423],
                         [0.212671, 0.715160, 0.072169],
                         [0.019334, 0.119193, 0.950227]], jnp.float32)
_WHITE_D65 = jnp.array([0.950456, 1.0, 1.088754], jnp.float32)
_DELTA = 6.0 / 29.0
# (a, b) are normalised to [0, 1] by (v + AB_RANGE) / (2 AB_RANGE); the sRGB
# gamut spans a in [-86, 98], b in [-108, 95].
AB_RANGE = 110.0


def _srgb_to_linear(c):
  return jnp.where(c <= 0.04045, c / 12.92, ((jnp.maximum(c, 0.04045) + 0.055) / 1.055)**2.4)


def _linear_to_srgb(c):
  return jnp.where(c <= 0.0031308, 12.92 * c, 1.055 * jnp.maximum(c, 0.0031308)**(1 / 2.4) - 0.055)


def _lab_f(t):
  return jnp.where(t > _DELTA**3, jnp.cbrt(jnp.maximum(t, _DELTA**3)), t / (3 * _DELTA**2) + 4.0 / 29.0)


def _lab_f_inv(f):
  return jnp.where(f > _DELTA, f**3, 3 * _DELTA**2 * (f - 4.0 / 29.0))


def rgb_to_lab(rgb_xx3: jax.Array) -> jax.Array:
  """sRGB in [0, 1] -> CIELAB (L in [0, 100], a, b about [-110, 110]), D65 white."""
  xyz = _srgb_to_linear(jnp.clip(rgb_xx3, 0.0, 1.0)) @ _RGB_TO_XYZ.T / _WHITE_D65
  fx, fy, fz = (_lab_f(xyz[..., i]) for i in range(3))
  return jnp.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1)


def lab_to_rgb(lab_xx3: jax.Array) -> jax.Array:
  """CIELAB -> sRGB clipped to [0, 1] (the inverse of `rgb_to_lab` inside the gamut)."""
  fy = (lab_xx3[..., 0] + 16.0) / 116.0
  fx = fy + lab_xx3[..., 1] / 500.0
  fz = fy - lab_xx3[..., 2] / 200.0
  xyz = jnp.stack([_lab_f_inv(fx), _lab_f_inv(fy), _lab_f_inv(fz)], axis=-1) * _WHITE_D65
  rgb_linear = xyz @ jnp.linalg.inv(_RGB_TO_XYZ).T
  return jnp.clip(_linear_to_srgb(jnp.clip(rgb_linear, 0.0, 1.0)), 0.0, 1.0)


def grey_to_lightness(grey_xx1: jax.Array) -> jax.Array:
  """L of an sRGB grey (r = g = b = grey): the lightness channel the network sees."""
  y = _srgb_to_linear(jnp.clip(grey_xx1, 0.0, 1.0))
  return 116.0 * _lab_f(y) - 16.0


def soft_histogram(v_BxP: jax.Array, num_bins: int) -> jax.Array:
  """Differentiable histogram of values in [0, 1]: Gaussian soft binning, [B, K] summing to 1.

  Each value spreads over bin centres (k + 0.5) / K with weights
  exp(-(v - c_k)^2 / (2 w^2)), w = one bin width, normalised per value.
  """
  centres_K = (jnp.arange(num_bins, dtype=jnp.float32) + 0.5) / num_bins
  logits_BxPxK = -0.5 * jnp.square((v_BxP[..., None] - centres_K) * num_bins)
  weights_BxPxK = jax.nn.softmax(logits_BxPxK, axis=-1)
  return jnp.mean(weights_BxPxK, axis=1)


def kl_to_uniform(p_BxK: jax.Array) -> jax.Array:
  """KL(p || U) = sum_k p_k log p_k + log K, per row."""
  k = p_BxK.shape[-1]
  return jnp.sum(p_BxK * jnp.log(jnp.maximum(p_BxK, 1e-12)), axis=-1) + jnp.log(float(k))
