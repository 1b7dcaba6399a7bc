"""The segment-wise diversity loss (diversity_loss_yang_liu_cai, §III-C/D, §IV-A, Algorithm 1).

A plug-in for any generator G(l, z) of this codebase that takes one extra
input channel:

  * noise input (§IV-A): n ~ U[-1, 1]^{|C|}, one value per semantic class; the
    noise channel holds n^c at every pixel whose label is c (`noise_channel`);
  * Eq. 7: L_Div = sum_c |n^c| max(0, lambda_c - ||G(l, 0) - G(l, n)||_1^c)
    (`diversity_loss`), with both outputs from one forward pass over a batch
    of two per example (Algorithm 1, lines 6-7: `paired_outputs`);
  * Eq. 8: the generator minimises L_B + beta L_Div.

Normalisation of the segment-wise l1 ||.||_1^c (the paper: "only cumulates
the L_1 difference of the pixels with the semantic label c"): here the *mean*
absolute difference over the pixels (and channels) of class c, so lambda_c
bounds an average change per pixel and one value fits segments of any area.
It is measured in pix2pix's image units, [-1, 1] (twice our [0, 1] outputs),
so lambda_c = 0.3 (§IV-A) is the paper's value: a segment stops being pushed
once its pixels moved by 0.15 of the [0, 1] range on average. A class absent
from the layout contributes nothing.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

# Differences are measured in [-1, 1] image units (module docstring).
IMAGE_RANGE_SCALE = 2.0


def sample_noise(rng: jax.Array, batch: int, num_classes: int) -> jax.Array:
  """n ~ U[-1, 1]^{|C|} per example: [B, C]."""
  return jax.random.uniform(rng, (batch, num_classes), minval=-1.0, maxval=1.0)


def noise_channel(label_BxHxW: jax.Array, n_BxC: jax.Array) -> jax.Array:
  """§IV-A: the extra input channel, n^c at every pixel of class c: [B, H, W, 1]."""
  return jnp.take_along_axis(n_BxC[:, None, :], label_BxHxW.reshape(label_BxHxW.shape[0], 1, -1).astype(jnp.int32),
                             axis=-1).reshape(label_BxHxW.shape + (1,))


def segment_l1(a_BxHxWxC: jax.Array, b_BxHxWxC: jax.Array, label_BxHxW: jax.Array,
               num_classes: int) -> tuple[jax.Array, jax.Array]:
  """(||a - b||_1^c [B, K] in [-1, 1] image units, present [B, K]): the mean |a - b| over each class's pixels."""
  diff_BxHxW = jnp.mean(jnp.abs(a_BxHxWxC - b_BxHxWxC), axis=-1) * IMAGE_RANGE_SCALE
  onehot_BxHxWxK = jax.nn.one_hot(label_BxHxW, num_classes, dtype=diff_BxHxW.dtype)
  area_BxK = onehot_BxHxWxK.sum(axis=(1, 2))
  total_BxK = jnp.einsum("bhw,bhwk->bk", diff_BxHxW, onehot_BxHxWxK)
  return total_BxK / jnp.maximum(area_BxK, 1.0), area_BxK > 0


def diversity_loss(y0_BxHxWxC: jax.Array, yn_BxHxWxC: jax.Array, label_BxHxW: jax.Array, n_BxC: jax.Array,
                   lambda_c: float | jax.Array) -> jax.Array:
  """Eq. 7 per example [B]: sum_c |n^c| max(0, lambda_c - ||G(l, 0) - G(l, n)||_1^c) over present classes."""
  dist_BxK, present_BxK = segment_l1(y0_BxHxWxC, yn_BxHxWxC, label_BxHxW, n_BxC.shape[-1])
  hinge_BxK = jnp.maximum(0.0, lambda_c - dist_BxK)
  return jnp.sum(jnp.abs(n_BxC) * hinge_BxK * present_BxK, axis=-1)


def paired_outputs(generate: Callable[[jax.Array, jax.Array], jax.Array], x_BxHxWxC: jax.Array,
                   noise_BxHxWx1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Algorithm 1, lines 6-7, as one batch of two per example: (G(l, n), G(l, 0)).

  `generate(x, z)` is the generator with its parameters and rngs bound; a
  network with batch statistics sees both halves together.
  """
  b = x_BxHxWxC.shape[0]
  y = generate(jnp.concatenate([x_BxHxWxC, x_BxHxWxC]), jnp.concatenate([noise_BxHxWx1,
                                                                         jnp.zeros_like(noise_BxHxWx1)]))
  return y[:b], y[b:]
