"""`regression`: the deterministic unimodal baseline every paper compares against.

A conv generator G trained with E d(G(x), y), d = `config.distance` (default:
the per-pixel L1 distance, mean |G(x) - y|). Given a
multimodal conditional p(y | x) it converges to the per-pixel median, a single
blurry average: the failure the other methods exist to fix (e.g. IJCV §5, the
"L1" baseline of cgml_iclr2021 Fig. 4). Its sampler returns the same image N
times.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax import config_lib
from multimodal_jax.methods import base
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import common
from multimodal_jax.models import registry as models


def validate_config(config: ml_collections.ConfigDict) -> None:
  config_lib.require(config, config.model.name in models.model_names(models.GENERATOR), "model.name",
                     f"valid: {models.model_names(models.GENERATOR)}")


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None) -> base.Method:
  """The regression method bound to `config` and the batch shapes (it prepares nothing)."""
  del prepared
  distance = perceptual.make_distance(config.distance)
  if distance.needs_calibration:
    raise ValueError("regression needs explicit config.distance.layer_weights for a feature "
                     "distance (equal-contribution calibration is done by the IMLE methods).")
  model = models.make_model(config.model, models.ModelIO.of(batch_spec))

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = model.init(params_rng, jnp.zeros((1,) + batch_spec["x"].shape[1:], jnp.float32))
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    return common.create_state(rng=state_rng, networks={"generator": common.Network.create(variables, tx)})

  def apply(params, x):
    return model.apply({"params": params}, x)

  def train_step(state: common.MethodState, batch):
    def loss_fn(params):
      y_hat = apply(params, batch["x"])
      return jnp.mean(distance(y_hat, batch["y"]))

    loss, grads = jax.value_and_grad(loss_fn)(state.networks["generator"].params)
    # Under jit over a mesh, the mean above is over the *global* batch, so
    # the gradient is already the all-reduced one.
    state = state.apply_gradients("generator", grads)
    return state, {"loss": loss, "grad_norm": common.global_norm(grads)}

  def sample(state, x, rng, num_samples):
    del rng  # deterministic
    y_hat = apply(state.networks["generator"].params, x)
    return jnp.repeat(y_hat[:, None], num_samples, axis=1)

  return base.Method(init=init, steps={"train": train_step}, run_round=base.single_step_round("train"),
                     sample=sample, steps_per_round=1,
                     learning_rates=common.learning_rates(config, generator=config.optimizer),
                     description=f"deterministic regression, loss {distance.describe()}")
