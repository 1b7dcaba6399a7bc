"""The CRN baselines of cIMLE from layouts (Table 2): the best-of-k loss and CRN + noise by regression."""

import jax
import jax.numpy as jnp
import numpy as np

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax.losses import multiple_choice
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base
from test_train import load_config

LAYOUT = str(REPO / "configs" / "layout_imle.py")


def test_best_of_k_takes_the_nearest_hypothesis_and_trains_only_it():
  distance = perceptual.make_distance(config_lib.default_distance_config("pixel", pixel_norm="l1"))
  y = jnp.zeros((2, 2, 2, 1))
  y_hat = jnp.stack([jnp.full((2, 2, 2, 1), v) for v in (0.5, 0.1, 0.3)], axis=1)  # [B=2, K=3, ...]
  y_hat = y_hat.at[1, 2].set(0.05)  # example 1's best is hypothesis 2
  loss, best, d = multiple_choice.best_of_k(distance, y_hat, y)
  np.testing.assert_allclose(d, [[0.5, 0.1, 0.3], [0.5, 0.1, 0.05]], rtol=1e-6)
  np.testing.assert_array_equal(best, [1, 2])
  np.testing.assert_allclose(loss, [0.1, 0.05], rtol=1e-6)
  grad = jax.grad(lambda h: jnp.sum(multiple_choice.best_of_k(distance, h, y)[0]))(y_hat)
  nonzero = np.abs(np.asarray(grad)).sum(axis=(2, 3, 4)) > 0
  np.testing.assert_array_equal(nonzero, [[False, True, False], [False, False, True]])


def _crn_regression(arg):
  config, _ = load_config(LAYOUT, arg)
  assert config.method == "regression" and config.model.name == "crn"
  spec = {"x": jax.ShapeDtypeStruct((2, 32, 64, 6), jnp.float32),
          "y": jax.ShapeDtypeStruct((2, 32, 64, 3), jnp.float32)}
  method = methods_base.make_method(config, spec)
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  x = jnp.asarray(np.eye(6, dtype=np.float32)[np.random.default_rng(0).integers(0, 6, (2, 32, 64))])
  return config, method, state, x


def test_the_k_output_crn_shows_at_most_k_different_samples():
  config, method, state, x = _crn_regression("crn_best_of_k,runlocal")
  k = config.model.num_outputs
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(1), 4 * k))
  assert samples.shape == (2, 4 * k, 32, 64, 3) and "best-of-k" in method.description
  distinct = {samples[0, j].tobytes() for j in range(4 * k)}
  assert len(distinct) == k  # the k outputs, in turn
  np.testing.assert_array_equal(samples[:, 0], samples[:, k])


def test_crn_with_noise_by_regression_draws_a_code_per_sample():
  _, method, state, x = _crn_regression("crn_noise_regression,runlocal")
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(1), 3))
  assert samples.shape == (2, 3, 32, 64, 3) and "noise input" in method.description
  assert np.abs(samples[:, 0] - samples[:, 1]).max() > 0  # at init the noise reaches the output
  batch = {"x": x, "y": jnp.zeros((2, 32, 64, 3))}
  after, metrics = jax.jit(method.steps["train"])(state, batch)
  assert np.isfinite(float(metrics["loss"])) and int(after.step) == 1
