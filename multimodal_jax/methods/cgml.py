"""`cgml`: Conditional Generation by Modeling the Latent space (cgml_iclr2021).

Networks (models/cgml_nets.py): encoder H, generator G(H(x), z) and the
Z-network Z(z_t, H(x)) -> (z_hat_{t+1}, rho_hat). Latents live on the unit
sphere S^n (§3), z in R^{n+1} = R^{cgml.z_dim}; every update of z is followed
by a projection back onto it.

Training, Algorithm 1, as three separately compiled pure steps that
`run_round` calls `cgml.inner_steps` (= l) times per batch, in this order:
  z     "Freeze H, G, Z and update z": z_{t+1} = project(z_t - beta_t grad_z E(G(H(x), z_t), y))
        per example (E is a per-example mean, so each z gets its own gradient).
        beta_t = `z_step_size` * `z_step_decay`^t at inner iteration t (our
        choice; 1 = the paper's constant beta): the L1 energy's gradient does
        not shrink near the optimum, so with a constant beta z keeps jumping
        around it and the learned moves (and rho) never become small there,
        which §2.2 relies on ("E[rho] -> 0 as z_{t+1}, z_t -> z*").
  znet  "Freeze H, G, z and update Z": L1 between Z(z_t, H(x)) and the targets
        (z_{t+1}, rho), rho = alpha ||z_{t+1} - z_t|| (§2.2; the paper writes
        the momentum as alpha E[z_{t+1} - z_t] but uses it as a scalar step
        length in Eq. 4, so its target is the length of the training move).
  gen   "Freeze Z, z and update H, G": grad_w E(G(H(x), z_{t+1}), y).
`state.step` counts `gen` updates, so a round makes l of them
(`steps_per_round = l`) and `fold_in(rng, step)` never repeats. Z never feeds
back into the z or G/H updates (Alg. 1 trains it on the side), so runs that
differ only in Z's settings (e.g. the no-momentum ablation) share G and H exactly.

Per-example z does NOT persist across epochs (Alg. 1 writes z = {z_1..z_J}
across its k epochs; no appendix survives in our copy): every batch starts
afresh at the first inner iteration (step % l == 0) from `start_codes`, the
lowest-energy of `cgml.z_init_candidates` (M) codes ~ U(S^n), i.e. a code in
the basin of the example's own mode, as a persistent code would be, and runs l
z-iterations. This needs no example index in the batch and stays correct when
examples change between epochs (digits_completion's corruption). With M = 1
(one uniform z_0, as before issue #14) the moves from a given z_t go towards
whichever mode y has, so Z (which regresses their mean, §2.1) learned the
descent of the mode-averaged energy and Eq. 4 pulled samples to the majority
mode (box completion: 19% box samples for 40% box targets; 8 equiprobable
modes: recall 0.76 at t = 0, 0.42 after T = 20).
The batch's z (z_{t+1}) and z_t live in the state, replicated ([B, D] is
small), so the three steps stay pure `(state, batch) -> (state, metrics)`.

Inference (§2.2, Eq. 4): z_0 ~ U(S^n), then T = `cgml.inference_steps` times
  z <- project(z + rho_hat (z_hat - z) / ||z_hat - z||),  (z_hat, rho_hat) = Z(z, H(x)[, t / l]),
in one `lax.fori_loop`, vmapped over N starting points for N modes. With
`cgml.use_momentum = False` (the "w/o rho" ablation of Fig. 3c, Tables 2-3)
rho is ignored, in training and inference: z <- project(z_hat).
The training moves shrink along a round (beta_t decays), so a Z blind to t
fits one median length for all of them: too long near convergence, where the
unit direction of Eq. 4 turns Z's small biases into full rho_hat steps and
samples drifted across modes (the old configs scaled rho by alpha = 3-6 and ran
T = 10-20 > l, making it worse). With `model.znet_iteration_input` Z also sees
t / l (t clipped to l - 1 past the round), alpha = 1 and T = l: inference
replays a training round's moves, lengths and all, and stops where training
did. `initial_sample` decodes the same z_0 without Z (t = 0): evaluate reports
its mode recall next to `sample`'s.

Eq. 4's step is calibrated (`cgml.calibrate_step`, our addition; False = the
paper's Eq. 4): inference steps gain_t s, s = rho_hat u the step of Eq. 4
(u = Z's unit direction), with gain_t = E[s . m] / E[||s||^2] over the
training moves m = z_{t+1} - z_t of iteration t: the least-squares fit of
Eq. 4's steps to the moves (moving averages kept in the state by the znet
step, from Z's prediction before it learns the batch; clipped to [0, 1]). A Z
whose steps are the moves keeps gain ~1 and Eq. 4 unchanged. A Z whose
direction carries next to nothing about them (toy_scenes: `znet/move_cosine`
0.02-0.04, configs/cgml.py) earns a small least-squares gain (0.01-0.04) that
still walks samples near a mode boundary across it; so the gain is 0 where the
fitted step explains less than `cgml.min_explained_move` of the moves' energy,
E[s . m]^2 / (E||s||^2 E||m||^2) (`explained_move`, logged as
`znet/explained_move`, ~cos^2 of Z's direction against the moves), and z stays
at z_0. The "w/o rho" ablation (z <- project(z_hat))
has no step length and is not scaled. Z never feeds back into training, so
the gain changes inference only.

Tasks (`cgml.task`), each a per-example energy E and a map from G's output to
an image:
  direct        E = mean |G - y| (the paper's L1, §3). The toy (§4) and any
                dataset whose x and y are paired images.
  completion    x = [masked image, mask] (digits_completion): G's output is
                pasted into the hole, y_hat = x (1 - m) + G m, E = mean |y_hat - y|.
  colorization  §5.2: H sees L/100 of x (the grey image read as an sRGB grey),
                G predicts (a, b) normalised to [0, 1] by (v + AB_RANGE) /
                (2 AB_RANGE); E = mean |a - a_gt| + mean |b - b_gt|
                + lambda (KL(p_a || U) + KL(p_b || U)), with p_a, p_b the
                per-image histograms of the predicted a, b made differentiable
                by Gaussian soft binning (`soft_histogram`). The target (a, b)
                come from y by `rgb_to_lab`; samples are `lab_to_rgb(L(x), a, b)`.
                The RGB <-> CIELAB conversions (sRGB, D65) are written in jnp here.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from multimodal_jax import config_lib
from multimodal_jax.methods import base
from multimodal_jax.methods import common
from multimodal_jax.models import cgml_nets
from multimodal_jax.models import registry as models

PyTree = Any
TASKS = ["direct", "completion", "colorization"]
STEP_NAMES = ("z", "znet", "gen")


# ---------------------------------------------------------------- the sphere


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


def momentum_update(z_BxD: jax.Array, z_hat_BxD: jax.Array, rho_hat_B: jax.Array,
                    use_momentum: bool = True, gain: float | jax.Array = 1.0) -> jax.Array:
  """One inference iteration, Eq. 4: z + gain rho_hat (z_hat - z) / ||z_hat - z||, projected.

  gain = 1 is the paper's Eq. 4; `step_gains` calibrates it (module docstring).
  Without momentum (ablation), z_{t+1} = r'(z_t, x) = z_hat (§2.1), projected
  (no gain: the ablation has no step length to scale).
  """
  if not use_momentum:
    return project_to_sphere(z_hat_BxD)
  step_B = gain * rho_hat_B
  return project_to_sphere(z_BxD + step_B[:, None] * unit_direction(z_BxD, z_hat_BxD))


def move_cosine(z_t_BxD: jax.Array, z_hat_BxD: jax.Array, z_next_BxD: jax.Array) -> jax.Array:
  """Mean over the batch of cos(z_hat - z_t, z_{t+1} - z_t): does Z point where z moved in training?

  Eq. 4 walks along Z's direction for rho_hat, so inference follows the
  training moves only where this is well above 0 (toy_scenes: 0.02-0.04 all
  through training, and samples random-walk between modes; configs/cgml.py).
  A zero move counts as 0.
  """
  a_BxD, b_BxD = z_hat_BxD - z_t_BxD, z_next_BxD - z_t_BxD
  norms_B = jnp.linalg.norm(a_BxD, axis=-1) * jnp.linalg.norm(b_BxD, axis=-1)
  return jnp.mean(jnp.sum(a_BxD * b_BxD, axis=-1) / jnp.maximum(norms_B, 1e-12))


def step_against_move(z_t_BxD: jax.Array, z_hat_BxD: jax.Array, rho_hat_B: jax.Array,
                      z_next_BxD: jax.Array) -> jax.Array:
  """[3]: the means of s . m, ||s||^2 and ||m||^2: Eq. 4's step s = rho_hat u against the training move.

  The training move is m = z_{t+1} - z_t.

  u = (z_hat - z_t) / ||z_hat - z_t|| (0 where Z predicts no move). E||g s - m||^2
  is least at g = E[s . m] / E[||s||^2] (the least-squares gain of Eq. 4's step
  towards the moves Z was trained on), where it is E||m||^2 - E[s . m]^2 / E||s||^2:
  the fitted step explains a share E[s . m]^2 / (E||s||^2 E||m||^2) of the moves.
  """
  s_BxD = rho_hat_B[:, None] * unit_direction(z_t_BxD, z_hat_BxD)
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
  direction against them (toy_scenes ~0.001, configs/cgml.py).
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


def inference_gains(cg: ml_collections.ConfigDict, state: "CgmlState") -> jax.Array:
  """The gain [l] that inference multiplies Eq. 4's step by: `step_gains`, or 1 without `cgml.calibrate_step`."""
  if cg.calibrate_step:
    return step_gains(state.gain_stats_3xL, cg.min_explained_move)
  return jnp.ones_like(state.gain_stats_3xL[0])


