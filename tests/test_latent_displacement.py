"""The `latent_displacement` evaluator: how far cGML's inference moves z, exact on fixed codes."""

import types

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation.evaluators import latent_displacement
from test_train import load_config

# Codes along T = 2 steps of 2 inputs x 2 samples, D = 2: [B, N, T + 1, D].
CODES = np.array([
    [[[0, 0], [3, 4], [6, 8]],      # two steps of 5 along one line: displacement 10, path 10
     [[1, 1], [1, 1], [1, 1]]],     # never moves: 0, 0
    [[[0, 0], [3, 4], [0, 0]],      # out and back: displacement 0, path 10
     [[0, 0], [0, 0], [0, 2]]],     # one step of 2: 2, 2
], np.float32)


def test_displacement_and_path_length_by_hand():
  assert latent_displacement.displacement_metrics(CODES) == pytest.approx(
      {"latent_displacement": (10 + 0 + 0 + 2) / 4, "latent_path_length": (10 + 0 + 10 + 2) / 4})


def test_the_evaluator_draws_the_method_s_codes_along_inference():
  def codes_along_inference(state, x, rng, num_samples):
    del state, rng
    assert num_samples == 2 and x.shape[0] == 2
    return jnp.asarray(CODES)

  method = types.SimpleNamespace(extras={"codes_along_inference": codes_along_inference})
  batch = {"x": np.zeros((2, 1, 1, 1), np.float32), "y": np.zeros((2, 1, 1, 3), np.float32)}
  ctx = evaluators.Context(config=None, method=method, state=None, workdir="", batch=batch,
                           samples=np.zeros((2, 2, 1, 1, 3), np.float32))
  assert evaluators.get("latent_displacement").applies(ctx)
  scalars = evaluators.run(["latent_displacement"], ctx)
  assert scalars == pytest.approx({"latent_displacement": 3.0, "latent_path_length": 5.5})
  assert ctx.info["inference_steps"] == 2
  lines = evaluators.summary_lines(["latent_displacement"], scalars, ctx.info)
  assert lines and "mean ||z_T - z_0|| 3.0000" in lines[0]
  # Not a cGML run: no extra, no metric.
  other = evaluators.Context(config=None, method=types.SimpleNamespace(extras={}), state=None, workdir="",
                             batch=batch, samples=ctx.samples)
  assert not evaluators.get("latent_displacement").applies(other)


def test_cgml_configs_ask_for_it():
  config, _ = load_config(str(REPO / "configs" / "cgml.py"))
  assert "latent_displacement" in config.evals
  assert evaluators.check_names(config.evals) is None
