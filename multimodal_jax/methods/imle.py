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
`imle.stratified_codes` draws each input's m codes as one randomly shifted
lattice of N(0, I) codes instead of m independent ones (losses/imle_selection.py:
why finite-m selection otherwise rewards blends between modes).

SRIM's schedule (§5.1.1), as functions of `state.step` inside the compiled
steps (no recompilation):
  * steps < `imle.zero_code_steps`: z = 0 (deterministic pretraining); the
    select step then only evaluates T(x, 0) (no search, no perturbation);
  * steps >= `imle.bilinear_from_step` (>= 0): bilinear instead of
    nearest-neighbour upsampling in the generator.

Distances (IJCV §3.7, Eq. 1): the training loss is `config.distance` and the
selection distance `config.imle.selection_distance`, both
`config_lib.default_distance_config()` blocks built by
`perceptual.make_distance`; the run's description (printed by the loop) says
which are in use. A feature distance with `layer_weights=()` gets the
paper's "each term roughly the same magnitude" weights from the method's
prepared state (`prepare`: `Distance.calibrate` on the first
`imle.calibration_examples` targets of the *training* split, computed once,
saved in the workdir; the log prints the values to pin; methods/calibration.py).
Frozen network parameters (VGG) live in the state's `frozen` (so in
checkpoints), not as constants in the compiled executables
(`common.split_frozen`).

The generator is any registry model (`config.model`, models/registry.py) that
takes a spatial code z at the input's size (SRIM: `rrdb`; `conv_generator`).

`imle.chunk_size` (codes per input generated at once; memory ~ |S| x chunk)
may be 'auto': the largest divisor of m whose compiled selection fits
`imle_selection.AUTO_CHUNK_MEMORY_SHARE` of one device's memory, measured at
start-up; `imle_selection.CPU_CHUNK_SIZE` (capped at m) where the device
reports no memory size (CPU).