# ---------------------------------------------------------------- CIELAB (colorization task)

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


# ---------------------------------------------------------------- tasks


class Task(NamedTuple):
  """How G's raw output relates to x and y for one task (see the module docstring)."""
  out_shape: tuple[int, ...]  # G's output (H, W, C)
  encoder_input: Callable[[jax.Array], jax.Array]  # x -> H's input
  energy: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (x, g, y) -> E [B]
  to_image: Callable[[jax.Array, jax.Array], jax.Array]  # (x, g) -> image in [0, 1]


def _per_example_mean(a_Bx_: jax.Array) -> jax.Array:
  return jnp.mean(a_Bx_.reshape(a_Bx_.shape[0], -1), axis=-1)


def make_task(cgml: ml_collections.ConfigDict, x_shape, y_shape) -> Task:
  """The `cgml.task` for batches with x of `x_shape` and y of `y_shape` ([B, H, W, C])."""
  if cgml.task == "direct":
    return Task(out_shape=tuple(y_shape[1:]), encoder_input=lambda x: x,
                energy=lambda x, g, y: _per_example_mean(jnp.abs(g - y)),
                to_image=lambda x, g: jnp.clip(g, 0.0, 1.0))

  if cgml.task == "completion":
    c = y_shape[-1]
    if x_shape[-1] != c + 1 or x_shape[1:3] != y_shape[1:3]:
      raise ValueError(f"cgml.task='completion' needs x = [masked image, mask] with {c + 1} channels "
                       f"and y's size; got x {x_shape}, y {y_shape}.")

    def composite(x, g):
      mask = x[..., c:]
      return x[..., :c] * (1.0 - mask) + g * mask

    return Task(out_shape=tuple(y_shape[1:]), encoder_input=lambda x: x,
                energy=lambda x, g, y: _per_example_mean(jnp.abs(composite(x, g) - y)),
                to_image=lambda x, g: jnp.clip(composite(x, g), 0.0, 1.0))

  if cgml.task == "colorization":
    if x_shape[-1] != 1 or y_shape[-1] != 3:
      raise ValueError(f"cgml.task='colorization' needs a grey x and an RGB y; got x {x_shape}, "
                       f"y {y_shape}.")

    def energy(x, g_ab, y):
      del x
      ab_gt = (rgb_to_lab(y)[..., 1:] + AB_RANGE) / (2 * AB_RANGE)
      l1 = _per_example_mean(jnp.abs(g_ab[..., 0] - ab_gt[..., 0])) + _per_example_mean(
          jnp.abs(g_ab[..., 1] - ab_gt[..., 1]))
      b = g_ab.shape[0]
      kl = sum(kl_to_uniform(soft_histogram(g_ab[..., i].reshape(b, -1), cgml.histogram_bins))
               for i in range(2))
      return l1 + cgml.kl_weight * kl

    def to_image(x, g_ab):
      lab = jnp.concatenate([grey_to_lightness(x), g_ab * (2 * AB_RANGE) - AB_RANGE], axis=-1)
      return lab_to_rgb(lab)

    return Task(out_shape=tuple(y_shape[1:3]) + (2,),
                encoder_input=lambda x: grey_to_lightness(x) / 100.0, energy=energy, to_image=to_image)
  raise ValueError(f"Unknown cgml.task {cgml.task!r}; valid: {TASKS}")


