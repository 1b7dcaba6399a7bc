"""Latents on the unit sphere and the statistics of Eq. 4's step (cgml_iclr2021 §2.2, §3).

cGML's latents live on S^n (§3): every update of z is followed by
`project_to_sphere`, and inference (Eq. 4) walks z along a Z-network's unit
direction for a predicted length rho_hat (`eq4_step`, `momentum_update`).

Eq. 4's step can be calibrated (our addition): with s = rho_hat u (u = Z's
unit direction; s = z_hat - z_t without rho) and m = z_{t+1} - z_t the
training moves of iteration t, the gain E[s . m] / E[||s||^2] is the
least-squares fit of the steps to the moves
(`step_against_move` measures the three means, `update_step_gain` keeps their
moving averages per iteration, `step_gains` turns them into gains), and
`explained_move` is the share of the moves' energy the fitted step explains,
~cos^2 of Z's direction against them. A Z whose steps are the moves keeps
gain ~1, i.e. the paper's Eq. 4.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def project_to_sphere(z_xD: jax.Array) -> jax.Array:
  """z / ||z||: the projection onto S^n after every update (§3)."""
  return z_xD / jnp.maximum(jnp.linalg.norm(z_xD, axis=-1, keepdims=True), 1e-12)


def sample_sphere(rng: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """Uniform samples on the unit sphere S^{shape[-1] - 1} (normalised Gaussians)."""
  return project_to_sphere(jax.random.normal(rng, shape, jnp.float32))


def unit_direction(z_BxD: jax.Array, z_hat_BxD: jax.Array) -> jax.Array:
  """(z_hat - z) / ||z_hat - z||, the direction of Eq. 4's step; 0 where Z predicts no move."""
  delta_BxD = z_hat_BxD - z_BxD
  return delta_BxD / jnp.maximum(jnp.linalg.norm(delta_BxD, axis=-1, keepdims=True), 1e-12)


def eq4_step(z_BxD: jax.Array, z_hat_BxD: jax.Array, rho_hat_B: jax.Array,
             use_momentum: bool = True) -> jax.Array:
  """The step one inference iteration adds to z before the projection: [B, D].

  With momentum, Eq. 4's rho_hat (z_hat - z) / ||z_hat - z||. Without (the
  "w/o rho" ablation), the move Z predicts, z_hat - z: z + (z_hat - z) =
  r'(z_t, x) = z_hat (§2.1). rho is the only difference between the two.
  """
  if not use_momentum:
    return z_hat_BxD - z_BxD
  return rho_hat_B[:, None] * unit_direction(z_BxD, z_hat_BxD)


def momentum_update(z_BxD: jax.Array, z_hat_BxD: jax.Array, rho_hat_B: jax.Array,
                    use_momentum: bool = True, gain: float | jax.Array = 1.0) -> jax.Array:
  """One inference iteration, Eq. 4: project(z + gain s), s = `eq4_step` (rho_hat u, or z_hat - z without rho).

  gain = 1 is the paper's Eq. 4 (and, without momentum, z_hat projected:
  the paper's "w/o rho"); `step_gains` calibrates it (module docstring), the
  same way with or without rho, so an ablation of rho changes nothing else.
  """
  return project_to_sphere(z_BxD + gain * eq4_step(z_BxD, z_hat_BxD, rho_hat_B, use_momentum))


def move_cosine(z_t_BxD: jax.Array, z_hat_BxD: jax.Array, z_next_BxD: jax.Array) -> jax.Array:
  """Mean over the batch of cos(z_hat - z_t, z_{t+1} - z_t): does Z point where z moved in training?

  Eq. 4 walks along Z's direction for rho_hat, so inference follows the
  training moves only where this is well above 0 (toy_scenes: 0.02-0.04 all
  through training, and samples random-walk between modes; experiments/results/cgml.md).
  A zero move counts as 0.
  """
  a_BxD, b_BxD = z_hat_BxD - z_t_BxD, z_next_BxD - z_t_BxD
  norms_B = jnp.linalg.norm(a_BxD, axis=-1) * jnp.linalg.norm(b_BxD, axis=-1)
  return jnp.mean(jnp.sum(a_BxD * b_BxD, axis=-1) / jnp.maximum(norms_B, 1e-12))


def step_against_move(z_t_BxD: jax.Array, z_hat_BxD: jax.Array, rho_hat_B: jax.Array,
                      z_next_BxD: jax.Array, use_momentum: bool = True) -> jax.Array:
  """[3]: the means of s . m, ||s||^2 and ||m||^2: inference's step s (`eq4_step`) against the training move.

  The training move is m = z_{t+1} - z_t; s = rho_hat u, u = (z_hat - z_t) /
  ||z_hat - z_t|| (0 where Z predicts no move), or z_hat - z_t without momentum.
  E||g s - m||^2 is least at g = E[s . m] / E[||s||^2] (the least-squares gain
  of the step towards the moves Z was trained on), where it is E||m||^2 -
  E[s . m]^2 / E||s||^2: the fitted step explains a share E[s . m]^2 /
  (E||s||^2 E||m||^2) of the moves.
  """
  s_BxD = eq4_step(z_t_BxD, z_hat_BxD, rho_hat_B, use_momentum)
  m_BxD = z_next_BxD - z_t_BxD
  return jnp.stack([jnp.mean(jnp.sum(s_BxD * m_BxD, axis=-1)), jnp.mean(jnp.sum(s_BxD**2, axis=-1)),
                    jnp.mean(jnp.sum(m_BxD**2, axis=-1))])


def update_step_gain(stats_3xL: jax.Array, t: jax.Array, stats_3: jax.Array, decay: float) -> jax.Array:
  """Exponential moving averages (weight 1 - decay on the new value) of `step_against_move`'s means at iteration t."""
  return stats_3xL.at[:, t].set(decay * stats_3xL[:, t] + (1.0 - decay) * stats_3)


def explained_move(stats_3xL: jax.Array) -> jax.Array:
  """[l]: the share of the training moves E||m||^2 that the gain-fitted step explains, E[s . m]^2 / (E||s||^2 E||m||^2).

  0 where the fit points away from the moves (E[s . m] <= 0) or nothing was
  measured yet. 1: Z's steps are the moves up to a scale; ~cos^2 of Z's
  direction against them (toy_scenes ~0.001, experiments/results/cgml.md).
  """
  num_L, den_L, move_L = stats_3xL
  share_L = num_L**2 / jnp.maximum(den_L * move_L, 1e-30)
  return jnp.where((num_L > 0) & (den_L > 0) & (move_L > 0), jnp.minimum(share_L, 1.0), 0.0)


def step_gains(stats_3xL: jax.Array, min_explained: float = 0.0) -> jax.Array:
  """Eq. 4's gain per iteration, E[s . m] / E[||s||^2] clipped to [0, 1]; 0 before any Z step.

  0 also where the fitted step explains less than `min_explained` of the moves
  (`explained_move`): a Z whose direction is nearly blind to the moves earns a
  small but nonzero least-squares gain, and those small steps still carry
  samples near a boundary across it for nothing. The averages start at 0 and
  share their decay, so the ratios need no bias correction. 1: Z's steps are
  the training moves and Eq. 4 runs as the paper writes it.
  """
  num_L, den_L, _ = stats_3xL
  gain_L = jnp.where(den_L > 0, jnp.clip(num_L / jnp.maximum(den_L, 1e-12), 0.0, 1.0), 0.0)
  return jnp.where(explained_move(stats_3xL) >= min_explained, gain_L, 0.0)