Metrics: select/{selected_distance, selected_distance_change (vs the previous
round), mean_sample_distance (all m samples), zero_code_phase, seconds} and
update/{loss, grad_norm, selected_distance (of the minibatch, at selection
time), seconds}. `seconds` is the step's device time, measured by host
callbacks at its start and end (no host sync in the loop; the loop's
`train.CompiledSteps` adds it for `Method.timed_steps`, which is
`imle.time_steps`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax
import numpy as np

from multimodal_jax import config_lib
from multimodal_jax.losses import imle_selection
from multimodal_jax.losses import perceptual
from multimodal_jax.losses import rebalancing
from multimodal_jax.methods import base
from multimodal_jax.methods import calibration
from multimodal_jax.methods import common
from multimodal_jax.models import registry as models
from multimodal_jax.models import rrdb

PyTree = Any
# imle.chunk_size = 'auto': tuned to the device's memory (imle_selection.auto_chunk_size).
AUTO_CHUNK = "auto"
# The prepared state's config sections (besides data): the calibration reads both distances.
PREPARE_DEPENDS_ON = ("imle", "distance")
# The keys of `config.imle` this module reads (`config_lib.check_section_keys`): `selection_distance` is a
# `distance` section (config_lib.default_distance_config).
CONFIG_SCHEMA = {"imle": dict.fromkeys((
    "bilinear_from_step", "calibration_examples", "chunk_size", "code_channels", "example_blocks",
    "minibatch_size", "num_samples", "perturbation", "rebalance_dataset", "rebalance_loss", "rebalance_scale",
    "rebalance_top_classes", "stratified_codes", "time_steps", "updates_per_selection", "zero_code_steps"),
    None) | {"selection_distance": "distance"}}


@flax.struct.dataclass
class IMLEState(common.MethodState):
  """The method state (networks = {'generator': T}; frozen: the distances' networks) plus the pool's codes.

  Attributes (beyond step, rng, networks, frozen):
    pool_latents: [|S|, *latent_shape], z_{i, sigma(i)} of the current pool.
    pool_distances: [|S|], their selection distances.
    last_selected_distance: the previous round's mean selected distance (NaN
      before the first selection).
  """
  pool_latents: jax.Array
  pool_distances: jax.Array
  last_selected_distance: jax.Array


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks the keys only imle reads (model, imle.*, the two distances) before anything compiles."""
  if "imle" not in config:
    raise ValueError("config.method='imle' needs a config.imle section (see configs/srim.py).")
  check = functools.partial(config_lib.require, config)
  generators = models.model_names(models.GENERATOR)
  check(config.model.name in generators, "model.name", f"valid for imle: {generators}")
  if config.model.name == "rrdb":
    check("growth" in config.model and config.model.growth > 0, "model.growth",
          "the rrdb generator needs model.growth > 0")
    check(config.model.get("dense_conv_style") in rrdb.DENSE_CONV_STYLES, "model.dense_conv_style",
          f"valid: {list(rrdb.DENSE_CONV_STYLES)}")
  imle = config.imle
  for key in ("num_samples", "updates_per_selection", "minibatch_size", "code_channels", "example_blocks"):
    check(imle[key] > 0, f"imle.{key}", "must be > 0")
  if imle.chunk_size != AUTO_CHUNK:
    check(isinstance(imle.chunk_size, int) and imle.chunk_size > 0, "imle.chunk_size",
          f"must be an integer > 0 or {AUTO_CHUNK!r}")
    check(imle.chunk_size <= imle.num_samples, "imle.chunk_size", "must be <= imle.num_samples (m)")
  check(imle.minibatch_size <= config.data.batch_size, "imle.minibatch_size",
        f"|S~| must be <= |S| = data.batch_size ({config.data.batch_size})")
  check(imle.perturbation >= 0, "imle.perturbation", "must be >= 0")
  check(isinstance(imle.get("stratified_codes"), bool), "imle.stratified_codes",
        "True draws each input's m codes as one shifted lattice, False independently (Alg. 1); see configs/srim.py")
  check(imle.rebalance_top_classes > 0, "imle.rebalance_top_classes", "must be > 0")
  check(imle.get("rebalance_scale", "class_mean") in rebalancing.RARITY_SCALES, "imle.rebalance_scale",
        f"valid: {list(rebalancing.RARITY_SCALES)} (losses/rebalancing.py)")
  # train.num_steps counts updates and a round (one selection, then L updates) runs whole.
  config_lib.require_whole_rounds(config, imle.updates_per_selection, "imle.updates_per_selection")
  check(imle.zero_code_steps >= 0 and imle.zero_code_steps % imle.updates_per_selection == 0,
        "imle.zero_code_steps", f"must be >= 0 and a multiple of imle.updates_per_selection "
        f"({imle.updates_per_selection}), so that no round straddles the two phases")
  check(config.data.batch_size % (jax.device_count() * imle.example_blocks) == 0, "imle.example_blocks",
        f"data.batch_size ({config.data.batch_size}) must be divisible by devices "
        f"({jax.device_count()}) x example_blocks")
  for key, block in (("distance", config.distance), ("imle.selection_distance", imle.selection_distance)):
    check(block.name in config_lib.DISTANCE_NAMES, f"{key}.name", f"valid: {list(config_lib.DISTANCE_NAMES)}")


def _distance_configs(config: ml_collections.ConfigDict) -> dict[str, ml_collections.ConfigDict]:
  return {"loss": config.distance, "selection": config.imle.selection_distance}


def prepare(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """The state IMLE computes once over the training set (multimodal_jax/prepared.py).

  `{loss,selection}_distance/*`: equal-contribution weights for the distances
  that ask for them; `rarity` [N, P] and `sampling_weights` [N]: the KDE
  rarity of §3.4 of cimle_semantic_layouts_iccv2019, with
  `imle.rebalance_loss` / `imle.rebalance_dataset`.
  """
  arrays = calibration.calibration_arrays(_distance_configs(config), train_source,
                                          config.imle.calibration_examples)
  if config.imle.rebalance_dataset or config.imle.rebalance_loss:
    arrays.update(_rarity(config, train_source))
  return arrays


def _rarity(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """R_p(k) for every training image and class, and the rebalanced pool's sampling weights."""
  first = train_source[0]
  if "label" not in first:
    raise ValueError(f"imle.rebalance_dataset / rebalance_loss need class ids (`label` [H, W]) in the "
                     f"examples of {config.data.name!r}; it has {sorted(first)}.")
  num_classes = first["x"].shape[-1]
  means = np.zeros((len(train_source), num_classes, first["y"].shape[-1]))
  areas = np.zeros((len(train_source), num_classes))
  for batch in train_source.batches(256, description="KDE rarity: class colour means"):
    means[batch["index"]], areas[batch["index"]] = rebalancing.class_colour_means(
        batch["label"], batch["y"], num_classes)
  rarity = rebalancing.rarity_scores(means, scale=config.imle.get("rebalance_scale", "class_mean"))
  arrays = {"rarity": rarity}
  if config.imle.rebalance_dataset:
    arrays[base.SAMPLING_WEIGHTS] = rebalancing.pool_sampling_weights(
        rarity, areas, config.imle.rebalance_top_classes)
  return arrays


class _Parts(NamedTuple):
  """What the step builders share: the config, shapes, networks and distances of one method."""
  imle: ml_collections.ConfigDict
  pool_size: int
  chunk_size: int  # imle.chunk_size, 'auto' resolved
  latent_shape: tuple[int, ...]
  model: nn.Module  # training (unrolled)
  forward_model: nn.Module  # selection and sampling
  distances: dict[str, common.FrozenDistance]  # 'loss', 'selection' without their arrays
  rarity_NxP: jax.Array | None  # the prepared R_p(k) when imle.rebalance_loss, else None

  def apply(self, params, x, z, step, module=None):
    # SRIM's upsampling schedule, for generators that upsample (RRDB, ConvGenerator); -1: no option.
    options = {} if self.imle.bilinear_from_step < 0 else {"bilinear": step >= self.imle.bilinear_from_step}
    return (module or self.forward_model).apply({"params": params}, x, z, **options)

  def zero_phase(self, step):
    return step < self.imle.zero_code_steps

  def mask(self, batch, idx: jax.Array | None = None) -> jax.Array | None:
    """Per-pixel distance weights of the pool (or of its examples `idx`): the rarity mask of §3.4
    (loss rebalancing), or the batch's own."""
    pick = (lambda a: a) if idx is None else (lambda a: a[idx])
    if self.rarity_NxP is None:
      return None if "mask" not in batch else pick(batch["mask"])
    return rebalancing.rarity_mask(pick(batch["label"]), self.rarity_NxP[pick(batch["index"])])

  def distance(self, which: str, frozen: PyTree) -> perceptual.Distance:
    return common.bind(self.distances[which], frozen)


def _prepared_rarity(config: ml_collections.ConfigDict, prepared: base.Prepared) -> jax.Array | None:
  if not config.imle.rebalance_loss:
    return None
  if "rarity" not in prepared:
    raise ValueError("imle.rebalance_loss needs the prepared 'rarity': build the method with "
                     "prepared=imle.prepare(config, train_source) (the training loop does).")
  return jnp.asarray(prepared["rarity"])


def _make_select_step(parts: _Parts) -> base.StepFn:
  imle = parts.imle

  def select_step(state: IMLEState, batch):
    """Alg. 1 lines 4-8 over the pool S = batch: sigma(i) for every i."""
    rng = common.step_rngs(state.rng, state.step, "select_codes")["select_codes"]
    kernel = functools.partial(
        imle_selection.select_nearest_latents, distance=parts.distance("selection", state.frozen),
        x=batch["x"], y_BxHxWxC=batch["y"], rng=rng, latent_shape=parts.latent_shape,
        example_blocks=imle.example_blocks, num_shards=jax.device_count(), mask=parts.mask(batch))
    generate = lambda x, z: parts.apply(state.networks["generator"].params, x, z, state.step)

    def search(_):
      s = kernel(generate, num_samples=imle.num_samples, chunk_size=parts.chunk_size,
                 perturbation=imle.perturbation, stratified=imle.stratified_codes)
      return s.latents, s.distances, s.mean_distances

    def zero_codes(_):  # deterministic pretraining: T(x, 0), nothing to search
      s = kernel(generate, num_samples=1, chunk_size=1, zero_codes=True)
      return s.latents, s.distances, s.mean_distances

    latents, distances, mean_distances = jax.lax.cond(parts.zero_phase(state.step), zero_codes, search, None)
    selected = jnp.mean(distances)
    metrics = {"selected_distance": selected,
               "selected_distance_change": jnp.nan_to_num(selected - state.last_selected_distance),
               "mean_sample_distance": jnp.mean(mean_distances),
               "zero_code_phase": parts.zero_phase(state.step).astype(jnp.float32)}
    state = state.replace(pool_latents=latents, pool_distances=distances, last_selected_distance=selected)
    return state, metrics

  return select_step


def _make_update_step(parts: _Parts) -> base.StepFn:
  k, num_updates, pool_size = parts.imle.minibatch_size, parts.imle.updates_per_selection, parts.pool_size

  def update_step(state: IMLEState, batch):
    """Alg. 1 lines 10-11: one step on a minibatch S~ of the pool with its selected codes."""
    round_index, within = state.step // num_updates, state.step % num_updates
    # A fresh permutation of S per round, walked |S~| at a time (wrapping when L |S~| > |S|).
    order = jax.random.permutation(common.step_rngs(state.rng, round_index, "pool_order")["pool_order"],
                                   pool_size)
    idx = order[(within * k + jnp.arange(k)) % pool_size]
    x, y = batch["x"][idx], batch["y"][idx]
    mask = parts.mask(batch, idx)  # only the minibatch's, not the whole pool's
    z = jnp.where(parts.zero_phase(state.step), 0.0, state.pool_latents[idx])
    distance = parts.distance("loss", state.frozen)

    def loss_fn(params):
      return jnp.mean(distance(parts.apply(params, x, z, state.step, parts.model), y, mask))

    loss, grads = jax.value_and_grad(loss_fn)(state.networks["generator"].params)
    state = state.apply_gradients("generator", grads)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "selected_distance": jnp.mean(state.pool_distances[idx])}

  return update_step