# ---------------------------------------------------------------- state


@flax.struct.dataclass
class CgmlState(common.MethodState):
  """All of cGML's training state (replicated across devices).

  Attributes (beyond step, rng):
    step: `gen` updates so far (l per round).
    networks: {'encoder': H, 'generator': G} (updated together by the `gen`
      step, each with its own optimiser state) and {'znet': Z} (the `znet` step).
    z_BxD: the current batch's latents z_{t+1}, on S^n (written by the z step).
    z_prev_BxD: the latents before the last z step, z_t.
    gain_stats_3xL: per inner iteration t, moving averages of s . m, ||s||^2 and
      ||m||^2, Eq. 4's step s against the training move m (`step_against_move`,
      `update_step_gain`): Eq. 4's step gain (`step_gains`) and the share of the
      moves it explains (`explained_move`).
  """
  z_BxD: jax.Array
  z_prev_BxD: jax.Array
  gain_stats_3xL: jax.Array


# ---------------------------------------------------------------- config


def validate_config(config: ml_collections.ConfigDict) -> None:
  require = functools.partial(config_lib.require, config)
  cg, model = config.cgml, config.model
  names = models.model_names(models.CGML)
  require(model.name in names, "model.name", f"valid for cgml: {names}")
  require(cg.task in TASKS, "cgml.task", f"valid: {TASKS}")
  require(model.lipschitz in cgml_nets.LIPSCHITZ_METHODS, "model.lipschitz",
          f"valid: {cgml_nets.LIPSCHITZ_METHODS}")
  require(model.output_activation in ("sigmoid", "linear"), "model.output_activation",
          "valid: ['sigmoid', 'linear']")
  require(cg.z_dim >= 2, "cgml.z_dim", "must be >= 2 (z lives on S^{z_dim - 1})")
  require(cg.inner_steps >= 1, "cgml.inner_steps", "must be >= 1")
  require(cg.z_init_candidates >= 1, "cgml.z_init_candidates", "must be >= 1")
  require(cg.inference_steps >= 0, "cgml.inference_steps", "must be >= 0")
  require(cg.z_step_size > 0, "cgml.z_step_size", "must be > 0")
  require(0 < cg.z_step_decay <= 1, "cgml.z_step_decay", "must be in (0, 1]")
  require(cg.momentum_scale > 0, "cgml.momentum_scale", "must be > 0")
  require(0 < cg.step_gain_decay < 1, "cgml.step_gain_decay", "must be in (0, 1)")
  require(0 <= cg.min_explained_move < 1, "cgml.min_explained_move", "must be in [0, 1)")
  require(model.lipschitz_scale > 0, "model.lipschitz_scale", "must be > 0")
  require(model.znet_lipschitz_scale > 0, "model.znet_lipschitz_scale", "must be > 0")
  require(model.power_iterations >= 1, "model.power_iterations", "must be >= 1")
  require(cg.histogram_bins >= 2, "cgml.histogram_bins", "must be >= 2")
  require(cg.kl_weight >= 0, "cgml.kl_weight", "must be >= 0")
  # A round (one batch) makes cgml.inner_steps generator updates and runs whole.
  config_lib.require_whole_rounds(config, cg.inner_steps, "cgml.inner_steps")
  opt = cg.znet_optimizer
  require(opt.name in ("adam", "adamw"), "cgml.znet_optimizer.name", "valid: ['adam', 'adamw']")
  require(opt.learning_rate > 0, "cgml.znet_optimizer.learning_rate", "must be > 0")


