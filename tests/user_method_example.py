"""`best_of_k`: a method defined outside multimodal_jax (the example of docs/extending.md).

One generator, k one-hot codes, k hypotheses per input; each example trains
only its best hypothesis (the multiple-choice loss), so the hypotheses spread
over the modes. tests/test_extending.py trains it on `two_colour_blocks` with
tests/user_method_config.py through the command-line tools.
"""

import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax.methods import base, common
from multimodal_jax.models import registry as models


def prepare(config, train_source):
  """Once per dataset: draw examples with more foreground more often (weight = its share + 0.1)."""
  weights = np.zeros(len(train_source))
  for batch in train_source.batches(64, description="best_of_k sampling weights"):
    weights[batch["index"]] = np.mean(batch["y"] > 0, axis=(1, 2, 3)) + 0.1
  return {base.SAMPLING_WEIGHTS: weights}


def make_method(config, batch_spec, prepared):
  del prepared  # Used by the loop's sampler only.
  k = config.best_of_k.num_hypotheses
  model = models.make_model(config.model, models.ModelIO.of(batch_spec, code_shape=(k,)))

  def hypotheses(params, x):  # [B, K, H, W, C]: the output for each one-hot code
    codes = jnp.broadcast_to(jnp.eye(k)[:, None], (k, x.shape[0], k))
    return jax.vmap(lambda z: model.apply({"params": params}, x, z), out_axes=1)(codes)

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    variables = model.init(params_rng, jnp.zeros((1,) + batch_spec["x"].shape[1:]), jnp.zeros((1, k)))
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    return common.create_state(rng=state_rng, networks={"generator": common.Network.create(variables, tx)})

  def train_step(state, batch):
    def loss_fn(params):
      error_BxK = jnp.mean(jnp.abs(hypotheses(params, batch["x"]) - batch["y"][:, None]), axis=(2, 3, 4))
      return jnp.mean(jnp.min(error_BxK, axis=1))  # Only the best hypothesis of each example learns.

    loss, grads = jax.value_and_grad(loss_fn)(state.networks["generator"].params)
    return state.apply_gradients("generator", grads), {"loss": loss}

  def sample(state, x, rng, num_samples):  # N of the K hypotheses, picked at random
    picks_BxN = jax.random.randint(rng, (x.shape[0], num_samples), 0, k)
    return jnp.take_along_axis(hypotheses(state.networks["generator"].params, x),
                               picks_BxN[:, :, None, None, None], axis=1)

  return base.Method(init=init, steps={"train": train_step}, run_round=base.single_step_round("train"),
                     sample=sample, learning_rates=common.learning_rates(config, generator=config.optimizer),
                     description=f"best of {k} hypotheses (multiple-choice loss)")


base.register_method("best_of_k", __name__)
