"""LR consistency by projection: the output whose downscaling is exactly the input.

The consistency-enforcing module (CEM) of Bahat & Michaeli, "Explorable
Super Resolution" (CVPR 2020, §4): for a linear degradation D (here the
antialiased bicubic downscaling that made the inputs), every output y of a
super-resolution network is replaced by its orthogonal projection onto the
affine set {y' : D y' = x},

    y' = y + D^T (D D^T)^-1 (x - D y),

so the network chooses only the component of y in the null space of D (what
the input does not determine: where a multimodal method should vary), and
every output downscales back to its input. It is not part of SRIM (IJCV
§5.1); `model.consistency='bicubic'` switches it on for SR generators, 'none'
is the paper's network.

D is separable (rows then columns, as PIL resizes), D = D_r (x) D_c with one
[h, H] matrix per axis, so the projection costs two small matrix products per
axis: with A = (D_1 D_1^T)^-1, y' = y + D_1^T A (x - D_1 y D_1^T) A D_1 for
square images. `pil_bicubic_matrix` is PIL's `Image.resize(..., BICUBIC)`
(Keys' kernel, a = -0.5, support widened by the scale when downscaling, edge
weights renormalised), checked against PIL on float images in
tests/test_consistency.py.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

CONSISTENCIES = ("none", "bicubic")


def _keys_cubic(t: np.ndarray, a: float = -0.5) -> np.ndarray:
  t = np.abs(t)
  near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1.0
  far = (((t - 5.0) * t + 8.0) * t - 4.0) * a
  return np.where(t < 1.0, near, np.where(t < 2.0, far, 0.0))


@functools.lru_cache(maxsize=None)
def pil_bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
  """[out_size, in_size] float64: PIL's bicubic resize of one axis as a matrix.

  Follows PIL's `precompute_coeffs` (Resample.c): scale = in / out, the
  kernel stretched by max(scale, 1), taps from int(center - support + 0.5)
  to int(center + support + 0.5) clipped to the image, weights normalised
  to sum 1 over the taps kept.
  """
  scale = in_size / out_size
  filterscale = max(scale, 1.0)
  support = 2.0 * filterscale
  matrix = np.zeros((out_size, in_size))
  for i in range(out_size):
    center = (i + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    taps = np.arange(lo, hi)
    weights = _keys_cubic((taps - center + 0.5) / filterscale)
    matrix[i, lo:hi] = weights / weights.sum()
  return matrix


@functools.lru_cache(maxsize=None)
def _projection_factors(hr: int, lr: int) -> tuple[np.ndarray, np.ndarray]:
  """(D [lr, hr], D^T (D D^T)^-1 [hr, lr]) for one axis, float32."""
  d = pil_bicubic_matrix(hr, lr)
  back = d.T @ np.linalg.inv(d @ d.T)
  return d.astype(np.float32), back.astype(np.float32)


def downscale(y_BxHxWxC: jax.Array, lr_hw: tuple[int, int]) -> jax.Array:
  """D y: PIL-bicubic downscaling to `lr_hw` without quantisation."""
  d_h, _ = _projection_factors(y_BxHxWxC.shape[1], lr_hw[0])
  d_w, _ = _projection_factors(y_BxHxWxC.shape[2], lr_hw[1])
  return jnp.einsum("hH,bHWc,wW->bhwc", d_h, y_BxHxWxC.astype(jnp.float32), d_w)


def project(y_BxHxWxC: jax.Array, x_BxhxwxC: jax.Array) -> jax.Array:
  """y + D^T (D D^T)^-1 (x - D y): the point nearest y (l2) that downscales to x exactly."""
  _, back_h = _projection_factors(y_BxHxWxC.shape[1], x_BxhxwxC.shape[1])
  _, back_w = _projection_factors(y_BxHxWxC.shape[2], x_BxhxwxC.shape[2])
  residual = x_BxhxwxC.astype(jnp.float32) - downscale(y_BxHxWxC, x_BxhxwxC.shape[1:3])
  return y_BxHxWxC.astype(jnp.float32) + jnp.einsum("Hh,bhwc,Ww->bHWc", back_h, residual, back_w)


def apply(consistency: str, y_BxHxWxC: jax.Array, x_BxhxwxC: jax.Array, rounds: int = 4) -> jax.Array:
  """`model.consistency` on a generator's output in [0, 1].

  The projection can leave [0, 1] near saturated pixels, so it alternates
  with clipping `rounds` times (projections onto two convex sets, which
  converge towards a point of their intersection), ending clipped.
  """
  if consistency == "none":
    return y_BxHxWxC
  if consistency != "bicubic":
    raise ValueError(f"Unknown consistency {consistency!r}; valid: {list(CONSISTENCIES)}")
  x = x_BxhxwxC[..., :y_BxHxWxC.shape[-1]]
  for _ in range(rounds):
    y_BxHxWxC = jnp.clip(project(y_BxHxWxC, x), 0.0, 1.0)
  return y_BxHxWxC