# ---------------------------------------------------------------- the method


class _Parts(NamedTuple):
  """What the step builders share: the config, task, shapes and the three networks."""
  cg: ml_collections.ConfigDict
  task: Task
  batch_size: int
  nets: dict[str, nn.Module]  # encoder H, generator G, znet Z

  def encode(self, encoder_params, x):
    """H(x) -> (h, skips)."""
    return self.nets["encoder"].apply({"params": encoder_params}, self.task.encoder_input(x))

  def generate(self, generator_params, h, skips, z_BxD):
    return self.nets["generator"].apply({"params": generator_params}, h, skips, z_BxD)

  def predict_move(self, znet_params, z_BxD, h, t):
    """Z(z_t, h[, t / l]) -> (z_hat, rho_hat); t is the iteration (clipped to the round's l - 1)."""
    if not self.nets["znet"].iteration_input:
      return self.nets["znet"].apply({"params": znet_params}, z_BxD, h)
    t_fraction = jnp.minimum(t, self.cg.inner_steps - 1).astype(jnp.float32) / self.cg.inner_steps
    return self.nets["znet"].apply({"params": znet_params}, z_BxD, h, t_fraction)


def start_codes(parts: _Parts, generator_params, h, skips, batch, rng: jax.Array) -> jax.Array:
  """A round's z_0: of `cgml.z_init_candidates` (M) codes ~ U(S^n) per example, the lowest-energy one.

  Alg. 1 keeps one code per example, z = {z_1..z_J}, across its k epochs, so
  after the first epoch an example's trajectory starts where its code ended:
  in the basin of *its own* mode. The Z-network then learns, at each z_t, moves
  towards the mode whose basin z_t is in, so Eq. 4 tends to keep z_0 in the mode
  it starts in. Starting each round from one uniform z_0 instead (M = 1) trains
  Z on moves whose direction depends on y alone, not on z_t: their mean over the
  modes (what Z regresses, §2.1) is the descent of the mode-averaged energy, so
  Eq. 4 pulled every sample towards the majority mode (box completion: 19% box
  samples against 40% of the targets). The best of M uniform codes is a
  stand-in for the persistent code (we keep no per-example state, see the module
  docstring): for M >= a few times the number of modes it lies in the basin of
  the example's mode, the mode G(H(x), z) already produces there.

  Not `imle_selection.select_nearest_latents`: the criterion is the task's
  energy E (colorization adds a histogram KL that is no image distance), and M
  is small, so one batched call over [B, M] is enough.
  """
  cg, task = parts.cg, parts.task
  candidates_BxMxD = sample_sphere(rng, (parts.batch_size, cg.z_init_candidates, cg.z_dim))
  if cg.z_init_candidates == 1:
    return candidates_BxMxD[:, 0]
  energy_of = lambda z_BxD: task.energy(batch["x"], parts.generate(generator_params, h, skips, z_BxD),
                                        batch["y"])
  energies_BxM = jax.vmap(energy_of, in_axes=1, out_axes=1)(candidates_BxMxD)
  best_B = jnp.argmin(energies_BxM, axis=1)
  return jnp.take_along_axis(candidates_BxMxD, best_B[:, None, None], axis=1)[:, 0]


