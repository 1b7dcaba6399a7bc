"""`latent_codes`: stochastic regression with latent drop-out codes (latent_dropout_codes_he_schiele_fritz_eccv2018).

A multi-branch generator (`config.model`, registry kind BRANCHED;
models/dropout_codes.py: 'shared' channel-wise drop-out codes, 'separate'
branches, or the 'late_split' CRN head) makes n hypotheses f_i(X) of each
input, and one of two losses trains them (`latent_codes.loss`):

  * 'best_neighbour' (Eq. 4, MCL): L = sum_m min_i l(f_i(X_m), Y_m).
  * 'neighbours_enhanced' (Eq. 5): each example also brings up to N training
    targets Y^j of its input-space neighbours (dis(X^j, X^0) < theta, §3.2;
    optionally one per HSV k-means cluster, §4.3). The neighbours assignment
    (`losses.multiple_choice.assign_neighbours`: Y^0 to its best hypothesis,
    each hypothesis at most one target, the rest greedily by smallest loss)
    gives the matching set S_m, and L = sum_m sum_{(i, j) in S_m} l(f_i(X_m), Y^j_m).
Reported losses are per example (the sums divided by the batch size), so
they do not scale with the batch.

Warm-up (off by default): the paper gives none, but the authors' released
code (SSAW14/Image_Generation_with_Latent_Code, human_face_generation/train.py)
first trains one branch at a time on Y^0, round robin, for R =
`warmup_round_robin_steps` steps, then only Y^0's best branch (Eq. 4, no
neighbours) until step R + B (`warmup_best_steps`), then the configured loss
(their R = 500, B = 3500 for n = 10). One compiled step serves all three
phases (`warmup_assignment`).

l is `config.distance` (Eq. 6, "L1-based perceptual loss": the VGG-19 feature
distance, or the pixel l1 on the local default). Eq. 6's lambda_i are the
config's `layer_weights`; `layer_weights=()` gets equal-contribution weights
(IJCV §3.7) from the prepared state (`loss_distance/*`, methods/calibration.py).
The VGG weights live in the state's `frozen` (`common.split_frozen`).

Prepared state (multimodal_jax/prepared.py), for 'neighbours_enhanced',
computed once over the training set with progress output
(losses/neighbours.py): `neighbours` int32 [N_train, N] (-1 = none) and
`train_targets` uint8 [N_train, H, W, C], the training targets at 8 bits
(the step gathers the neighbours' targets by the batch's `index`; they are a
constant of the compiled step, not part of the state or checkpoints).

'shared': the n training codes z_i ~ U(0, 1)^C are drawn once at init (the
state's `train_codes`, so they survive a resume). `sample` returns the n
training codes' outputs first, then new codes (the paper's evaluation uses
both, §4.2); 'separate' / 'late_split' return their n outputs in turn. Extras
('shared' only): `interpolate` (Eq. 3), outputs along a*z_i + (1 - a)*z_j
between two training codes; `training_codes` and `fresh_codes`, the outputs of
the training codes alone or of new codes alone.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from multimodal_jax import config_lib
from multimodal_jax.losses import neighbours as neighbours_lib
from multimodal_jax.losses import multiple_choice
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base
from multimodal_jax.methods import calibration
from multimodal_jax.methods import common
from multimodal_jax.models import registry as models

LOSSES = ("best_neighbour", "neighbours_enhanced")
# The prepared state's config sections (besides data): the neighbours, and the distance's calibration.
PREPARE_DEPENDS_ON = ("latent_codes", "distance")
# The keys of `config.latent_codes` this module reads (`config_lib.check_section_keys`).
CONFIG_SCHEMA = {"latent_codes": dict.fromkeys((
    "loss", "neighbour_candidates", "neighbour_kmeans", "neighbour_metric", "neighbour_resolution",
    "neighbour_threshold", "num_neighbours", "warmup_best_steps", "warmup_round_robin_steps"))}


@flax.struct.dataclass
class LatentCodesState(common.MethodState):
  """networks = {'generator'}; `train_codes` [n, C] the fixed training codes ('shared'), else an unused [1, 1]."""
  train_codes: jax.Array


def validate_config(config: ml_collections.ConfigDict) -> None:
  lc = config.latent_codes
  config_lib.require(config, config.model.name in models.model_names(models.BRANCHED), "model.name",
                     f"valid: {models.model_names(models.BRANCHED)}")
  config_lib.require(config, lc.loss in LOSSES, "latent_codes.loss", f"valid: {list(LOSSES)}")
  config_lib.require(config, lc.neighbour_metric in neighbours_lib.METRICS, "latent_codes.neighbour_metric",
                     f"valid: {list(neighbours_lib.METRICS)}")
  config_lib.require(config, lc.num_neighbours >= 1, "latent_codes.num_neighbours", "must be >= 1")
  config_lib.require(config, lc.neighbour_candidates >= lc.num_neighbours, "latent_codes.neighbour_candidates",
                     "must be >= num_neighbours")
  config_lib.require(config, lc.neighbour_threshold > 0, "latent_codes.neighbour_threshold", "must be > 0")
  config_lib.require(config, lc.neighbour_resolution >= 1, "latent_codes.neighbour_resolution", "must be >= 1")
  for key in ("warmup_round_robin_steps", "warmup_best_steps"):  # a missing key: require's "is missing"
    config_lib.require(config, key in lc and isinstance(lc[key], int) and lc[key] >= 0, f"latent_codes.{key}",
                       "must be an int >= 0 (0: no warm-up phase)")


def prepare(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """The distance's equal-contribution weights, if it asks for them, and for 'neighbours_enhanced' the
  neighbour lists and 8-bit training targets."""
  arrays = calibration.calibration_arrays({"loss": config.distance}, train_source)
  if config.latent_codes.loss == "neighbours_enhanced":
    arrays.update(_neighbours(config, train_source))
  return arrays


def _neighbours(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """Each example's N input-space neighbours (§3.2, §4.3) and the training targets at 8 bits."""
  lc = config.latent_codes
  first = train_source[0]
  n = len(train_source)
  feats, targets, hsv = None, np.zeros((n,) + first["y"].shape, np.uint8), None
  for batch in train_source.batches(256, description="Neighbours: reading the training set"):
    f = neighbours_lib.input_features(batch["x"], lc.neighbour_resolution)
    feats = np.zeros((n, f.shape[-1]), np.float32) if feats is None else feats
    feats[batch["index"]] = f
    targets[batch["index"]] = np.clip(np.round(np.asarray(batch["y"]) * 255.0), 0, 255).astype(np.uint8)
    if lc.neighbour_kmeans:
      h = neighbours_lib.hsv_features(batch["y"])
      hsv = np.zeros((n, h.shape[-1]), np.float32) if hsv is None else hsv
      hsv[batch["index"]] = h
  candidates, _ = neighbours_lib.nearest_candidates(
      feats, lc.neighbour_threshold, lc.neighbour_candidates, lc.neighbour_metric,
      description=f"Neighbours: {lc.neighbour_metric} < {lc.neighbour_threshold}")
  if lc.neighbour_kmeans:
    chosen = neighbours_lib.pick_diverse(candidates, hsv, lc.num_neighbours)
  else:
    chosen = candidates[:, :lc.num_neighbours]
  counts = (chosen >= 0).sum(1)
  print(f"Neighbours: {counts.mean():.2f} per example on average (of {lc.num_neighbours}); "
        f"{(counts == 0).mean():.1%} of the examples have none.", flush=True)
  return {"neighbours": chosen.astype(np.int32), "train_targets": targets}


