"""`flow_matching`: conditional flow matching with the straight path, the iterative reference (issue 42).

Not one of the five papers: what a researcher would pick today instead of
them, measured in the same harness. Lipman et al., "Flow Matching for
Generative Modeling" (ICLR 2023), with the optimal-transport conditional path
(their Eq. 20-23 at sigma_min = 0), which is Liu et al.'s rectified flow
("Flow Straight and Fast", ICLR 2023, Eq. 1):

    u = (y - ref) * scale                     the target in the flow's space
    u_0 ~ N(0, I),  t ~ p(t),  u_t = (1 - t) u_0 + t u
    loss = E || v(u_t, t, x) - (u - u_0) ||^2

`ref` and `scale` map images to a space where N(0, I) is a sensible start:
ref = 0.5, scale = 2 ([0, 1] -> [-1, 1], the usual image normalisation); for
super-resolution (`flow_matching.skip`, like the SR generators' global skip)
ref = bicubic(x), so the flow carries only the residual, scaled up by `scale`
(SR3 and Palette instead condition on the upsampled input alone; the residual
is this codebase's convention for SR). p(t): uniform (Lipman et al.), or
logit-normal (Esser et al. 2024, "Scaling Rectified Flow Transformers",
§3.1: t = sigmoid(m + s n), n ~ N(0, 1)), `flow_matching.time_sampling`.

Sampling integrates du/dt = v(u, t, x) from t = 0 to 1 in `sample_steps`
equal steps, Euler or Heun (the trapezoid corrector: two evaluations per
step, the last step Euler's), in one `lax.fori_loop`, vmapped over the N samples of each input;
then y = clip(ref + u / scale, 0, 1). An exponential moving average of the
parameters (`ema_decay`, 0 = off, with a warm-up: `ema_decay_at`) is what
samples when on, as in both papers' code. `sample_steps` and `solver` are inference settings: `evaluate
--override=flow_matching.sample_steps=8` changes them on a trained run.

Extras: `trajectory` (the image y_t = clip(ref + u_t / scale) at up to
`TRAJECTORY_POINTS` evenly spaced steps of the sampler, t = 0 and t = 1
included: [B, N, P, H, W, C]).

What the network outputs (`prediction`): 'velocity', v itself (Lipman et al.);
or 'sample', the clean target u_hat (Li & He 2025, "Back to Basics: Let
Denoising Generative Models Denoise", §3: x-prediction with the velocity
loss), from which v = (u_hat - u_t) / max(1 - t, `min_one_minus_t`). The loss
is the same l2 on v either way. With 'sample' the last Euler step lands on
the network's u_hat, so a field too small to cancel its input noise pixel by
pixel does not leave that noise in the samples (experiments/results/flow_matching.md).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from multimodal_jax import config_lib
from multimodal_jax.methods import base
from multimodal_jax.methods import common
from multimodal_jax.models import registry as models

CONFIG_SCHEMA = {"flow_matching": dict.fromkeys(("time_sampling", "logit_normal_mean", "logit_normal_std",
                                                 "sample_steps", "solver", "skip", "scale", "ema_decay",
                                                 "prediction", "min_one_minus_t"))}
# Keys `evaluate --override` may change on a trained run: they act at sampling only.
INFERENCE_KEYS = ("flow_matching.sample_steps", "flow_matching.solver")
TIME_SAMPLINGS = ("uniform", "logit_normal")
SOLVERS = ("euler", "heun")
SKIPS = ("auto", "none", "bicubic")
PREDICTIONS = ("velocity", "sample")
TRAJECTORY_POINTS = 9


def validate_config(config: ml_collections.ConfigDict) -> None:
  fm = config.flow_matching
  config_lib.require(config, config.model.name in models.model_names(models.VELOCITY), "model.name",
                     f"valid: {models.model_names(models.VELOCITY)}")
  config_lib.require(config, fm.time_sampling in TIME_SAMPLINGS, "flow_matching.time_sampling",
                     f"valid: {list(TIME_SAMPLINGS)}")
  config_lib.require(config, fm.logit_normal_std > 0, "flow_matching.logit_normal_std", "must be > 0")
  config_lib.require(config, isinstance(fm.sample_steps, int) and fm.sample_steps >= 1,
                     "flow_matching.sample_steps", "must be an int >= 1")
  config_lib.require(config, fm.solver in SOLVERS, "flow_matching.solver", f"valid: {list(SOLVERS)}")
  config_lib.require(config, fm.skip in SKIPS, "flow_matching.skip", f"valid: {list(SKIPS)}")
  config_lib.require(config, fm.scale > 0, "flow_matching.scale", "must be > 0")
  config_lib.require(config, 0 <= fm.ema_decay < 1, "flow_matching.ema_decay", "must be in [0, 1) (0 = off)")
  config_lib.require(config, fm.prediction in PREDICTIONS, "flow_matching.prediction", f"valid: {list(PREDICTIONS)}")
  config_lib.require(config, 0 < fm.min_one_minus_t < 1, "flow_matching.min_one_minus_t", "must be in (0, 1)")


@flax.struct.dataclass
class FlowState(common.MethodState):
  """The state, with the parameters' moving average (`ema_decay`; the params themselves when off)."""
  ema_params: Any = None