def _make_z_step(parts: _Parts) -> base.StepFn:
  cg, task = parts.cg, parts.task

  def z_step(state: CgmlState, batch):
    """Alg. 1, first line of the inner loop: z <- project(z - beta grad_z E), H, G, Z frozen."""
    z_init_rng = common.step_rngs(state.rng, state.step, "z_init")["z_init"]
    fresh = state.step % cg.inner_steps == 0  # The first inner iteration of a round: a new batch.
    h, skips = parts.encode(state.networks["encoder"].params, batch["x"])
    generator_params = state.networks["generator"].params
    z_t = jax.lax.cond(
        fresh, lambda: start_codes(parts, generator_params, h, skips, batch, z_init_rng),
        lambda: state.z_BxD)

    def total_energy(z_BxD):
      g = parts.generate(generator_params, h, skips, z_BxD)
      energy_B = task.energy(batch["x"], g, batch["y"])
      # Each example's E depends on its own z only: the gradient of the sum is
      # the per-example gradient.
      return jnp.sum(energy_B), energy_B

    (_, energy_B), grad_BxD = jax.value_and_grad(total_energy, has_aux=True)(z_t)
    inner = (state.step % cg.inner_steps).astype(jnp.float32)
    beta = cg.z_step_size * cg.z_step_decay**inner
    z_next = project_to_sphere(z_t - beta * grad_BxD)
    move_B = jnp.linalg.norm(z_next - z_t, axis=-1)
    return state.replace(z_BxD=z_next, z_prev_BxD=z_t), {
        "energy": jnp.mean(energy_B),
        "grad_norm": jnp.mean(jnp.linalg.norm(grad_BxD, axis=-1)),
        "move": jnp.mean(move_B),
    }

  return z_step


