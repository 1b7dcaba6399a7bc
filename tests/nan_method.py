"""A test method: `regression` whose 5th update produces a NaN loss."""

import jax.numpy as jnp

from multimodal_jax.methods import base
from multimodal_jax.methods import regression


def make_method(config, batch_spec, prepared=None):
  method = regression.make_method(config, batch_spec, prepared)
  step_fn = method.steps["train"]

  def nan_at_step_5(state, batch):
    new_state, metrics = step_fn(state, batch)
    metrics["loss"] = jnp.where(state.step == 4, jnp.nan, metrics["loss"])
    return new_state, metrics

  return base.Method(init=method.init, steps={"train": nan_at_step_5}, run_round=method.run_round,
                     sample=method.sample, learning_rates=method.learning_rates, description="NaN at step 5 (test)")