def ema_decay_at(decay: float, step: jax.Array) -> jax.Array:
  """min(decay, (1 + step) / (10 + step)): the average forgets the initial parameters early.

  With a constant 0.999 the initial (random) parameters would still weigh 0.999^2400 = 9% in
  the average after 2400 updates; the warm-up is TensorFlow's `ExponentialMovingAverage(num_updates=)`.
  """
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def resolve_skip(skip: str, x_shape: tuple[int, ...], y_shape: tuple[int, ...]) -> str:
  """'auto' -> 'bicubic' when x is an RGB image smaller than y (super-resolution), else 'none'."""
  if skip != "auto":
    return skip
  return "bicubic" if x_shape[-1] == y_shape[-1] == 3 and x_shape[0] < y_shape[0] else "none"


def sample_times(fm: ml_collections.ConfigDict, rng: jax.Array, n: int) -> jax.Array:
  """t [n] in (0, 1): uniform, or sigmoid(m + s N(0, 1)) (logit-normal)."""
  if fm.time_sampling == "uniform":
    return jax.random.uniform(rng, (n,))
  return jax.nn.sigmoid(fm.logit_normal_mean + fm.logit_normal_std * jax.random.normal(rng, (n,)))


def integrate(velocity, u0: jax.Array, num_steps: int, solver: str, keep: tuple[int, ...] = ()):
  """u_1 from u_0 along du/dt = velocity(u, t) [t: a scalar], `num_steps` equal steps.

  Euler: u += dt v(u, t). Heun: u' = u + dt v(u, t); u += dt/2 (v(u, t) + v(u', t + dt)), except on
  the last step, which is Euler's (Karras et al. 2022, Alg. 1: no correction at the end of the path,
  where a clean-sample field divides by 1 - t = 0).
  With `keep` (step indices in 0..num_steps) also returns u at those steps, [len(keep), ...].
  """
  dt = 1.0 / num_steps

  def step(i, u):
    t = i * dt
    v = velocity(u, t)
    if solver == "heun":
      v = jax.lax.cond(i < num_steps - 1, lambda: 0.5 * (v + velocity(u + dt * v, t + dt)), lambda: v)
    return u + dt * v

  if not keep:
    return jax.lax.fori_loop(0, num_steps, step, u0)
  kept = jnp.zeros((len(keep),) + u0.shape, u0.dtype)
  keep_arr = jnp.asarray(keep)

  def step_keep(i, carry):
    u, kept = carry
    kept = jnp.where((keep_arr == i).reshape((-1,) + (1,) * u.ndim), u[None], kept)
    return step(i, u), kept

  u, kept = jax.lax.fori_loop(0, num_steps, step_keep, (u0, kept))
  kept = jnp.where((keep_arr == num_steps).reshape((-1,) + (1,) * u.ndim), u[None], kept)
  return u, kept


def trajectory_steps(num_steps: int, points: int = TRAJECTORY_POINTS) -> tuple[int, ...]:
  """Up to `points` evenly spaced step indices of 0..num_steps, both ends included."""
  return tuple(sorted({int(round(k)) for k in np.linspace(0, num_steps, min(points, num_steps + 1))}))


@dataclasses.dataclass(frozen=True)
class _Flow:
  """The flow's space and field: images <-> u = (y - ref) * scale, and v(u_t, t, x) from the network."""
  model: Any
  prediction: str  # 'velocity' or 'sample'
  min_one_minus_t: float
  skip: str  # 'none' or an upsampling method (`resolve_skip`)
  scale: float
  y_shape: tuple[int, ...]
  factor: int  # output size / input size

  def reference(self, x):
    if self.skip == "none":
      return jnp.full((x.shape[0],) + self.y_shape, 0.5, jnp.float32)
    return models.upsample_reference(x[..., :self.y_shape[-1]], self.factor, self.skip)

  def to_flow(self, y, x):
    return (y - self.reference(x)) * self.scale

  def to_image(self, u, x):
    return jnp.clip(self.reference(x) + u / self.scale, 0.0, 1.0)

  def field(self, params, x, u_t, t, floor=None):
    """v(u_t, t, x) [B, ...]: the network's output, or derived from its clean-sample prediction.

    Training bounds 1 - t below by `min_one_minus_t` (the loss's weight; `floor` None); the sampler,
    whose t stays below 1, divides by 1 - t itself, so its last Euler step lands on the prediction.
    """
    out = self.model.apply({"params": params}, x, u_t, t)
    if self.prediction == "velocity":
      return out
    floor = self.min_one_minus_t if floor is None else floor
    return (out - u_t) / jnp.maximum(1.0 - t, floor)[:, None, None, None]