def _make_znet_step(parts: _Parts) -> base.StepFn:
  cg = parts.cg

  def znet_step(state: CgmlState, batch):
    """Alg. 1: update Z by L1[(z_{t+1}, rho), Z(z_t, H(x))], H, G, z frozen."""
    h, _ = parts.encode(state.networks["encoder"].params, batch["x"])
    h = jax.lax.stop_gradient(h)
    z_t, z_next = state.z_prev_BxD, state.z_BxD
    rho_B = cg.momentum_scale * jnp.linalg.norm(z_next - z_t, axis=-1)

    def loss_fn(znet_params):
      z_hat, rho_hat = parts.predict_move(znet_params, z_t, h, state.step % cg.inner_steps)
      z_l1 = jnp.mean(jnp.abs(z_hat - z_next))
      rho_l1 = jnp.mean(jnp.abs(rho_hat - rho_B))
      # The L1 over the D + 1 outputs (z_hat, rho_hat), averaged.
      loss = (cg.z_dim * z_l1 + (rho_l1 if cg.use_momentum else 0.0)) / (cg.z_dim + 1)
      return loss, (z_l1, rho_l1, rho_hat, z_hat)

    (loss, (z_l1, rho_l1, rho_hat, z_hat)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.networks["znet"].params)
    state = state.apply_gradients("znet", grads, count_step=False)
    # Z's prediction came before this update: the batch's moves are new to it.
    t = state.step % cg.inner_steps
    stats_3xL = update_step_gain(state.gain_stats_3xL, t,
                                 step_against_move(z_t, jax.lax.stop_gradient(z_hat),
                                                   jax.lax.stop_gradient(rho_hat), z_next),
                                 cg.step_gain_decay)
    state = state.replace(gain_stats_3xL=stats_3xL)
    return state, {
        "loss": loss, "z_l1": z_l1, "rho_l1": rho_l1, "rho_target": jnp.mean(rho_B),
        "rho_pred": jnp.mean(rho_hat), "grad_norm": optax.tree.norm(grads),
        "move_cosine": move_cosine(z_t, z_hat, z_next),
        "step_gain": step_gains(stats_3xL, cg.min_explained_move)[t],
        "explained_move": explained_move(stats_3xL)[t],
    }

  return znet_step


def _make_gen_step(parts: _Parts) -> base.StepFn:

  def gen_step(state: CgmlState, batch):
    """Alg. 1: update H, G by grad_w E at the current z, Z and z frozen."""
    z = jax.lax.stop_gradient(state.z_BxD)

    def loss_fn(params):
      h, skips = parts.encode(params["encoder"], batch["x"])
      g = parts.generate(params["generator"], h, skips, z)
      return jnp.mean(parts.task.energy(batch["x"], g, batch["y"]))

    params = {name: state.networks[name].params for name in ("encoder", "generator")}
    loss, grads = jax.value_and_grad(loss_fn)(params)
    state = state.apply_gradients("encoder", grads["encoder"], count_step=False)
    state = state.apply_gradients("generator", grads["generator"])
    return state, {"energy": loss, "grad_norm": optax.tree.norm(grads)}

  return gen_step