def _make_sampling(parts: _Parts) -> tuple[Callable, Callable]:
  """(sample, interpolate): N outputs per input from random codes, or along a line between two."""

  def generate_many(state, x_BxX, z_NxBx):
    """[B, N, H, W, C] outputs for N codes per input, one code batch at a time (memory O(B))."""
    params = state.networks["generator"].params
    y_NxB = jax.lax.map(lambda z: parts.apply(params, x_BxX, z, state.step), z_NxBx)
    return jnp.swapaxes(y_NxB, 0, 1)

  def sample(state, x, rng, num_samples):
    """N samples per input, z ~ N(0, I) (z = 0 during the zero-code phase)."""
    z = jax.random.normal(rng, (num_samples, x.shape[0]) + parts.latent_shape)
    return generate_many(state, x, jnp.where(parts.zero_phase(state.step), 0.0, z))

  def interpolate(state, x, rng, num_samples):
    """Outputs along the line z(t) = (1 - t) z_0 + t z_1, t in [0, 1], for two random codes per input."""
    z0, z1 = jax.random.normal(rng, (2, 1, x.shape[0]) + parts.latent_shape)
    t = jnp.linspace(0.0, 1.0, num_samples).reshape((num_samples, 1) + (1,) * len(parts.latent_shape))
    return generate_many(state, x, (1.0 - t) * z0 + t * z1)

  return sample, interpolate


