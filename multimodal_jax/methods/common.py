"""Pieces every method shares: the train state, optimisers, step rngs."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

PyTree = Any


@flax.struct.dataclass
class TrainState:
  """Parameters and optimiser state of one optimiser, plus the step counter.

  Methods with several optimisers (cGML's generator and Z-network) keep one
  TrainState-like pair per optimiser in their own state dataclass.
  """
  step: jax.Array
  rng: jax.Array
  params: PyTree
  opt_state: PyTree
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False)

  @classmethod
  def create(cls, *, rng: jax.Array, params: PyTree, tx: optax.GradientTransformation) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), rng=rng, params=params,
               opt_state=tx.init(params), tx=tx)

  def apply_gradients(self, grads: PyTree) -> "TrainState":
    params, opt_state = optimizer_step(self.tx, self.params, self.opt_state, grads)
    return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def optimizer_step(tx: optax.GradientTransformation, params: PyTree, opt_state: PyTree,
                   grads: PyTree) -> tuple[PyTree, PyTree]:
  """One optax update of `params`: (new params, new optimiser state)."""
  updates, opt_state = tx.update(grads, opt_state, params)
  return optax.apply_updates(params, updates), opt_state


def learning_rate_schedule(opt: ml_collections.ConfigDict, num_steps: int) -> optax.Schedule:
  """Linear warm-up, then `opt.schedule` ('constant' or 'cosine') to the end."""
  warmup = optax.linear_schedule(0.0, opt.learning_rate, max(opt.warmup_steps, 1))
  if opt.schedule == "constant":
    main = optax.constant_schedule(opt.learning_rate)
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(opt.learning_rate, max(num_steps - opt.warmup_steps, 1))
  else:
    raise ValueError(f"Unknown optimizer.schedule {opt.schedule!r}; valid: ['constant', 'cosine']")
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
    raise ValueError(f"Unknown optimizer.name {opt.name!r}; valid: ['adam', 'adamw']")
  return optax.chain(*chain)


def step_rngs(base_rng: jax.Array, step: jax.Array, *names: str) -> dict[str, jax.Array]:
  """Named random streams for one step: fold the step in, then split.

  Folding the step inside the compiled step makes the stream a function of
  (seed, step) alone, so a resumed run draws exactly what an uninterrupted run
  would. With `jax.jit` over global arrays, values drawn for a batch-sharded
  array differ per example, and hence per device, without folding in device ids.
  """
  rng = jax.random.fold_in(base_rng, step)
  keys = jax.random.split(rng, len(names))
  return dict(zip(names, keys))