def _make_latent_runs(parts: _Parts) -> tuple[Callable, Callable, Callable]:
  """(inference_update, infer_latents, latent_trajectory): Eq. 4 once, T times, and T times kept."""
  cg = parts.cg

  def inference_update(znet_params, h, z_BxD, t=0, gain=1.0):
    """Eq. 4 at iteration t (t matters only to a Z-network that sees it), its step times `gain`."""
    z_hat, rho_hat = parts.predict_move(znet_params, z_BxD, h, t)
    return momentum_update(z_BxD, z_hat, rho_hat, cg.use_momentum, gain)

  def gain_at(gains_L, t):
    return gains_L[jnp.minimum(t, cg.inner_steps - 1)]

  def infer_latents(znet, h, z0_BxD, num_steps):
    """T iterations of Eq. 4 from z0, one compiled loop: z_T [B, D]; znet = (params, gains [l])."""
    params, gains_L = znet
    return jax.lax.fori_loop(0, num_steps, lambda t, z: inference_update(params, h, z, t, gain_at(gains_L, t)),
                             z0_BxD)

  def latent_trajectory(znet, h, z0_BxD, num_steps):
    """z_0 .. z_T: [B, T + 1, D]."""
    params, gains_L = znet
    def body(z, t):
      z_next = inference_update(params, h, z, t, gain_at(gains_L, t))
      return z_next, z_next
    _, zs_TxBxD = jax.lax.scan(body, z0_BxD, jnp.arange(num_steps))
    return jnp.concatenate([z0_BxD[:, None], jnp.moveaxis(zs_TxBxD, 0, 1)], axis=1)

  return inference_update, infer_latents, latent_trajectory