class _Parts(NamedTuple):
  """What the step and sampling builders share: the model, its codes and the prepared neighbours."""
  model: nn.Module
  code_shape: tuple[int, ...]  # one drop-out code ('shared'); () for the branched architectures
  num_branches: int
  distance: common.FrozenDistance  # l of Eq. 4-5, without its network's arrays (state.frozen)
  neighbours_NxJ: jax.Array | None  # prepared (Eq. 5 only)
  targets_u8: jax.Array | None  # prepared training targets, 8 bit (Eq. 5 only)

  @property
  def enhanced(self) -> bool:
    return self.neighbours_NxJ is not None

  def apply(self, params, x, codes):
    """[B, N, H, W, C]: one output per code ('shared') or the n branch outputs (codes None)."""
    y = self.model.apply({"params": params}, x, *([codes] if self.code_shape else []))
    return y[:, None] if y.ndim == 4 else y

  def targets_of(self, batch):
    """(targets [B, 1 + N, H, W, C], valid [B, 1 + N]): the example's own, then its neighbours'."""
    nb_BxN = self.neighbours_NxJ[batch["index"]]
    valid = nb_BxN >= 0
    nb_y = self.targets_u8[jnp.maximum(nb_BxN, 0)].astype(jnp.float32) / 255.0
    y = batch["y"][:, None]
    return (jnp.concatenate([y, nb_y.astype(y.dtype)], axis=1),
            jnp.concatenate([jnp.ones_like(valid[:, :1]), valid], axis=1))

  def outputs_for_codes(self, state, x, codes_BxNx):
    """[B, N, H, W, C], one code batch at a time (memory O(B))."""
    params = state.networks["generator"].params
    y_NxB = jax.lax.map(lambda z: self.apply(params, x, z[:, None])[:, 0], jnp.swapaxes(codes_BxNx, 0, 1))
    return jnp.swapaxes(y_NxB, 0, 1)


