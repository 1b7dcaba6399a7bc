"""`imle`: conditional IMLE (IJCV Alg. 1), with SRIM's schedule for super-resolution.

One round of the training loop is one outer iteration k of Algorithm 1:
  * the loop's global batch is the pool S (`config.data.batch_size` = |S|);
  * the compiled "select" step draws m codes per pool example and stores the
    nearest one, sigma(i) (lines 4-8), in the state (`pool_latents`), via the
    batched kernel `losses.imle_selection.select_nearest_latents`;
  * the compiled "update" step runs `imle.updates_per_selection` = L times
    (lines 9-12): each takes the next |S~| examples of a per-round random
    permutation of S (a random mini-batch S~ of S, covering S evenly) and
    makes one Adam step on mean_{i in S~} L(T(x_i, z_sigma(i)), y_i).
`state.step` counts updates, so re-selection happens every L steps.

SRIM's schedule (§5.1.1), as functions of `state.step` inside the compiled
steps (no recompilation):
  * steps < `imle.zero_code_steps`: z = 0 (deterministic pretraining); the
    select step then only evaluates T(x, 0) (no search, no perturbation);
  * steps >= `imle.bilinear_from_step` (>= 0): bilinear instead of
    nearest-neighbour upsampling in the generator.

Distances (IJCV §3.7, Eq. 1): the training loss is `config.distance` and the
selection distance `config.imle.selection_distance`, both
`perceptual.default_distance_config()` blocks built by
`perceptual.make_distance`; the run's description (printed by the loop) says
which are in use. A feature distance with `layer_weights=()` gets the
paper's "each term roughly the same magnitude" weights at start-up
(`Distance.calibrate` on `imle.calibration_examples` real targets; the log
prints the values to pin). Frozen network parameters (VGG) live in the state
(so in checkpoints), not as constants in the compiled executables.

Metrics: select/{selected_distance, selected_distance_change (vs the previous
round), mean_sample_distance (all m samples), zero_code_phase, seconds} and
update/{loss, grad_norm, selected_distance (of the minibatch, at selection
time), seconds}. `seconds` is the step's device time, measured by host
callbacks at its start and end (no host sync in the loop;
`imle.time_steps=False` turns them off).
"""

from __future__ import annotations

import functools
import time
from typing import Any

import flax
import flax.linen as nn
import jax
from jax.experimental import io_callback
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from multimodal_jax import config_lib
from multimodal_jax.losses import imle_selection
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base
from multimodal_jax.methods import common
from multimodal_jax.methods import regression
from multimodal_jax.models import conv_generator
from multimodal_jax.models import rrdb

PyTree = Any
GENERATOR_NAMES = ("rrdb", "conv_generator")
# Independent random streams: folded into state.rng before the step.
_SELECT_STREAM, _UPDATE_STREAM = 1, 2


@flax.struct.dataclass
class IMLEState(common.TrainState):
  """The generator's TrainState plus the pool's selected codes and frozen distance parameters.

  Attributes (beyond common.TrainState's step, rng, params = T's, opt_state, tx):
    pool_latents: [|S|, *latent_shape], z_{i, sigma(i)} of the current pool.
    pool_distances: [|S|], their selection distances.
    last_selected_distance: the previous round's mean selected distance (NaN
      before the first selection).
    frozen: {weights source: {'params', 'heads'}} of the distances' networks.
  """
  pool_latents: jax.Array
  pool_distances: jax.Array
  last_selected_distance: jax.Array
  frozen: PyTree


class CodeConcatGenerator(nn.Module):
  """Any x -> y generator made conditional on z: z is concatenated to x's channels.

  z [B, h, w, c] is at x's spatial size (as SRIM's codes); `bilinear` is ignored.
  """
  inner: nn.Module

  @nn.compact
  def __call__(self, x, z, bilinear=False):
    del bilinear
    return self.inner(jnp.concatenate([x, z.astype(x.dtype)], axis=-1))