def _make_inference(parts: _Parts) -> tuple[Callable, dict[str, Callable]]:
  """(sample, extras): Eq. 4 inference from z_0 ~ U(S^n), its trajectory, codes and decoding."""
  cg, task = parts.cg, parts.task
  inference_update, infer_latents, latent_trajectory = _make_latent_runs(parts)

  def images_of(state, x, h, skips, z_BxNxD):
    """Images for N codes per input: [B, N, H, W, C]."""
    generator_params = state.networks["generator"].params
    one = lambda z_BxD: task.to_image(x, parts.generate(generator_params, h, skips, z_BxD))
    return jax.vmap(one, in_axes=1, out_axes=1)(z_BxNxD)

  def inferred_latents(state, h, rng, num_samples, run=infer_latents):
    """N z_0 ~ U(S^n) per input, each run through T iterations of Eq. 4 by `run`."""
    z0_BxNxD = sample_sphere(rng, (h.shape[0], num_samples, cg.z_dim))
    znet = (state.networks["znet"].params, inference_gains(cg, state))
    return jax.vmap(lambda z0: run(znet, h, z0, cg.inference_steps), in_axes=1, out_axes=1)(z0_BxNxD)

  def encode(state, x):
    return parts.encode(state.networks["encoder"].params, x)

  def sample(state, x, rng, num_samples):
    """N modes per input: N z_0 ~ U(S^n), T iterations of Eq. 4 each -> [B, N, H, W, C]."""
    h, skips = encode(state, x)
    return images_of(state, x, h, skips, inferred_latents(state, h, rng, num_samples))

  def trajectory(state, x, rng, num_samples):
    """Outputs along the inference iterations (Fig. 6): [B, N, T + 1, H, W, C]."""
    h, skips = encode(state, x)
    zs_BxNxTxD = inferred_latents(state, h, rng, num_samples, run=latent_trajectory)
    return jax.vmap(lambda z: images_of(state, x, h, skips, z), in_axes=2, out_axes=2)(zs_BxNxTxD)

  def latents(state, x, rng, num_samples):
    """The inferred codes z_T [B, N, D] of `sample` (same rng -> same codes)."""
    h, _ = encode(state, x)
    return inferred_latents(state, h, rng, num_samples)

  def codes_along_inference(state, x, rng, num_samples):
    """z_0 .. z_T of `sample` (same rng -> same codes): [B, N, T + 1, D]."""
    h, _ = encode(state, x)
    return inferred_latents(state, h, rng, num_samples, run=latent_trajectory)

  def initial_sample(state, x, rng, num_samples):
    """`sample` without the Z-network: G decoded at the same z_0 (t = 0), [B, N, H, W, C].

    What the generator alone covers; evaluate compares its mode recall with
    `sample`'s (t = T) to tell what Eq. 4 adds or loses.
    """
    h, skips = encode(state, x)
    z0_BxNxD = inferred_latents(state, h, rng, num_samples, run=lambda znet, h, z0, num_steps: z0)
    return images_of(state, x, h, skips, z0_BxNxD)

  def decode(state, x, z_BxNxD):
    """Images for given codes: [B, N, H, W, C] (no Z-network iterations)."""
    h, skips = encode(state, x)
    return images_of(state, x, h, skips, z_BxNxD)

  return sample, {"trajectory": trajectory, "latents": latents, "decode": decode,
                  "codes_along_inference": codes_along_inference, "initial_sample": initial_sample,
                  "inference_update": inference_update}


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None) -> base.Method:
  """cGML bound to `config` and the global batch shapes (it prepares nothing)."""
  del prepared
  cg = config.cgml
  x_shape, y_shape = tuple(batch_spec["x"].shape), tuple(batch_spec["y"].shape)
  task = make_task(cg, x_shape, y_shape)
  nets = models.make_model(config.model, models.ModelIO.of(batch_spec, code_shape=(cg.z_dim,),
                                                            y_shape=task.out_shape))
  parts = _Parts(cg=cg, task=task, batch_size=x_shape[0], nets=dict(nets))

  def init(rng):
    enc_rng, gen_rng, znet_rng, state_rng = jax.random.split(rng, 4)
    x = jnp.zeros((1,) + x_shape[1:], jnp.float32)
    z = jnp.zeros((1, cg.z_dim), jnp.float32).at[:, 0].set(1.0)
    enc_vars = parts.nets["encoder"].init(enc_rng, task.encoder_input(x))
    h, skips = parts.nets["encoder"].apply(enc_vars, task.encoder_input(x))
    gen_tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    znet_tx = common.make_optimizer(cg.znet_optimizer, config.train.num_steps)
    networks = {"encoder": common.Network.create(enc_vars, gen_tx),
                "generator": common.Network.create(parts.nets["generator"].init(gen_rng, h, skips, z), gen_tx),
                "znet": common.Network.create(parts.nets["znet"].init(znet_rng, z, h, jnp.zeros((1,))),
                                              znet_tx)}
    z_BxD = jnp.zeros((parts.batch_size, cg.z_dim), jnp.float32).at[:, 0].set(1.0)
    return common.create_state(CgmlState, rng=state_rng, networks=networks, z_BxD=z_BxD, z_prev_BxD=z_BxD,
                               gain_stats_3xL=jnp.zeros((3, cg.inner_steps), jnp.float32))

  def run_round(compiled, state, batch):
    for _ in range(cg.inner_steps):
      for name in STEP_NAMES:
        state = compiled(name, state, batch)
    return state

  sample, extras = _make_inference(parts)
  model = config.model
  step_text = (f"x the calibrated gain (0 below {cg.min_explained_move:g} explained)" if cg.calibrate_step
               else "as in the paper")
  description = (f"cGML ({cg.task}, {model.name}, z on S^{cg.z_dim - 1}, l={cg.inner_steps}, "
                 f"z_0 best of M={cg.z_init_candidates}, Z {'sees' if model.znet_iteration_input else 'blind to'} t, "
                 f"beta={cg.z_step_size}, alpha={cg.momentum_scale}, T={cg.inference_steps}, "
                 f"Eq. 4 step {step_text}, "
                 f"Lipschitz: {model.lipschitz} x{model.lipschitz_scale} (Z x{model.znet_lipschitz_scale}), "
                 f"{'with' if cg.use_momentum else 'without'} momentum)")
  return base.Method(
      init=init, steps={"z": _make_z_step(parts), "znet": _make_znet_step(parts), "gen": _make_gen_step(parts)},
      run_round=run_round, sample=sample, steps_per_round=cg.inner_steps, description=description,
      learning_rates=common.learning_rates(config, encoder=config.optimizer, generator=config.optimizer,
                                           znet=cg.znet_optimizer),
      extras=extras)
