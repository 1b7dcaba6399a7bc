"""Pieces every method shares: networks and the method state, frozen networks, optimisers, named step rngs."""

from __future__ import annotations

import hashlib

from typing import Any, Mapping, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from multimodal_jax.losses import perceptual

# `config.optimizer.name` and `.schedule` values: validation.validate and make_optimizer read these.
OPTIMIZERS = ("adam", "adamw")
SCHEDULES = ("constant", "cosine", "poly")
POLY_POWER = 0.9

PyTree = Any


@flax.struct.dataclass
class Network:
  """One trained network: its parameters, optimiser state and optional BatchNorm statistics.

  `batch_stats` is {} for networks without them; `variables()` is what
  `module.apply` takes. `tx` is static (not a pytree leaf), so checkpoints
  hold arrays only.
  """
  params: PyTree
  opt_state: PyTree
  batch_stats: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, variables: Mapping[str, PyTree], tx: optax.GradientTransformation) -> "Network":
    """From `module.init(...)`'s variables ({'params', optionally 'batch_stats'})."""
    extra = set(variables) - {"params", "batch_stats"}
    if extra:
      raise ValueError(f"Network variables may hold 'params' and 'batch_stats' only; got also {sorted(extra)}.")
    params = variables["params"]
    return cls(params=params, opt_state=tx.init(params), batch_stats=variables.get("batch_stats", {}), tx=tx)

  def variables(self) -> dict[str, PyTree]:
    return {"params": self.params, **({"batch_stats": self.batch_stats} if self.batch_stats else {})}

  def apply_gradients(self, grads: PyTree, batch_stats: PyTree | None = None) -> "Network":
    """One optimiser update; `batch_stats` replaces the statistics when given (a train-mode forward's)."""
    params, opt_state = optimizer_step(self.tx, self.params, self.opt_state, grads)
    return self.replace(params=params, opt_state=opt_state,
                        batch_stats=self.batch_stats if batch_stats is None else batch_stats)


def apply_network(module: nn.Module, net: Network, *args: Any, params: PyTree | None = None,
                  update_batch_stats: bool = False, rngs: Mapping[str, jax.Array] | None = None,
                  **kwargs: Any) -> tuple[Any, PyTree]:
  """`module.apply` on a Network's variables: (outputs, batch_stats after the call).

  Args:
    params: parameters to use instead of `net.params` (the ones being differentiated).
    update_batch_stats: for networks with `batch_stats`, return the updated
      statistics (BatchNorm in training mode, `mutable=['batch_stats']`); the
      module's own train/deterministic argument goes in `kwargs`.
    rngs: e.g. {'dropout': key} for dropout layers.
  """
  variables = net.variables() if params is None else dict(net.variables(), params=params)
  if update_batch_stats and net.batch_stats:
    out, updates = module.apply(variables, *args, rngs=rngs, mutable=["batch_stats"], **kwargs)
    return out, updates["batch_stats"]
  return module.apply(variables, *args, rngs=rngs, **kwargs), net.batch_stats


@flax.struct.dataclass
class MethodState:
  """What every method's state holds: the update counter, the base rng and its networks.

  Methods extend it with their own fields (`IMLEState`: the pool's codes;
  `CgmlState`: the batch's latents and, with persistent codes, one per
  training example). `step` counts the method's optimiser updates of its main
  network (its schedule's clock), `rng` is the base key
  that `step_rngs` folds the step into. `frozen` holds the arrays of networks
  no method trains (a perceptual distance's trunk and heads, `split_frozen`);
  {} without any, which adds no array to a checkpoint.
  """
  step: jax.Array
  rng: jax.Array
  networks: dict[str, Network]
  # Keyword-only, so that subclasses may add fields without defaults after it.
  frozen: PyTree = flax.struct.field(default_factory=dict, kw_only=True)

  @property
  def params(self) -> dict[str, PyTree]:
    """{network name: params}."""
    return {name: net.params for name, net in self.networks.items()}

  def apply_gradients(self, name: str, grads: PyTree, batch_stats: PyTree | None = None,
                      count_step: bool = True) -> "MethodState":
    """One optimiser update of network `name`; `count_step` also advances `step`."""
    networks = dict(self.networks)
    networks[name] = networks[name].apply_gradients(grads, batch_stats)
    return self.replace(networks=networks, step=self.step + 1 if count_step else self.step)


def create_state(cls: type = MethodState, *, rng: jax.Array, networks: Mapping[str, Network],
                 **fields: Any) -> MethodState:
  """A fresh method state at step 0."""
  return cls(step=jnp.zeros((), jnp.int32), rng=rng, networks=dict(networks), **fields)


class FrozenDistance(NamedTuple):
  """A distance without its network arrays, and the key of those arrays in a state's `frozen`."""
  template: perceptual.Distance
  key: str | None  # None: the distance has no network (pixels)


