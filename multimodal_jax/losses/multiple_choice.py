"""The best-of-k (multiple-choice) loss: only the hypothesis nearest the target is trained.

Chen & Koltun's k-output CRN (the baseline of cimle_semantic_layouts_iccv2019
§3.3.2 / Table 2) and the best-neighbour loss of latent drop-out codes (Eq. 4,
"MCL") train k hypotheses of one input with

    L(y, {y^_1..y^_k}) = min_j d(y, y^_j),

so each example's gradient reaches its best hypothesis only. As in
`imle_selection.select_nearest_latents`, the target's features are computed
once and compared with every hypothesis (`Distance.from_features`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from multimodal_jax.losses import perceptual


def best_of_k(distance: perceptual.Distance, y_hat_BxKxHxWxC: jax.Array, y_BxHxWxC: jax.Array,
              mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(loss [B] = min_j d(y, y^_j), best hypothesis [B], all distances [B, K]).

  Args:
    distance: any `perceptual.Distance`.
    y_hat_BxKxHxWxC: k hypotheses per example.
    y_BxHxWxC: the targets.
    mask: optional per-pixel weights [B, H, W(, 1)].
  """
  features_y = jax.tree.map(lambda f: f[:, None], distance.features(y_BxHxWxC))
  mask_Bx1 = None if mask is None else mask[:, None]
  d_BxK = distance.from_features(features_y, distance.features(y_hat_BxKxHxWxC), mask_Bx1)
  best_B = jnp.argmin(d_BxK, axis=1)
  return jnp.take_along_axis(d_BxK, best_B[:, None], axis=1)[:, 0], best_B, d_BxK


def assign_neighbours(d_BxJxI: jax.Array, valid_BxJ: jax.Array) -> jax.Array:
  """The neighbours assignment of latent drop-out codes §3.2: which target trains which hypothesis.

  For each example, targets j = 0..J-1 (j = 0 its own target Y^0, j >= 1 its
  sampled neighbours' Y^j, `valid_BxJ` false for padding) and hypotheses
  i = 0..I-1 with losses d[j, i] = l(f_i(X), Y^j):
    1. Y^0 goes to its best hypothesis, argmin_i d[0, i];
    2. each hypothesis takes at most one target: the remaining valid targets
       are assigned greedily, the (target, free hypothesis) pair of smallest
       loss first, until every target is assigned or no hypothesis is free.
  Fixed shapes (J - 1 masked rounds), so it compiles; no gradient flows
  through the choice.

  Returns:
    assignment [B, J, I] in {0, 1}: a[j, i] = 1 when Y^j trains f_i (at most
    one 1 per row and per column; row 0 always has one).
  """
  d_BxJxI = jax.lax.stop_gradient(d_BxJxI)
  _, num_targets, num_hypotheses = d_BxJxI.shape

  def one(d_JxI, valid_J):
    best0 = jnp.argmin(d_JxI[0])
    assigned_JxI = jnp.zeros_like(d_JxI).at[0, best0].set(1.0)
    free_I = jnp.ones((num_hypotheses,), bool).at[best0].set(False)
    pending_J = valid_J.astype(bool).at[0].set(False)

    def assign_one(_, carry):
      assigned_JxI, free_I, pending_J = carry
      cost_JxI = jnp.where(pending_J[:, None] & free_I[None, :], d_JxI, jnp.inf)
      j, i = jnp.unravel_index(jnp.argmin(cost_JxI), cost_JxI.shape)
      ok = jnp.isfinite(cost_JxI[j, i])
      return (assigned_JxI.at[j, i].add(ok.astype(d_JxI.dtype)), free_I.at[i].set(free_I[i] & ~ok),
              pending_J.at[j].set(pending_J[j] & ~ok))

    assigned_JxI, _, _ = jax.lax.fori_loop(0, num_targets - 1, assign_one, (assigned_JxI, free_I, pending_J))
    return assigned_JxI

  return jax.vmap(one)(d_BxJxI, valid_BxJ)


def pairwise_distances(distance: perceptual.Distance, y_hat_BxIxHxWxC: jax.Array,
                       targets_BxJxHxWxC: jax.Array) -> jax.Array:
  """d[b, j, i] = distance(y^_bi, y_bj) [B, J, I], each image's features computed once."""
  features_t = jax.tree.map(lambda f: f[:, :, None], distance.features(targets_BxJxHxWxC))
  features_h = jax.tree.map(lambda f: f[:, None], distance.features(y_hat_BxIxHxWxC))
  return distance.from_features(features_t, features_h)
