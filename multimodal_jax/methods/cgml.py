"""`cgml`: Conditional Generation by Modeling the Latent space (cgml_iclr2021, Alg. 1, Eq. 1-4).

Networks (models/cgml_nets.py): encoder H, generator G(H(x), z) and the Z-network
Z(z_t, H(x)) -> (z_hat_{t+1}, rho_hat). z in R^{cgml.z_dim} lives on the unit sphere
S^n (§3, losses/latent_geometry.py); tasks (`cgml.task`) are in methods/cgml_tasks.py.

Training (Alg. 1): three separately compiled pure steps, run in order l = `cgml.inner_steps` times a batch
(Alg. 1's lines: 1 sample x, y; 2 for k epochs; 3 for x in X; 4 for l steps; 5 update z; 6 update Z;
7 update G, H):
  z     line 5, "Freeze H, G, Z and update z": z_{t+1} = project(z_t - beta_t grad_z E(G(H(x), z_t), y))
        per example, beta_t = `z_step_size` * `z_step_decay`^t (our choice; 1 = the paper's
        constant beta): the L1 gradient does not shrink near the optimum, so only a decaying
        beta makes the moves small there, as §2.2 needs ("E[rho] -> 0 as z_{t+1}, z_t -> z*").
  znet  line 6, "Freeze H, G, z and update Z": L1 between Z(z_t, H(x)) and the targets
        (z_{t+1}, rho), rho = alpha ||z_{t+1} - z_t|| (§2.2 writes the momentum
        as alpha E[z_{t+1} - z_t] but uses it as a scalar step length in Eq. 4).
  gen   line 7, "Freeze Z, z and update H, G": grad_w E(G(H(x), z_{t+1}), y).
`state.step` counts `gen` updates (`steps_per_round = l`), so `fold_in(rng, step)` never
repeats. Z never feeds back into the z or G/H updates, so runs that differ only in Z's
settings (e.g. the no-momentum ablation) share G and H exactly.

Where a round's z_t comes from (`cgml.z_start`):
  persistent  Alg. 1's z = {z_1..z_J}: one code per training example, `CgmlState.train_codes_NxD`,
              drawn ~ U(S^n) at init and indexed by the batch's stable `index`. Line 5 reads the
              example's code and writes z_{t+1} back, at every inner step, so the next visit (the
              next epoch, line 2) continues from it; the codes are state, so checkpoints hold
              them and a resumed run continues with the same codes. N comes from `prepare`.
  best_of_m   (our choice) every round starts afresh from `start_codes`: the lowest-energy of M
              codes ~ U(S^n) against the target; no per-example state.
The round's z_{t+1}, z_t live in the state too, so the steps stay pure.

Inference (§2.2, Eq. 4): z_0 ~ U(S^n), then T = `cgml.inference_steps` times
  z <- project(z + gain_t rho_hat (z_hat - z) / ||z_hat - z||),  (z_hat, rho_hat) = Z(z, H(x)[, t / l]),
in one `lax.fori_loop`, vmapped over N starting points for N modes. `cgml.use_momentum = False`
(the "w/o rho" ablation, Fig. 3c, Tables 2-3) drops rho and nothing else: Z is not trained on rho
and z <- project(z + gain_t (z_hat - z)), i.e. z_hat at gain 1 (§2.1's z_{t+1} = r'(z_t, x)). The training
moves shrink along a round, so with `model.znet_iteration_input` Z also sees t / l and T = l
replays a round's moves, stopping where training did. gain_t = 1 is the paper's Eq. 4;
`cgml.calibrate_step` (our addition) fits it to the training moves of iteration t, 0 where Z's
steps explain under `cgml.min_explained_move` of them (losses/latent_geometry.py); the fit
measures the step the run takes (with or without rho).
`initial_sample` decodes z_0 without Z, to compare with `sample`.
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from multimodal_jax import config_lib
from multimodal_jax.losses import latent_geometry
from multimodal_jax.methods import base
from multimodal_jax.methods import cgml_tasks
from multimodal_jax.methods import common
from multimodal_jax.models import cgml_nets
from multimodal_jax.models import registry as models

STEP_NAMES = ("z", "znet", "gen")
# `cgml.z_start`: where a round's z_t comes from (module docstring).
Z_STARTS = ("best_of_m", "persistent")
# The keys of `config.cgml` this module reads (`config_lib.check_section_keys`): `znet_optimizer` is an
# `optimizer` section.
CONFIG_SCHEMA = {"cgml": dict.fromkeys((
    "calibrate_step", "histogram_bins", "inference_steps", "inner_steps", "kl_weight", "min_explained_move",
    "momentum_scale", "step_gain_decay", "task", "use_momentum", "z_dim", "z_init_candidates", "z_start",
    "z_step_decay", "z_step_size"), None) | {"znet_optimizer": "optimizer"}}
# The prepared array of the persistent codes: N, the number of training examples.
NUM_TRAIN_EXAMPLES = "num_train_examples"


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
    train_codes_NxD: with `cgml.z_start='persistent'`, Alg. 1's z = {z_1..z_J}: the code of
      training example i in row i (the batch's `index`), on S^n; an unused [1, D] otherwise.
    gain_stats_3xL: per inner iteration t, moving averages of s . m, ||s||^2 and ||m||^2,
      Eq. 4's step s against the training move m (`latent_geometry.step_gains`).
  """
  z_BxD: jax.Array
  z_prev_BxD: jax.Array
  train_codes_NxD: jax.Array
  gain_stats_3xL: jax.Array


