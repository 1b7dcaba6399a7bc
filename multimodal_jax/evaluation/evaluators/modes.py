"""`modes` / `modes_t0`: mode recall and precision against each input's exactly known modes.

For datasets whose `DatasetSpec.true_modes` renders every true mode of an
input (toy_scenes: K = 12 per layout), from `--mode_samples` samples per input
(a second draw with the evaluation's seed, the same samples when it equals N):
  mode_recall           share of an input's true modes hit by a sample within
                        `DatasetSpec.mode_tolerance` (mean absolute error)
  mode_recall_nearest   share of modes that are some sample's nearest (no tolerance)
  mode_precision        share of samples within the tolerance of a true mode
  mode_recall_rare      recall of the modes the training data shows least often
                        (datasets with `mode_frequencies`: toy_scenes `skewed*`)
Per segment where every class draws its own mode (`independent_segments`:
toy_scenes `segments`; `metrics.segment_mode_metrics`).
`modes_t0` (methods with an `initial_sample` extra, cGML): the same for z_0
decoded without the Z-network's T steps, drawn with the same key, so t = 0
and t = T start from the same codes (`mode_*_t0`): what inference adds or loses.
`modes_by_code` (latent drop-out codes): the same, and the mean |difference|
between samples, for the n training codes' outputs (`*_training_codes`) and
for fresh codes' (`*_fresh_codes`) apart; `sample` mixes the two.
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base


def rare_modes(ctx: base.Context) -> np.ndarray | None:
  """Boolean [K]: the modes below the median training frequency (None when every mode is as frequent)."""
  spec = ctx.dataset_spec()
  if spec.mode_frequencies is None:
    return None
  return metrics.rare_modes(spec.mode_frequencies(ctx.builder_config()))


def segment_labels(ctx: base.Context) -> np.ndarray | None:
  """The eval layouts when the dataset's classes draw their modes independently (else None)."""
  spec = ctx.dataset_spec()
  if spec.independent_segments is None or "label" not in ctx.batch:
    return None
  return ctx.batch["label"] if spec.independent_segments(ctx.builder_config()) else None


def mode_samples(ctx: base.Context) -> np.ndarray:
  """The samples of the mode metrics: [B, mode_samples, ...]."""
  if ctx.mode_samples == ctx.num_samples:
    return ctx.samples
  return ctx.memo("mode_samples", lambda: ctx.draw(ctx.mode_samples))


def compute(ctx: base.Context) -> base.Scalars:
  true_modes_BxKxHxWxC, segments_BxHxW = ctx.true_modes(), segment_labels(ctx)
  tolerance = ctx.dataset_spec().mode_tolerance
  ctx.info.update(num_modes=int(true_modes_BxKxHxWxC.shape[1]), mode_tolerance=tolerance,
                  modes_per_segment=segments_BxHxW is not None, mode_samples=ctx.mode_samples)
  return metrics.mode_metrics(mode_samples(ctx), true_modes_BxKxHxWxC, tolerance, rare_modes(ctx),
                              segments_BxHxW)


def compute_t0(ctx: base.Context) -> base.Scalars:
  samples = ctx.draw(ctx.mode_samples, ctx.method.extras["initial_sample"])
  out = metrics.mode_metrics(samples, ctx.true_modes(), ctx.dataset_spec().mode_tolerance,
                             segment_labels_BxHxW=segment_labels(ctx))
  return {f"{k}_t0": v for k, v in out.items()}


def summarize(m: base.Scalars, header: dict) -> list[str]:
  if "mode_recall" not in m:
    return []
  k = header["num_modes"]
  per = " per segment, drawn independently" if header.get("modes_per_segment") else ""
  return [f"  modes (K={k}{per}, 1/K={1 / k:.3f}, {header['mode_samples']} samples per input)  recall "
          f"{m['mode_recall']:.3f}, recall (nearest, no tolerance) {m['mode_recall_nearest']:.3f}, "
          f"precision {m['mode_precision']:.3f}"
          + (f"; recall of the rarer half of the modes {m['mode_recall_rare']:.3f}" if "mode_recall_rare" in m
             else ""),
          f"    baselines on these inputs: the true modes recall 1, precision 1; any deterministic method "
          f"(the L1 regression) recall (nearest) exactly 1/K = {1 / k:.3f}" + (" per segment" if per else "")]


def summarize_t0(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "mode_recall_t0" not in m:
    return []
  return [f"    at t = 0 (z_0 decoded, no inference steps)  recall {m['mode_recall_t0']:.3f}, "
          f"recall (nearest) {m['mode_recall_nearest_t0']:.3f}, precision {m['mode_precision_t0']:.3f}"]


CODE_SETS = ("training_codes", "fresh_codes")


def mean_pairwise_abs(samples_BxNx: np.ndarray) -> float:
  """Mean |s_i - s_j| over the pixels and the N (N - 1) / 2 pairs of each input's samples, over inputs."""
  s = np.asarray(samples_BxNx, np.float64)
  n = s.shape[1]
  i, j = np.triu_indices(n, k=1)
  return float(np.mean([np.abs(s[:, a] - s[:, b]).mean() for a, b in zip(i, j)])) if n > 1 else 0.0


def compute_by_code(ctx: base.Context) -> base.Scalars:
  """Mode metrics and pixel diversity of the training codes' outputs and of fresh codes' apart."""
  out = {}
  for name in CODE_SETS:
    samples = ctx.draw(ctx.mode_samples, ctx.method.extras[name])
    scores = metrics.mode_metrics(samples, ctx.true_modes(), ctx.dataset_spec().mode_tolerance,
                                  segment_labels_BxHxW=segment_labels(ctx))
    out.update({f"{k}_{name}": v for k, v in scores.items()})
    out[f"diversity_mean_abs_pixel_{name}"] = mean_pairwise_abs(samples)
  return out


def summarize_by_code(m: base.Scalars, header: dict) -> list[str]:
  del header
  lines = []
  for name in CODE_SETS:
    if f"mode_recall_{name}" in m:
      lines.append(f"    {name.replace('_', ' ')} only  recall {m[f'mode_recall_{name}']:.3f}, precision "
                   f"{m[f'mode_precision_{name}']:.3f}, diversity (mean |difference|) "
                   f"{m[f'diversity_mean_abs_pixel_{name}']:.4f}")
  return lines


MODES = base.Evaluator("modes", compute, summarize, needs=("true_modes",))
# Latent drop-out codes: `sample` mixes the n training codes with fresh ones; these report them apart.
MODES_BY_CODE = base.Evaluator("modes_by_code", compute_by_code, summarize_by_code,
                               needs=("true_modes", "extra:training_codes", "extra:fresh_codes"))
MODES_T0 = base.Evaluator("modes_t0", compute_t0, summarize_t0, needs=("true_modes", "extra:initial_sample"))