def _description(fm: ml_collections.ConfigDict, flow: _Flow) -> str:
  nfe = 2 * fm.sample_steps - 1 if fm.solver == "heun" else fm.sample_steps
  time_text = ("t ~ U(0, 1)" if fm.time_sampling == "uniform" else
               f"t ~ logit-normal({fm.logit_normal_mean:g}, {fm.logit_normal_std:g})")
  return (f"conditional flow matching (straight path, {time_text}, predicts {flow.prediction}, skip {flow.skip}, "
          f"scale {fm.scale:g}, EMA {fm.ema_decay:g}), {fm.solver} x {fm.sample_steps} steps "
          f"({nfe} evaluations per sample)")


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None) -> base.Method:
  """Conditional flow matching bound to `config` and the batch shapes."""
  del prepared
  fm = config.flow_matching
  x_shape, y_shape = tuple(batch_spec["x"].shape[1:]), tuple(batch_spec["y"].shape[1:])
  model = models.make_model(config.model, models.ModelIO.of(batch_spec))
  # Runs recorded before `prediction` existed predicted the velocity.
  flow = _Flow(model=model, prediction=fm.get("prediction", "velocity"),
               min_one_minus_t=fm.get("min_one_minus_t", 0.05), skip=resolve_skip(fm.skip, x_shape, y_shape),
               scale=fm.scale, y_shape=y_shape, factor=y_shape[0] // x_shape[0])

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = model.init(params_rng, jnp.zeros((1,) + x_shape), jnp.zeros((1,) + y_shape), jnp.zeros((1,)))
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    net = common.Network.create(variables, tx)
    return common.create_state(FlowState, rng=state_rng, networks={"velocity": net},
                               ema_params=jax.tree.map(jnp.copy, net.params) if fm.ema_decay else None)

  def train_step(state: FlowState, batch):
    rngs = common.step_rngs(state.rng, state.step, "noise", "time")
    x, y = batch["x"], batch["y"]
    u1 = flow.to_flow(y, x)
    u0 = jax.random.normal(rngs["noise"], u1.shape)
    t = sample_times(fm, rngs["time"], u1.shape[0])
    u_t = (1.0 - t)[:, None, None, None] * u0 + t[:, None, None, None] * u1

    def loss_fn(params):
      return jnp.mean(jnp.square(flow.field(params, x, u_t, t) - (u1 - u0)))

    loss, grads = jax.value_and_grad(loss_fn)(state.networks["velocity"].params)
    state = state.apply_gradients("velocity", grads)
    if fm.ema_decay:
      decay = ema_decay_at(fm.ema_decay, state.step)
      ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params,
                         state.networks["velocity"].params)
      state = state.replace(ema_params=ema)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  def sampling_params(state):
    return state.ema_params if fm.ema_decay else state.networks["velocity"].params

  def draw(state, x, rng, num_samples, keep=()):
    """vmap over the N samples of one fori_loop integration each: u_1 [N, B, ...] (and kept u_t)."""
    params = sampling_params(state)

    def one(sample_rng):
      u0 = jax.random.normal(sample_rng, (x.shape[0],) + y_shape)
      velocity = lambda u, t: flow.field(params, x, u, jnp.full((x.shape[0],), t, jnp.float32), floor=1e-6)
      return integrate(velocity, u0, fm.sample_steps, fm.solver, keep)

    return jax.vmap(one)(jax.random.split(rng, num_samples))

  def sample(state, x, rng, num_samples):
    """N samples per input: [B, N, H, W, C] in [0, 1]."""
    u_NxB = draw(state, x, rng, num_samples)
    return jnp.swapaxes(jax.vmap(lambda u: flow.to_image(u, x))(u_NxB), 0, 1)

  def trajectory(state, x, rng, num_samples):
    """y_t at `trajectory_steps(sample_steps)` of the sampler: [B, N, P, H, W, C] (same rng: `sample`'s)."""
    _, kept_NxPxB = draw(state, x, rng, num_samples, keep=trajectory_steps(fm.sample_steps))
    images = jax.vmap(jax.vmap(lambda u: flow.to_image(u, x)))(kept_NxPxB)  # [N, P, B, ...]
    return jnp.transpose(images, (2, 0, 1) + tuple(range(3, images.ndim)))

  description = _description(fm, flow)
  return base.Method(init=init, steps={"train": train_step}, run_round=base.single_step_round("train"),
                     sample=sample, steps_per_round=1, description=description,
                     learning_rates=common.learning_rates(config, velocity=config.optimizer),
                     extras={"trajectory": trajectory})