def inference_gains(cg: ml_collections.ConfigDict, state: CgmlState) -> jax.Array:
  """The gain [l] that inference multiplies Eq. 4's step by: `step_gains`, or 1 without `cgml.calibrate_step`."""
  if cg.calibrate_step:
    return latent_geometry.step_gains(state.gain_stats_3xL, cg.min_explained_move)
  return jnp.ones_like(state.gain_stats_3xL[0])


# ---------------------------------------------------------------- config


def validate_config(config: ml_collections.ConfigDict) -> None:
  require = functools.partial(config_lib.require, config)
  cg, model = config.cgml, config.model
  names = models.model_names(models.CGML)
  require(model.name in names, "model.name", f"valid for cgml: {names}")
  require(cg.task in cgml_tasks.TASKS, "cgml.task", f"valid: {cgml_tasks.TASKS}")
  require(cg.z_start in Z_STARTS, "cgml.z_start", f"valid: {list(Z_STARTS)}")
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
  require(opt.name in common.OPTIMIZERS, "cgml.znet_optimizer.name", f"valid: {list(common.OPTIMIZERS)}")
  require(opt.learning_rate > 0, "cgml.znet_optimizer.learning_rate", "must be > 0")


def prepare(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """With persistent codes, the number of training examples N (one code each); nothing otherwise (reads no example)."""
  if config.cgml.z_start != "persistent":
    return {}
  return {NUM_TRAIN_EXAMPLES: np.asarray(len(train_source), np.int64)}


def num_train_codes(cg: ml_collections.ConfigDict, prepared: base.Prepared) -> int:
  """Rows of `CgmlState.train_codes_NxD`: N with persistent codes, else 1 (unused)."""
  if cg.z_start != "persistent":
    return 1
  if NUM_TRAIN_EXAMPLES not in prepared:
    raise ValueError(f"cgml.z_start='persistent' keeps one code per training example: make_method needs the "
                     f"prepared {NUM_TRAIN_EXAMPLES!r} (cgml.prepare); got {sorted(prepared)}.")
  return int(prepared[NUM_TRAIN_EXAMPLES])


# ---------------------------------------------------------------- the method


class _Parts(NamedTuple):
  """What the step builders share: the config, task, shapes and the three networks."""
  cg: ml_collections.ConfigDict
  task: cgml_tasks.Task
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

  Alg. 1 keeps one code per example, z = {z_1..z_J}, across its k epochs, so a trajectory
  starts in the basin of the example's own mode and Z learns, at each z_t, moves towards
  the mode whose basin z_t is in. From one uniform z_0 (M = 1) the moves depend on y alone,
  not on z_t: Z regresses their mean (§2.1), the descent of the mode-averaged energy, and
  Eq. 4 pulls every sample towards the majority mode. For M >= a few times the number of
  modes, the best of M uniform codes lies in the basin of the example's mode and stands in
  for the persistent code without per-example state (`cgml.z_start='best_of_m'`;
  'persistent' keeps Alg. 1's codes instead).

  Not `imle_selection.select_nearest_latents`: the criterion is the task's energy E
  (colorization adds a histogram KL that is no image distance), and M is small, so one
  batched call over [B, M] is enough.
  """
  cg, task = parts.cg, parts.task
  candidates_BxMxD = latent_geometry.sample_sphere(rng, (parts.batch_size, cg.z_init_candidates, cg.z_dim))
  if cg.z_init_candidates == 1:
    return candidates_BxMxD[:, 0]
  energy_of = lambda z_BxD: task.energy(batch["x"], parts.generate(generator_params, h, skips, z_BxD),
                                        batch["y"])
  energies_BxM = jax.vmap(energy_of, in_axes=1, out_axes=1)(candidates_BxMxD)
  best_B = jnp.argmin(energies_BxM, axis=1)
  return jnp.take_along_axis(candidates_BxMxD, best_B[:, None, None], axis=1)[:, 0]


def _make_z_step(parts: _Parts) -> base.StepFn:
  cg, task = parts.cg, parts.task
  persistent = cg.z_start == "persistent"

  def z_step(state: CgmlState, batch):
    """Alg. 1 line 5: z <- project(z - beta grad_z E), H, G, Z frozen; persistent codes are written back."""
    h, skips = parts.encode(state.networks["encoder"].params, batch["x"])
    generator_params = state.networks["generator"].params
    if persistent:
      z_t = state.train_codes_NxD[batch["index"]]
    else:
      z_init_rng = common.step_rngs(state.rng, state.step, "z_init")["z_init"]
      fresh = state.step % cg.inner_steps == 0  # The first inner iteration of a round: a new batch.
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
    z_next = latent_geometry.project_to_sphere(z_t - beta * grad_BxD)
    move_B = jnp.linalg.norm(z_next - z_t, axis=-1)
    state = state.replace(z_BxD=z_next, z_prev_BxD=z_t)
    if persistent:
      # An index twice in one batch (sampling with replacement) keeps one of its rows' z_{t+1}.
      state = state.replace(train_codes_NxD=state.train_codes_NxD.at[batch["index"]].set(z_next))
    return state, {
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
    stats_3 = latent_geometry.step_against_move(z_t, jax.lax.stop_gradient(z_hat),
                                                jax.lax.stop_gradient(rho_hat), z_next, cg.use_momentum)
    stats_3xL = latent_geometry.update_step_gain(state.gain_stats_3xL, t, stats_3, cg.step_gain_decay)
    state = state.replace(gain_stats_3xL=stats_3xL)
    return state, {
        "loss": loss, "z_l1": z_l1, "rho_l1": rho_l1, "rho_target": jnp.mean(rho_B),
        "rho_pred": jnp.mean(rho_hat), "grad_norm": optax.tree.norm(grads),
        "move_cosine": latent_geometry.move_cosine(z_t, z_hat, z_next),
        "step_gain": latent_geometry.step_gains(stats_3xL, cg.min_explained_move)[t],
        "explained_move": latent_geometry.explained_move(stats_3xL)[t],
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
    return latent_geometry.momentum_update(z_BxD, z_hat, rho_hat, cg.use_momentum, gain)

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
    z0_BxNxD = latent_geometry.sample_sphere(rng, (h.shape[0], num_samples, cg.z_dim))
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
  """cGML bound to `config`, the global batch shapes and, with persistent codes, N (`prepare`)."""
  cg = config.cgml
  num_codes = num_train_codes(cg, prepared or {})
  x_shape, y_shape = tuple(batch_spec["x"].shape), tuple(batch_spec["y"].shape)
  task = cgml_tasks.make_task(cg, x_shape, y_shape)
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
    # Alg. 1's z_j ~ U(S^n) (z_0 ~ zeta, §2); a stream of its own, so the other keys stay as they were.
    train_codes_NxD = latent_geometry.sample_sphere(jax.random.fold_in(rng, common.stream_id("train_codes")),
                                                    (num_codes, cg.z_dim))
    return common.create_state(CgmlState, rng=state_rng, networks=networks, z_BxD=z_BxD, z_prev_BxD=z_BxD,
                               train_codes_NxD=train_codes_NxD,
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
  start_text = (f"persistent codes (Alg. 1, N={num_codes})" if cg.z_start == "persistent"
                else f"z_0 best of M={cg.z_init_candidates}")
  description = (f"cGML ({cg.task}, {model.name}, z on S^{cg.z_dim - 1}, l={cg.inner_steps}, "
                 f"{start_text}, Z {'sees' if model.znet_iteration_input else 'blind to'} t, "
                 f"beta={cg.z_step_size}, alpha={cg.momentum_scale}, T={cg.inference_steps}, "
                 f"{'Eq. 4 step' if cg.use_momentum else 'step z_hat - z (no rho)'} {step_text}, "
                 f"Lipschitz: {model.lipschitz} x{model.lipschitz_scale} (Z x{model.znet_lipschitz_scale}), "
                 f"{'with' if cg.use_momentum else 'without'} momentum)")
  return base.Method(
      init=init, steps={"z": _make_z_step(parts), "znet": _make_znet_step(parts), "gen": _make_gen_step(parts)},
      run_round=run_round, sample=sample, steps_per_round=cg.inner_steps, description=description,
      learning_rates=common.learning_rates(config, encoder=config.optimizer, generator=config.optimizer,
                                           znet=cg.znet_optimizer),
      extras=extras)