def split_frozen(distances: Mapping[str, perceptual.Distance]
                 ) -> tuple[dict[str, FrozenDistance], dict[str, PyTree]]:
  """({which: FrozenDistance}, {key: {'params', 'heads'}}): the one policy for frozen networks.

  The trunks and LPIPS heads of perceptual distances are never trained. Their
  arrays go into the state's `frozen` (`init` puts them there): so into
  checkpoints, and into every compiled step as arguments, where a closed-over
  distance would bake ~80 MB of VGG weights into each executable as constants.
  A step `bind`s its distance from `state.frozen`; nothing differentiates or
  optimises them (`perceptual.Distance` stops their gradients). Distances that
  load the same weights share one copy, keyed by the distance's name (not by
  its file's path, so a checkpoint restores wherever the weights live); a
  pixel distance adds nothing.
  """
  templates, frozen, sources = {}, {}, {}
  for which, distance in distances.items():
    if not distance.trunk:
      templates[which] = FrozenDistance(distance, None)
      continue
    key = distance.name
    if sources.setdefault(key, distance.weights_source) != distance.weights_source:
      key = f"{distance.name}_{which}"  # the same network from another weights file
    frozen[key] = {"params": distance.params, "heads": distance.heads}
    templates[which] = FrozenDistance(distance.replace(params=None, heads=None), key)
  return templates, frozen


def bind(distance: FrozenDistance, frozen: PyTree) -> perceptual.Distance:
  """The distance with its network arrays from a state's `frozen` (traced arguments inside a step)."""
  if distance.key is None:
    return distance.template
  return distance.template.replace(params=frozen[distance.key]["params"], heads=frozen[distance.key]["heads"])


def optimizer_step(tx: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                   grads: PyTree) -> tuple[PyTree, PyTree]:
  """One optax update of `params`: (new params, new optimiser state)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up, then `opt.schedule` to the end: 'constant', 'cosine', or 'poly'.

  'poly' is Caffe's "poly" policy, lr (1 - t / T)^0.9 (the power of
  latent_dropout_codes_he_schiele_fritz_eccv2018 §4.1 and of DeepLab).
  """
  warmup = optax.linear_schedule(0.0, opt.learning_rate, max(opt.warmup_steps, 1))
  if opt.schedule == "constant":
    main = optax.constant_schedule(opt.learning_rate)
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(opt.learning_rate, max(num_steps - opt.warmup_steps, 1))
  elif opt.schedule == "poly":
    main = optax.polynomial_schedule(opt.learning_rate, 0.0, POLY_POWER, max(num_steps - opt.warmup_steps, 1))
  else:
    raise ValueError(f"Unknown optimizer.schedule {opt.schedule!r}; valid: {list(SCHEDULES)}")
  if opt.warmup_steps <= 0:
    return main
  return optax.join_schedules([warmup, main], [opt.warmup_steps])


def make_optimizer(opt: ml_collections.ConfigDict, num_steps: int) -> optax.GradientTransformation:
  """Adam(W) with optional global-norm clipping, from `config.optimizer`."""
  schedule = learning_rate_schedule(opt, num_steps)
  chain = []
  if opt.grad_clip_norm > 0:
    chain.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  if opt.name == "adam":
    chain.append(optax.adam(schedule, b1=opt.b1, b2=opt.b2))
  elif opt.name == "adamw":
    chain.append(optax.adamw(schedule, b1=opt.b1, b2=opt.b2, weight_decay=opt.weight_decay))
  else:
    raise ValueError(f"Unknown optimizer.name {opt.name!r}; valid: {list(OPTIMIZERS)}")
  return optax.chain(*chain)


def step_rngs(base_rng: jax.Array, step: jax.Array, *names: str) -> dict[str, jax.Array]:
  """Named random streams for one step: fold the step in, then each stream's name.

  Folding the step inside the compiled step makes the stream a function of
  (seed, step) alone, so a resumed run draws exactly what an uninterrupted run
  would. Each stream is keyed by its name (a stable hash), so a step's 'codes'
  do not change when another stream is added or requested elsewhere, and two
  steps asking for different names get independent keys. With `jax.jit`
  over global arrays, values drawn for a batch-sharded array differ per
  example, and hence per device, without folding in device ids.
  """
  rng = jax.random.fold_in(base_rng, step)
  return {name: jax.random.fold_in(rng, stream_id(name)) for name in names}


def stream_id(name: str) -> int:
  """A stable 31-bit id of a stream name (Python's hash() differs per process)."""
  return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little") & 0x7FFFFFFF


def learning_rates(config: ml_collections.ConfigDict, **optimizers: ml_collections.ConfigDict
                   ) -> dict[str, optax.Schedule]:
  """{network: its learning-rate schedule}, for the loop's `learning_rate/<network>` scalars."""
  return {name: learning_rate_schedule(opt, config.train.num_steps) for name, opt in optimizers.items()}
