"""Evaluation during training: `train.eval_every` (big_vision's periodic evaluators, reduced to one).

Every `train.eval_every` steps the loop draws `train.eval_samples` samples of
each of the first `train.eval_inputs` eval examples with the method's own
sampler and writes their PSNR / SSIM, best of N and mean over N
(`metrics.psnr_ssim_best_and_mean`), to TensorBoard as `eval/psnr_best`, ...
For super-resolution data it also writes, once, the bicubic upsampling's
PSNR / SSIM on the same inputs (`eval/bicubic/psnr`, the trivial baseline) and
at every evaluation the mean sample's gap to it (`eval/psnr_gap_to_bicubic`).

The batch and the sampling key are fixed, so the curve shows the model
changing, not the inputs or the noise. Sampling and metrics are one compiled
function; the host reads its four scalars only on evaluation steps, so other
steps keep their single host sync (the log flush). `multimodal_jax.evaluate`
remains the full protocol (diversity, FWV, modes, ...) on a saved checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.data import pipeline
from multimodal_jax.evaluation import metrics
from multimodal_jax.methods import base as methods_base


class PeriodicEvaluator:
  """The eval batch, its compiled sampler + metrics, and the reference row, built once."""

  def __init__(self, config: ml_collections.ConfigDict, method: methods_base.Method, replicated):
    t = config.train
    self.num_samples = t.eval_samples
    batch = pipeline.load_eval_examples(config, t.eval_inputs, allow_fewer=True)
    self.num_inputs = batch["x"].shape[0]
    self.x = jax.device_put(batch["x"], replicated)
    self.y = jax.device_put(batch["y"], replicated)
    self.rng = jax.random.PRNGKey(config.seed + 2)
    self.reference: dict[str, float] = {}
    if metrics.is_super_resolution(batch["x"], batch["y"]):
      self.reference = metrics.reference_upsampling_metrics(batch["x"], batch["y"])

    def evaluate(state, x, y, rng):
      samples = method.sample(state, x, rng, self.num_samples)
      return metrics.psnr_ssim_best_and_mean(samples.astype(jnp.float32), y)

    self._evaluate = jax.jit(evaluate, out_shardings=replicated)

  def __call__(self, state) -> dict[str, float]:
    """The scalars of one evaluation (host floats; names without the `eval/` prefix)."""
    out = {k: float(v) for k, v in jax.device_get(self._evaluate(state, self.x, self.y, self.rng)).items()}
    if self.reference:
      ref = metrics.REFERENCE_UPSAMPLING
      out.update(self.reference)
      out[f"psnr_gap_to_{ref}"] = self.reference[f"{ref}/psnr"] - out["psnr_mean"]
    return out

  def describe(self, scalars: dict[str, Any]) -> str:
    """One console line."""
    line = (f"eval ({self.num_inputs} inputs x {self.num_samples} samples): PSNR best/mean "
            f"{scalars['psnr_best']:.2f}/{scalars['psnr_mean']:.2f} dB, SSIM best/mean "
            f"{scalars['ssim_best']:.3f}/{scalars['ssim_mean']:.3f}")
    ref = metrics.REFERENCE_UPSAMPLING
    if f"{ref}/psnr" in scalars:
      line += f"; {ref} {scalars[f'{ref}/psnr']:.2f} dB"
    return line