def make_generator(config: ml_collections.ConfigDict, x_shape, y_shape) -> nn.Module:
  """The generator T(x, z, bilinear) named by `config.model.name`."""
  factor = regression.upsample_factor_of(x_shape, y_shape)
  model = config.model
  if model.name == "rrdb":
    return rrdb.RRDBNet(out_channels=y_shape[-1], features=model.features, num_blocks=model.num_blocks,
                        growth=model.growth, upsample_factor=factor,
                        dense_conv_style=model.dense_conv_style)
  if model.name == "conv_generator":
    return CodeConcatGenerator(conv_generator.ConvGenerator(
        out_channels=y_shape[-1], features=model.features, num_blocks=model.num_blocks,
        upsample_factor=factor))
  raise ValueError(f"Unknown model.name {model.name!r} for imle; valid: {list(GENERATOR_NAMES)}")


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the keys only imle reads (model, imle.*, the two distances) before anything compiles."""
  if "imle" not in config:
    raise ValueError("config.method='imle' needs a config.imle section (see configs/srim.py).")
  check = functools.partial(config_lib.require, config)
  check(config.model.name in GENERATOR_NAMES, "model.name", f"valid for imle: {list(GENERATOR_NAMES)}")
  if config.model.name == "rrdb":
    check("growth" in config.model and config.model.growth > 0, "model.growth",
          "the rrdb generator needs model.growth > 0")
    check(config.model.get("dense_conv_style") in rrdb.DENSE_CONV_STYLES, "model.dense_conv_style",
          f"valid: {list(rrdb.DENSE_CONV_STYLES)}")
  imle = config.imle
  for key in ("num_samples", "chunk_size", "updates_per_selection", "minibatch_size", "code_channels",
              "example_blocks"):
    check(imle[key] > 0, f"imle.{key}", "must be > 0")
  check(imle.chunk_size <= imle.num_samples, "imle.chunk_size", "must be <= imle.num_samples (m)")
  check(imle.minibatch_size <= config.data.batch_size, "imle.minibatch_size",
        f"|S~| must be <= |S| = data.batch_size ({config.data.batch_size})")
  check(imle.perturbation >= 0, "imle.perturbation", "must be >= 0")
  check(imle.zero_code_steps >= 0 and imle.zero_code_steps % imle.updates_per_selection == 0,
        "imle.zero_code_steps", f"must be >= 0 and a multiple of imle.updates_per_selection "
        f"({imle.updates_per_selection}), so that no round straddles the two phases")
  check(config.data.batch_size % (jax.device_count() * imle.example_blocks) == 0, "imle.example_blocks",
        f"data.batch_size ({config.data.batch_size}) must be divisible by devices "
        f"({jax.device_count()}) x example_blocks")
  for key, block in (("distance", config.distance), ("imle.selection_distance", imle.selection_distance)):
    check(block.name in perceptual.DISTANCE_NAMES, f"{key}.name", f"valid: {list(perceptual.DISTANCE_NAMES)}")


def _frozen_split(distance: perceptual.Distance) -> tuple[perceptual.Distance, str, dict]:
  """(the distance without its arrays, a key naming its weights, the arrays)."""
  return distance.replace(params=None, heads=None), distance.weights_source, {
      "params": distance.params, "heads": distance.heads}


def _calibrated(distance: perceptual.Distance, config: ml_collections.ConfigDict) -> perceptual.Distance:
  """Equal-contribution weights (IJCV §3.7) from pairs of real targets, if the config asks."""
  if not distance.needs_calibration:
    return distance
  from multimodal_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  y = pipeline.load_eval_examples(config, config.imle.calibration_examples)["y"]
  return distance.calibrate(*perceptual.calibration_pairs(jnp.asarray(y)))


def _marker(tree: PyTree) -> jax.Array:
  """A scalar that depends on every leaf of `tree` (orders the stop-clock callback)."""
  return sum(jnp.sum(leaf.ravel()[:1].astype(jnp.float32)) for leaf in jax.tree.leaves(tree)
             if jnp.issubdtype(leaf.dtype, jnp.number))


def timed(step_fn: base.StepFn, name: str) -> base.StepFn:
  """Adds metrics['seconds'], the step's run time, read by two host callbacks.

  The first callback runs before any of the step's work (its result joins the
  inputs through an optimization barrier), the second after all of it. Only
  the device's executor calls back; the training loop never waits.
  """
  clock = {}

  def start(_):
    clock[name] = time.perf_counter()
    return np.zeros((), np.float32)

  def stop(_):
    return np.asarray(time.perf_counter() - clock.get(name, time.perf_counter()), np.float32)

  scalar = jax.ShapeDtypeStruct((), jnp.float32)

  def step(state, batch):
    t0 = io_callback(start, scalar, state.step)
    state, batch, _ = jax.lax.optimization_barrier((state, batch, t0))
    state, metrics = step_fn(state, batch)
    state, metrics = jax.lax.optimization_barrier((state, metrics))
    metrics = dict(metrics, seconds=io_callback(stop, scalar, _marker((state, metrics))))
    return state, metrics

  step.__name__ = step.__qualname__ = f"timed_{name}_step"
  return step


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                generator: nn.Module | None = None) -> base.Method:
  """Conditional IMLE bound to `config` and the pool's shapes.

  Args:
    config: a locked config with `imle`, `distance` and `model` sections (configs/srim.py).
    batch_spec: the global batch (= the pool S) as ShapeDtypeStructs: x, y.
    generator: optional Linen module T(x, z, bilinear) replacing `config.model`
      (tests drive the method with tiny networks this way).
  """
  imle = config.imle
  x_spec, y_spec = batch_spec["x"], batch_spec["y"]
  pool_size = x_spec.shape[0]
  model = generator if generator is not None else make_generator(config, x_spec.shape, y_spec.shape)
  # Forward-only passes (selection, sampling) run the RRDB trunk as a rolled
  # loop: as fast, and much quicker to compile; training unrolls it (models/rrdb.py).
  forward_model = model.clone(unroll=1) if isinstance(model, rrdb.RRDBNet) else model
  latent_shape = tuple(x_spec.shape[1:-1]) + (imle.code_channels,)

  loss_distance = _calibrated(perceptual.make_distance(config.distance), config)
  selection_distance = _calibrated(perceptual.make_distance(imle.selection_distance), config)
  loss_template, loss_key, loss_arrays = _frozen_split(loss_distance)
  sel_template, sel_key, sel_arrays = _frozen_split(selection_distance)
  frozen_init = {loss_key: loss_arrays, sel_key: sel_arrays}  # one copy when both share weights

  def with_arrays(template, key, frozen):
    return template.replace(params=frozen[key]["params"], heads=frozen[key]["heads"])

  def apply(params, x, z, step, module=forward_model):
    bilinear = (imle.bilinear_from_step >= 0) & (step >= imle.bilinear_from_step)
    return module.apply({"params": params}, x, z, bilinear)

  def zero_phase(step):
    return step < imle.zero_code_steps

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    x = jnp.zeros((1,) + x_spec.shape[1:], jnp.float32)
    params = model.init(params_rng, x, jnp.zeros((1,) + latent_shape, jnp.float32), False)["params"]
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    frozen = jax.tree.map(jnp.asarray, frozen_init)
    return IMLEState(step=jnp.zeros((), jnp.int32), rng=state_rng, params=params, opt_state=tx.init(params),
                     pool_latents=jnp.zeros((pool_size,) + latent_shape, jnp.float32),
                     pool_distances=jnp.zeros((pool_size,), jnp.float32),
                     last_selected_distance=jnp.full((), jnp.nan, jnp.float32), frozen=frozen, tx=tx)

  def select_step(state: IMLEState, batch):
    """Alg. 1 lines 4-8 over the pool S = batch: sigma(i) for every i."""
    rng = common.step_rngs(jax.random.fold_in(state.rng, _SELECT_STREAM), state.step, "codes")["codes"]
    distance = with_arrays(sel_template, sel_key, state.frozen)
    kernel = functools.partial(
        imle_selection.select_nearest_latents, distance=distance, x=batch["x"], y_BxHxWxC=batch["y"],
        rng=rng, latent_shape=latent_shape, example_blocks=imle.example_blocks,
        num_shards=jax.device_count(), mask=batch.get("mask"))

    def search(_):
      generate = lambda x, z: apply(state.params, x, z, state.step)
      s = kernel(generate, num_samples=imle.num_samples, chunk_size=imle.chunk_size,
                 perturbation=imle.perturbation)
      return s.latents, s.distances, s.mean_distances

    def zero_codes(_):  # deterministic pretraining: T(x, 0), nothing to search
      generate = lambda x, z: apply(state.params, x, z, state.step)
      s = kernel(generate, num_samples=1, chunk_size=1, zero_codes=True)
      return s.latents, s.distances, s.mean_distances

    latents, distances, mean_distances = jax.lax.cond(zero_phase(state.step), zero_codes, search, None)
    selected = jnp.mean(distances)
    metrics = {"selected_distance": selected,
               "selected_distance_change": jnp.nan_to_num(selected - state.last_selected_distance),
               "mean_sample_distance": jnp.mean(mean_distances),
               "zero_code_phase": zero_phase(state.step).astype(jnp.float32)}
    state = state.replace(pool_latents=latents, pool_distances=distances, last_selected_distance=selected)
    return state, metrics

  def update_step(state: IMLEState, batch):
    """Alg. 1 lines 10-11: one step on a minibatch S~ of the pool with its selected codes."""
    k, num_updates = imle.minibatch_size, imle.updates_per_selection
    round_index, within = state.step // num_updates, state.step % num_updates
    # A fresh permutation of S per round, walked |S~| at a time (wrapping when L |S~| > |S|).
    perm_rng = jax.random.fold_in(jax.random.fold_in(state.rng, _UPDATE_STREAM), round_index)
    order = jax.random.permutation(perm_rng, pool_size)
    idx = order[(within * k + jnp.arange(k)) % pool_size]
    x, y = batch["x"][idx], batch["y"][idx]
    mask = batch["mask"][idx] if "mask" in batch else None
    z = jnp.where(zero_phase(state.step), 0.0, state.pool_latents[idx])
    distance = with_arrays(loss_template, loss_key, state.frozen)

    def loss_fn(params):
      return jnp.mean(distance(apply(params, x, z, state.step, model), y, mask))

    loss, grads = jax.value_and_grad(loss_fn)(state.params)
    state = state.apply_gradients(grads)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "selected_distance": jnp.mean(state.pool_distances[idx])}

  steps = {"select": select_step, "update": update_step}
  if imle.time_steps:
    steps = {name: timed(fn, name) for name, fn in steps.items()}

  def run_round(compiled: base.CompiledSteps, state, batch):
    state = compiled("select", state, batch)
    for _ in range(imle.updates_per_selection):
      state = compiled("update", state, batch)
    return state

  def generate_many(state, x_BxX, z_NxBx):
    """[B, N, H, W, C] outputs for N codes per input, one code batch at a time (memory O(B))."""
    y_NxB = jax.lax.map(lambda z: apply(state.params, x_BxX, z, state.step), z_NxBx)
    return jnp.swapaxes(y_NxB, 0, 1)

  def sample(state, x, rng, num_samples):
    """N samples per input, z ~ N(0, I) (z = 0 during the zero-code phase)."""
    z = jax.random.normal(rng, (num_samples, x.shape[0]) + latent_shape)
    return generate_many(state, x, jnp.where(zero_phase(state.step), 0.0, z))

  def interpolate(state, x, rng, num_samples):
    """Outputs along the line z(t) = (1 - t) z_0 + t z_1, t in [0, 1], for two random codes per input."""
    z0, z1 = jax.random.normal(rng, (2, 1, x.shape[0]) + latent_shape)
    t = jnp.linspace(0.0, 1.0, num_samples).reshape((num_samples, 1) + (1,) * len(latent_shape))
    return generate_many(state, x, (1.0 - t) * z0 + t * z1)

  name = config.model.name if generator is None else type(generator).__name__
  description = (f"conditional IMLE (IJCV Alg. 1): |S|={pool_size}, m={imle.num_samples} "
                 f"(chunks of {imle.chunk_size}), L={imle.updates_per_selection}, "
                 f"|S~|={imle.minibatch_size}, code {latent_shape}, z=0 for steps < {imle.zero_code_steps}, "
                 f"bilinear from step {imle.bilinear_from_step}, generator {name}; "
                 f"selection {selection_distance.describe()}; loss {loss_distance.describe()}")
  return base.Method(init=init, steps=steps, run_round=run_round, sample=sample,
                     steps_per_round=imle.updates_per_selection, description=description,
                     extras={"interpolate": interpolate})
