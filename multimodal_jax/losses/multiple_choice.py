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
