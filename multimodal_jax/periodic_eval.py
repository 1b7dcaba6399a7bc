"""Evaluation during training: `train.eval_every` (big_vision's periodic evaluators).

Every `train.eval_every` steps the loop draws `train.eval_samples` samples of
each of the first `train.eval_inputs` eval examples with the method's own
sampler and runs the evaluators of `config.evals` marked `periodic`
(evaluation/evaluators/): `fidelity` (PSNR / SSIM, best of N and mean over N,
as `eval/psnr_best`, ...) and, for super-resolution data, `sr_reference` (the
bicubic upsampling's PSNR / SSIM on the same inputs, the trivial baseline,
and the mean sample's gap to it, `eval/psnr_gap_to_bicubic`).

The batch and the sampling key are fixed, so the curve shows the model
changing, not the inputs or the noise. Only evaluation steps read the
samples back to the host, so other steps keep their single host sync (the
log flush). `multimodal_jax.evaluate` remains the full protocol (diversity,
FWV, LPIPS, modes, ...) on a saved checkpoint.
"""

from __future__ import annotations

from typing import Any

import jax
import ml_collections
import numpy as np

from multimodal_jax import config_lib
from multimodal_jax.data import pipeline
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation import metrics
from multimodal_jax.methods import base as methods_base


class PeriodicEvaluator:
  """The eval batch and its compiled sampler, built once; the periodic evaluators of `config.evals`."""

  def __init__(self, config: ml_collections.ConfigDict, method: methods_base.Method, replicated):
    t = config.train
    self.config, self.method = config, method
    self.names = list(config.get("evals") or config_lib.DEFAULT_EVALS)
    self.num_samples = t.eval_samples
    self.batch = pipeline.load_eval_examples(config, t.eval_inputs, allow_fewer=True)
    self.num_inputs = self.batch["x"].shape[0]
    self.x = jax.device_put(self.batch["x"], replicated)
    self.rng = jax.random.PRNGKey(config.seed + 2)
    self._sample = jax.jit(lambda state, x, rng: method.sample(state, x, rng, self.num_samples),
                           out_shardings=replicated)

  def __call__(self, state) -> dict[str, float]:
    """The scalars of one evaluation (host floats; names without the `eval/` prefix)."""
    samples = np.asarray(jax.device_get(self._sample(state, self.x, self.rng)), np.float32)
    ctx = evaluators.Context(self.config, self.method, state, "", self.batch, samples)
    return dict(evaluators.run(self.names, ctx, periodic_only=True))

  def describe(self, scalars: dict[str, Any]) -> str:
    """One console line."""
    line = (f"eval ({self.num_inputs} inputs x {self.num_samples} samples): PSNR best/mean "
            f"{scalars['psnr_best']:.2f}/{scalars['psnr_mean']:.2f} dB, SSIM best/mean "
            f"{scalars['ssim_best']:.3f}/{scalars['ssim_mean']:.3f}")
    ref = metrics.REFERENCE_UPSAMPLING
    if f"{ref}/psnr" in scalars:
      line += f"; {ref} {scalars[f'{ref}/psnr']:.2f} dB"
    return line
