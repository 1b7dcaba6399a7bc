"""`fidelity`: PSNR / SSIM (dm-pix, RGB) of the samples to the ground truth, best of N and mean over N."""

from __future__ import annotations

import jax

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base


def compute(ctx: base.Context) -> base.Scalars:
  out = jax.jit(metrics.psnr_ssim_best_and_mean)(ctx.samples, ctx.batch["y"])
  return {k: float(v) for k, v in out.items()}


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "psnr_best" not in m:
    return []
  return [f"  quality    PSNR best/mean {m['psnr_best']:.2f}/{m['psnr_mean']:.2f} dB, "
          f"SSIM best/mean {m['ssim_best']:.3f}/{m['ssim_mean']:.3f}"]


FIDELITY = base.Evaluator("fidelity", compute, summarize, periodic=True)