def warmup_phase(step: jax.Array, round_robin_steps: int, best_steps: int) -> jax.Array:
  """The authors' warm-up phase of `step`: 0 round robin (step < R), 1 Y^0's best branch (step < R + B), 2 after."""
  return jnp.where(step < round_robin_steps, 0, jnp.where(step < round_robin_steps + best_steps, 1, 2))


def warmup_assignment(step: jax.Array, d_BxJxI: jax.Array, valid_BxJ: jax.Array, round_robin_steps: int,
                      best_steps: int) -> jax.Array:
  """Which target trains which hypothesis at `step` [B, J, I], with the authors' warm-up (module docstring).

  `warmup_phase` 0 (step < R): Y^0 trains hypothesis step mod I alone, in
  every example; 1 (step < R + B): Y^0 trains its best hypothesis (Eq. 4: the
  §3.2 assignment with every neighbour invalid); 2: the §3.2 assignment of
  Eq. 5 (`multiple_choice.assign_neighbours`). The step is traced: one
  compiled step for all phases. R = B = 0 gives assign_neighbours exactly.

  Args:
    step: the optimiser step, a traced int scalar.
    d_BxJxI: losses l(f_i(X), Y^j), target j = 0 the example's own.
    valid_BxJ: false for padding targets.
    round_robin_steps: R.
    best_steps: B.
  """
  _, num_targets, num_hypotheses = d_BxJxI.shape
  own_J = jnp.arange(num_targets) == 0
  round_robin_JxI = own_J[:, None] * jax.nn.one_hot(step % num_hypotheses, num_hypotheses, dtype=d_BxJxI.dtype)
  best_BxJxI = multiple_choice.assign_neighbours(d_BxJxI, valid_BxJ & own_J)
  phase = warmup_phase(step, round_robin_steps, best_steps)
  return jnp.where(phase == 0, round_robin_JxI,
                   jnp.where(phase == 1, best_BxJxI, multiple_choice.assign_neighbours(d_BxJxI, valid_BxJ)))


def _make_train_step(parts: _Parts, round_robin_steps: int, best_steps: int) -> base.StepFn:
  warmup = round_robin_steps + best_steps > 0  # off: the loss and gradients are today's, op for op

  def train_step(state: LatentCodesState, batch):
    """Eq. 4 (best neighbour) or Eq. 5 (neighbours-enhanced) over the n outputs, after the warm-up if on."""
    codes = state.train_codes if parts.code_shape else None
    distance = common.bind(parts.distance, state.frozen)
    phase = warmup_phase(state.step, round_robin_steps, best_steps)

    def loss_fn(params):
      y_hat = parts.apply(params, batch["x"], codes)
      if not parts.enhanced:  # Eq. 4
        loss_B, best_B, d_BxI = multiple_choice.best_of_k(distance, y_hat, batch["y"])
        if not warmup:
          return jnp.mean(loss_B), (jax.nn.one_hot(best_B, y_hat.shape[1]), jnp.ones_like(loss_B))
        d_BxJxI, valid_BxJ = d_BxI[:, None], jnp.ones(d_BxI.shape[:1] + (1,), bool)  # Y^0 alone
      else:  # Eq. 5
        targets, valid_BxJ = parts.targets_of(batch)
        d_BxJxI = multiple_choice.pairwise_distances(distance, y_hat, targets)
      assigned = (warmup_assignment(state.step, d_BxJxI, valid_BxJ, round_robin_steps, best_steps) if warmup
                  else multiple_choice.assign_neighbours(d_BxJxI, valid_BxJ))
      targets_B = jnp.where(phase == 2, valid_BxJ.sum(1), 1)  # the warm-up trains on Y^0 alone
      return jnp.sum(assigned * d_BxJxI) / d_BxJxI.shape[0], (assigned.sum(1), targets_B)

    (loss, (used_BxI, targets_B)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.networks["generator"].params)
    state = state.apply_gradients("generator", grads)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "branches_trained": jnp.mean(jnp.sum(used_BxI > 0, axis=1).astype(jnp.float32)),
                   "branches_used_in_batch": jnp.sum(jnp.any(used_BxI > 0, axis=0)).astype(jnp.float32),
                   "targets_per_example": jnp.mean(targets_B.astype(jnp.float32)),
                   "warmup_phase": phase.astype(jnp.float32)}

  return train_step


