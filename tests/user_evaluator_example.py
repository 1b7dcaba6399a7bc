"""A user's evaluator (docs/extending.md "Add an evaluator"): the error of the sample nearest the truth.

Run it with `evaluate --import=user_evaluator_example --evals=fidelity,best_mse`.
"""

import numpy as np

from multimodal_jax.evaluation import evaluators


def compute(ctx):
  """Mean over inputs of the lowest mean squared error among the N samples (best-of-N MSE)."""
  error_BxN = np.mean((ctx.samples - ctx.batch["y"][:, None]) ** 2, axis=(2, 3, 4))
  return {"best_mse": float(np.mean(np.min(error_BxN, axis=1)))}


def summarize(metrics, header):
  if "best_mse" not in metrics:
    return []
  return [f"  best-of-{header['num_samples']} MSE {metrics['best_mse']:.4g}"]


evaluators.register(evaluators.Evaluator("best_mse", compute, summarize))
