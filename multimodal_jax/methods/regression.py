"""`regression`: the deterministic unimodal baseline every paper compares against.

A generator G trained with E d(G(x), y), d = `config.distance` (default: the
per-pixel L1 distance, mean |G(x) - y|). Given a multimodal conditional
p(y | x) it converges to the per-pixel median, a single blurry average: the
failure the other methods exist to fix (e.g. IJCV §5, the "L1" baseline of
cgml_iclr2021 Fig. 4). Its sampler returns the same image N times.

Two baselines of cimle_semantic_layouts_iccv2019 (Table 2) are this method
with another generator (configs/layout_imle.py):
  * a generator that takes a code (the model's `code_shape`, e.g. CRN with
    noise channels) gets z ~ N(0, I) per example and step, and per sample at
    inference: "CRN + noise" trained by plain regression, which learns to
    ignore the noise (pix2pix's known failure);
  * a generator with k outputs [B, k, H, W, C] (CRN `num_outputs`) is trained
    with the best-of-k loss min_j d(G_j(x), y) (`losses.multiple_choice`,
    Chen & Koltun's multi-output CRN); its sampler returns the k outputs in
    turn, so it never shows more than k different images.

A feature distance with `layer_weights=()` gets equal-contribution weights
(IJCV §3.7) from the prepared state (`prepare`, methods/calibration.py); its
network's weights live in the state's `frozen` (`common.split_frozen`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from multimodal_jax import config_lib
from multimodal_jax.methods import base
from multimodal_jax.losses import multiple_choice
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import calibration
from multimodal_jax.methods import common
from multimodal_jax.models import registry as models

# The prepared state's config section (besides data): the distance's calibration reads it.
PREPARE_DEPENDS_ON = ("distance",)


def validate_config(config: ml_collections.ConfigDict) -> None:
  config_lib.require(config, config.model.name in models.model_names(models.GENERATOR), "model.name",
                     f"valid: {models.model_names(models.GENERATOR)}")


def prepare(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """Equal-contribution weights of a distance with layer_weights=() (nothing otherwise; reads no example)."""
  return calibration.calibration_arrays({"loss": config.distance}, train_source)


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None) -> base.Method:
  """The regression method bound to `config`, the batch shapes and the prepared calibration (if any)."""
  distance = calibration.calibrated(perceptual.make_distance(config.distance), "loss", prepared or {},
                                    "regression")
  frozen_distances, frozen = common.split_frozen({"loss": distance})
  code_shape = models.code_shape(config.model, batch_spec["x"].shape[1:]) or ()
  model = models.make_model(config.model, models.ModelIO.of(batch_spec, code_shape=code_shape))
  x_shape = tuple(batch_spec["x"].shape[1:])

  def apply(params, x, rng):
    """G(x) [B, H, W, C] or [B, k, H, W, C]; a code z ~ N(0, I) per example if G takes one."""
    if not code_shape:
      return model.apply({"params": params}, x)
    return model.apply({"params": params}, x, jax.random.normal(rng, (x.shape[0],) + code_shape))

  def init(rng):
    params_rng, state_rng = jax.random.split(rng)
    x = jnp.zeros((1,) + x_shape, jnp.float32)
    variables = model.init(params_rng, x, *([jnp.zeros((1,) + code_shape)] if code_shape else []))
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    return common.create_state(rng=state_rng, networks={"generator": common.Network.create(variables, tx)},
                               frozen=jax.tree.map(jnp.asarray, frozen))

  def train_step(state: common.MethodState, batch):
    rng = common.step_rngs(state.rng, state.step, "codes")["codes"]
    distance = common.bind(frozen_distances["loss"], state.frozen)

    def loss_fn(params):
      y_hat = apply(params, batch["x"], rng)
      if y_hat.ndim == 5:  # k hypotheses: the best-of-k loss
        return jnp.mean(multiple_choice.best_of_k(distance, y_hat, batch["y"])[0])
      return jnp.mean(distance(y_hat, batch["y"]))

    loss, grads = jax.value_and_grad(loss_fn)(state.networks["generator"].params)
    # Under jit over a mesh, the mean above is over the *global* batch, so
    # the gradient is already the all-reduced one.
    state = state.apply_gradients("generator", grads)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads)}

  def sample(state, x, rng, num_samples):
    """N outputs per input: one per code (coded generators), the k outputs in turn, or G(x) N times."""
    params = state.networks["generator"].params
    if code_shape:
      y_NxB = jax.lax.map(lambda r: apply(params, x, r), jax.random.split(rng, num_samples))
      return jnp.swapaxes(y_NxB, 0, 1)
    y_hat = apply(params, x, rng)
    if y_hat.ndim == 5:
      return y_hat[:, jnp.arange(num_samples) % y_hat.shape[1]]
    return jnp.repeat(y_hat[:, None], num_samples, axis=1)

  kind = ("best-of-k regression" if getattr(model, "num_outputs", 1) > 1 else
          "regression with a noise input" if code_shape else "deterministic regression")
  return base.Method(init=init, steps={"train": train_step}, run_round=base.single_step_round("train"),
                     sample=sample, steps_per_round=1,
                     learning_rates=common.learning_rates(config, generator=config.optimizer),
                     description=f"{kind}, loss {distance.describe()}")
