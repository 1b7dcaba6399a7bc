"""`fwv` / `lpips_fwv`: faithfulness-weighted variance (cimle_srim_ijcv §5.1.5, Table 1).

Each sample's distance to the samples' mean, weighted by a Gaussian kernel of
its distance to the ground truth, at the paper's bandwidths sigma = 0.3, 0.2,
0.15: high only when the samples both differ and stay faithful. `fwv` uses the
mean absolute pixel difference (`fwv_mean_abs_pixel_sigma<s>`), `lpips_fwv`
LPIPS as the paper does (`lpips_fwv_sigma<s>`).
"""

from __future__ import annotations

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base


def key(kind: str, sigma: float) -> str:
  return f"lpips_fwv_sigma{sigma:g}" if kind == base.LPIPS else metrics.fwv_key(kind, sigma)


def _compute(ctx: base.Context, kind: str) -> base.Scalars:
  if ctx.distance(kind) is None:
    ctx.skip("lpips_fwv" if kind == base.LPIPS else f"fwv_{kind}", base.MISSING_LPIPS)
    return {}
  d_to_mean_BxN, d_to_truth_BxN, _ = ctx.distance_terms(kind)
  ctx.info["fwv_sigmas"] = list(metrics.FWV_SIGMAS)
  return {key(kind, s): float(metrics.faithfulness_weighted_variance_from_distances(
      d_to_mean_BxN, d_to_truth_BxN, s)) for s in metrics.FWV_SIGMAS}


def _summarize(kind: str):
  def summarize(m: base.Scalars, header: dict) -> list[str]:
    del header
    if key(kind, metrics.FWV_SIGMAS[0]) not in m:
      return []
    return [f"  FWV {kind} (IJCV §5.1.5)  "
            + ", ".join(f"sigma={s:g}: {m[key(kind, s)]:.3g}" for s in metrics.FWV_SIGMAS)]
  return summarize


FWV = base.Evaluator("fwv", lambda ctx: _compute(ctx, base.PIXEL), _summarize(base.PIXEL))
LPIPS_FWV = base.Evaluator("lpips_fwv", lambda ctx: _compute(ctx, base.LPIPS), _summarize(base.LPIPS),
                           needs=("rgb_images",))
