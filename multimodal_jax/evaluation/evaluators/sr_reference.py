"""`sr_reference`: super-resolution's trivial baseline on the same inputs.

`bicubic/{psnr,ssim}`: bicubic upsampling of the inputs against the ground
truth; `psnr_gap_to_bicubic` = bicubic PSNR - the samples' mean PSNR (dB;
negative when a typical sample beats bicubic); `diversity_per_db_gap` = the
pixel diversity / that gap, how much diversity each dB lost buys (left out
when nothing is lost). Reads `fidelity`'s and `diversity`'s metrics.
"""

from __future__ import annotations

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base
from multimodal_jax.evaluation.evaluators import diversity

REF = metrics.REFERENCE_UPSAMPLING


def reference_scalars(x_BxhxwxC, y_BxHxWxC, psnr_mean: float) -> base.Scalars:
  """The bicubic row and the samples' gap to it (also what `periodic_eval` writes)."""
  out = metrics.reference_upsampling_metrics(x_BxhxwxC, y_BxHxWxC)
  out[f"psnr_gap_to_{REF}"] = out[f"{REF}/psnr"] - psnr_mean
  return out


def compute(ctx: base.Context) -> base.Scalars:
  out = reference_scalars(ctx.batch["x"], ctx.batch["y"], ctx.scalars["psnr_mean"])
  gap = out[f"psnr_gap_to_{REF}"]
  pixel_diversity = diversity.keys(base.PIXEL)[0]
  if gap > 0 and pixel_diversity in ctx.scalars:
    out["diversity_per_db_gap"] = ctx.scalars[pixel_diversity] / gap
  return out


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if f"{REF}/psnr" not in m:
    return []
  return [f"  reference  {REF} upsampling of the same inputs: PSNR {m[f'{REF}/psnr']:.2f} dB, SSIM "
          f"{m[f'{REF}/ssim']:.3f}"
          + (f"; mean sample {-m[f'psnr_gap_to_{REF}']:+.2f} dB against it" if f"psnr_gap_to_{REF}" in m else "")
          + (f"; diversity per dB lost {m['diversity_per_db_gap']:.3g}" if "diversity_per_db_gap" in m else "")]


SR_REFERENCE = base.Evaluator("sr_reference", compute, summarize, needs=("super_resolution",),
                              after=("fidelity",), periodic=True)
