"""`lpips`: LPIPS (AlexNet v0.1 trunk and heads) of each sample to the ground truth.

`lpips_best`: the mean over inputs of the lowest LPIPS among the N samples;
`lpips_mean`: the mean over inputs and samples (lower is better for both). The
network and weight file are recorded in eval.json (`lpips_weights`).
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation.evaluators import base


def compute(ctx: base.Context) -> base.Scalars:
  distance = ctx.distance(base.LPIPS)
  if distance is None:
    ctx.skip("lpips", base.MISSING_LPIPS)
    return {}
  ctx.info["lpips_weights"] = distance.describe()
  _, d_to_truth_BxN, _ = ctx.distance_terms(base.LPIPS)
  return {"lpips_best": float(np.mean(np.min(d_to_truth_BxN, axis=1))),
          "lpips_mean": float(np.mean(d_to_truth_BxN))}


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "lpips_best" not in m:
    return []
  return [f"  LPIPS (alex) to the ground truth  best/mean {m['lpips_best']:.4f}/{m['lpips_mean']:.4f}"]


LPIPS = base.Evaluator("lpips", compute, summarize, needs=("rgb_images",))
