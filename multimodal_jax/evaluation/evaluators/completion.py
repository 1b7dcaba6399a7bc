"""`completion`: PSNR inside the hole a completion task asks for, and with the known pixels pasted.

On completion data (a `mask` in the batch, 1 where the input hides the target) a whole-image PSNR
also counts the visible pixels, which the input gives away: a method whose loss covers the whole
image (the L1 regression) copies them, one whose distance covers only the hole (conditional IMLE,
whose distance is weighted by `mask`) leaves them free, and cGML pastes them. These put the methods
on one footing (best of N and mean over N, per image, then over the inputs):

  psnr_hole_best, psnr_hole_mean      PSNR over the hole's pixels only
  psnr_pasted_best, psnr_pasted_mean  whole-image PSNR of y (1 - mask) + sample mask
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation.evaluators import base


def _psnr_BxN(mse_BxN: np.ndarray) -> np.ndarray:
  return 10.0 * np.log10(1.0 / np.maximum(mse_BxN, 1e-10))


def completion_psnr(samples_BxNxHxWxC, y_BxHxWxC, mask_BxHxWx1) -> dict[str, float]:
  """The four numbers above; samples clipped to [0, 1] (the images' range)."""
  s = np.clip(np.asarray(samples_BxNxHxWxC, np.float64), 0.0, 1.0)
  y = np.asarray(y_BxHxWxC, np.float64)[:, None]
  m = np.broadcast_to(np.asarray(mask_BxHxWx1, np.float64)[:, None], y.shape)
  se = (s - y) ** 2
  hole = _psnr_BxN((se * m).sum(axis=(2, 3, 4)) / np.maximum(m.sum(axis=(2, 3, 4)), 1.0))
  pasted = _psnr_BxN((se * m).mean(axis=(2, 3, 4)))  # the visible pixels are y's own: error 0
  return {"psnr_hole_best": float(hole.max(1).mean()), "psnr_hole_mean": float(hole.mean()),
          "psnr_pasted_best": float(pasted.max(1).mean()), "psnr_pasted_mean": float(pasted.mean())}


def compute(ctx: base.Context) -> base.Scalars:
  if "mask" not in ctx.batch:
    ctx.skip("psnr_hole_best", "the data have no completion mask")
    return {}
  return completion_psnr(ctx.samples, ctx.batch["y"], ctx.batch["mask"])


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "psnr_hole_best" not in m:
    return []
  return [f"  completion PSNR in the hole best/mean {m['psnr_hole_best']:.2f}/{m['psnr_hole_mean']:.2f} dB, "
          f"known pixels pasted {m['psnr_pasted_best']:.2f}/{m['psnr_pasted_mean']:.2f} dB"]


COMPLETION = base.Evaluator("completion", compute, summarize)