def _make_sampling(parts: _Parts) -> tuple[Callable, dict[str, Callable]]:
  """`sample` and, for drop-out codes, the extras `interpolate`, `training_codes`, `fresh_codes`."""
  code_shape, num_branches = parts.code_shape, parts.num_branches

  def sample(state, x, rng, num_samples, train_first=num_branches):
    """N outputs per input: the training codes' then new codes ('shared'), or the n branches in turn."""
    if not code_shape:
      y = parts.apply(state.networks["generator"].params, x, None)
      return y[:, jnp.arange(num_samples) % y.shape[1]]
    new = jax.random.uniform(rng, (x.shape[0], num_samples) + code_shape)
    first = min(num_samples, train_first)
    codes = new.at[:, :first].set(jnp.broadcast_to(state.train_codes[:first], (x.shape[0], first) + code_shape))
    return parts.outputs_for_codes(state, x, codes)

  def training_codes(state, x, rng, num_samples):
    """The n training codes' outputs in turn (no new codes)."""
    del rng
    codes = state.train_codes[jnp.arange(num_samples) % num_branches]
    return parts.outputs_for_codes(state, x, jnp.broadcast_to(codes, (x.shape[0], num_samples) + code_shape))

  def fresh_codes(state, x, rng, num_samples):
    """New codes only, z ~ U(0, 1)^C (test-time sampling, §3.1)."""
    return sample(state, x, rng, num_samples, train_first=0)

  def interpolate(state, x, rng, num_samples):
    """Eq. 3: Y(a) = f2(f1(X), d(a z_i + (1 - a) z_j)), a in [0, 1], for two random training codes."""
    ij = jax.random.choice(rng, num_branches, (2,), replace=num_branches < 2)
    a = jnp.linspace(1.0, 0.0, num_samples).reshape((num_samples,) + (1,) * len(code_shape))
    codes = a * state.train_codes[ij[0]] + (1.0 - a) * state.train_codes[ij[1]]
    return parts.apply(state.networks["generator"].params, x, codes)

  extras = ({"interpolate": interpolate, "training_codes": training_codes, "fresh_codes": fresh_codes}
            if code_shape else {})
  return sample, extras


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None) -> base.Method:
  """The latent-codes method bound to `config`, the batch shapes and (for Eq. 5) the prepared neighbours."""
  lc, prepared = config.latent_codes, prepared or {}
  distance = calibration.calibrated(perceptual.make_distance(config.distance), "loss", prepared, "latent_codes")
  frozen_distances, frozen = common.split_frozen({"loss": distance})
  x_shape = tuple(batch_spec["x"].shape[1:])
  code_shape = models.code_shape(config.model, x_shape) or ()
  model = models.make_model(config.model, models.ModelIO.of(batch_spec, code_shape=code_shape))
  num_branches = int(config.model.num_branches)
  enhanced = lc.loss == "neighbours_enhanced"
  if enhanced:
    for key in ("neighbours", "train_targets"):
      if key not in prepared:
        raise ValueError(f"latent_codes.loss='neighbours_enhanced' needs the prepared {key!r}: build the method "
                         "with prepared=latent_codes.prepare(config, train_source) (the training loop does).")
  parts = _Parts(model=model, code_shape=code_shape, num_branches=num_branches, distance=frozen_distances["loss"],
                 neighbours_NxJ=jnp.asarray(prepared["neighbours"]) if enhanced else None,
                 targets_u8=jnp.asarray(prepared["train_targets"]) if enhanced else None)

  def init(rng):
    params_rng, codes_rng, state_rng = jax.random.split(rng, 3)
    x = jnp.zeros((1,) + x_shape, jnp.float32)
    train_codes = (jax.random.uniform(codes_rng, (num_branches,) + code_shape) if code_shape
                   else jnp.zeros((1, 1), jnp.float32))  # orbax saves no empty arrays
    variables = model.init(params_rng, x, *([train_codes] if code_shape else []))
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    return common.create_state(LatentCodesState, rng=state_rng, train_codes=train_codes,
                               networks={"generator": common.Network.create(variables, tx)},
                               frozen=jax.tree.map(jnp.asarray, frozen))

  sample, extras = _make_sampling(parts)
  arch = config.model.get("architecture", "?")
  nb = (f", N = {lc.num_neighbours} neighbours with {lc.neighbour_metric} < {lc.neighbour_threshold}"
        f"{' (HSV k-means)' if lc.neighbour_kmeans else ''}") if enhanced else ""
  rr, best = lc.warmup_round_robin_steps, lc.warmup_best_steps
  phases = ([f"{rr} steps one branch at a time (round robin)"] if rr else []) + (
      [f"Y^0's best branch to step {rr + best}"] if best else [])
  warmup_text = f"; warm-up (authors' code): {', then '.join(phases)}" if phases else ""
  return base.Method(init=init, steps={"train": _make_train_step(parts, rr, best)},
                     run_round=base.single_step_round("train"),
                     sample=sample, steps_per_round=1,
                     learning_rates=common.learning_rates(config, generator=config.optimizer),
                     extras=extras,
                     description=f"latent drop-out codes ({arch}, n = {num_branches}), {lc.loss} loss{nb}, "
                                 f"l = {distance.describe()}{warmup_text}")