def _chunk_size(parts: _Parts, batch_spec: base.Batch, frozen: PyTree) -> tuple[int, str]:
  """(imle.chunk_size, how it was chosen); 'auto' is tuned to the device (`imle_selection.auto_chunk_size`).

  'auto' compiles the selection these parts describe for one device's share
  of the pool, as the select step runs it under the batch-sharded jit.
  """
  imle = parts.imle
  if imle.chunk_size != AUTO_CHUNK:
    return imle.chunk_size, str(imle.chunk_size)
  per_device = parts.pool_size // jax.device_count()

  def select(params, frozen, x, y, rng, step, chunk_size):
    return imle_selection.select_nearest_latents(
        lambda x_, z_: parts.apply(params, x_, z_, step), parts.distance("selection", frozen), x, y, rng,
        num_samples=imle.num_samples, latent_shape=parts.latent_shape, chunk_size=chunk_size,
        example_blocks=imle.example_blocks, perturbation=imle.perturbation, stratified=imle.stratified_codes)

  def arg_specs():
    share = lambda name: jax.ShapeDtypeStruct((per_device,) + tuple(batch_spec[name].shape[1:]),
                                              batch_spec[name].dtype)
    x_spec = share("x")
    params = jax.eval_shape(parts.forward_model.init, jax.random.PRNGKey(0),
                            jnp.zeros((1,) + x_spec.shape[1:], jnp.float32),
                            jnp.zeros((1,) + parts.latent_shape, jnp.float32))["params"]
    frozen_spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), frozen)
    return params, frozen_spec, x_spec, share("y"), jax.random.PRNGKey(0), jnp.zeros((), jnp.int32)

  chunk_size, note = imle_selection.auto_chunk_size(select, arg_specs, imle.num_samples, per_device)
  logging.info("imle.chunk_size='auto': %d, %s.", chunk_size, note)
  return chunk_size, f"{chunk_size}, auto: {note}"


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None, generator: nn.Module | None = None) -> base.Method:
  """Conditional IMLE bound to `config`, the pool's shapes and the prepared calibration.

  Args:
    config: a locked config with `imle`, `distance` and `model` sections (configs/srim.py).
    batch_spec: the global batch (= the pool S) as ShapeDtypeStructs: x, y.
    prepared: `prepare`'s arrays (needed only by distances with layer_weights=()).
    generator: optional Linen module T(x, z, bilinear=...) replacing `config.model`
      (tests drive the method with tiny networks this way).
  """
  imle, prepared = config.imle, prepared or {}
  x_spec = batch_spec["x"]
  latent_shape = None if generator is not None else models.code_shape(config.model, x_spec.shape[1:])
  if not latent_shape:  # the model does not say (or takes none): a code at x's size
    latent_shape = tuple(x_spec.shape[1:-1]) + (imle.code_channels,)
  model = generator if generator is not None else models.make_model(
      config.model, models.ModelIO.of(batch_spec, code_shape=latent_shape))
  if not isinstance(model, nn.Module):
    raise ValueError(f"config.model.name={config.model.name!r} builds several networks; imle needs one "
                     "generator T(x, z).")
  # Forward-only passes (selection, sampling) run the RRDB trunk as a rolled
  # loop: as fast, and much quicker to compile; training unrolls it (models/rrdb.py).
  forward_model = model.clone(unroll=1) if isinstance(model, rrdb.RRDBNet) else model
  distances = {which: calibration.calibrated(perceptual.make_distance(cfg), which, prepared, "imle")
               for which, cfg in _distance_configs(config).items()}
  frozen_distances, frozen = common.split_frozen(distances)  # one copy when both share weights
  parts = _Parts(imle=imle, pool_size=x_spec.shape[0], chunk_size=0, latent_shape=latent_shape, model=model,
                 forward_model=forward_model, distances=frozen_distances,
                 rarity_NxP=_prepared_rarity(config, prepared))
  chunk_size, chunk_note = _chunk_size(parts, batch_spec, frozen)
  parts = parts._replace(chunk_size=chunk_size)

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    x = jnp.zeros((1,) + x_spec.shape[1:], jnp.float32)
    variables = model.init(params_rng, x, jnp.zeros((1,) + latent_shape, jnp.float32))
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    return common.create_state(
        IMLEState, rng=state_rng, networks={"generator": common.Network.create(variables, tx)},
        pool_latents=jnp.zeros((parts.pool_size,) + latent_shape, jnp.float32),
        pool_distances=jnp.zeros((parts.pool_size,), jnp.float32),
        last_selected_distance=jnp.full((), jnp.nan, jnp.float32),
        frozen=jax.tree.map(jnp.asarray, frozen))

  steps = {"select": _make_select_step(parts), "update": _make_update_step(parts)}

  def run_round(compiled: base.CompiledSteps, state, batch):
    state = compiled("select", state, batch)
    for _ in range(imle.updates_per_selection):
      state = compiled("update", state, batch)
    return state

  sample, interpolate = _make_sampling(parts)
  name = config.model.name if generator is None else type(generator).__name__
  description = (f"conditional IMLE (IJCV Alg. 1): |S|={parts.pool_size}, m={imle.num_samples} "
                 f"(chunks of {chunk_note}), L={imle.updates_per_selection}, "
                 f"|S~|={imle.minibatch_size}, code {latent_shape} "
                 f"({'stratified' if imle.stratified_codes else 'independent'} draws), "
                 f"z=0 for steps < {imle.zero_code_steps}, "
                 f"bilinear from step {imle.bilinear_from_step}, generator {name}, rebalancing: "
                 f"{'dataset' if imle.rebalance_dataset else 'no dataset'}, "
                 f"{'loss' if imle.rebalance_loss else 'no loss'} (§3.4); "
                 f"selection {distances['selection'].describe()}; loss {distances['loss'].describe()}")
  return base.Method(init=init, steps=steps, run_round=run_round, sample=sample,
                     steps_per_round=imle.updates_per_selection, description=description,
                     learning_rates=common.learning_rates(config, generator=config.optimizer),
                     extras={"interpolate": interpolate}, timed_steps=imle.time_steps)
