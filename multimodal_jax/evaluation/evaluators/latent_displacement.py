"""`latent_displacement`: how far inference moves the latent codes (cGML, cgml_iclr2021 Eq. 4).

For methods with a `codes_along_inference` extra (z_0 .. z_T of `sample`'s
codes, [B, N, T + 1, D], drawn with the evaluation's key, so the same codes as
`sample`'s):
  latent_displacement   mean ||z_T - z_0|| over inputs and samples: 0 when
                        the Z-network does not move z (e.g. every calibrated
                        gain 0), so `sample` decodes z_0 (`mode_*_t0` = `mode_*`)
  latent_path_length    mean sum_t ||z_{t+1} - z_t||: the distance walked;
                        well above the displacement when z wanders
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation.evaluators import base

EXTRA = "codes_along_inference"
# Below this z has not moved: a step of gain 0 still re-projects z onto the sphere (~1e-7 of roundoff).
STILL = 1e-6


def displacement_metrics(codes_BxNxTxD: np.ndarray) -> base.Scalars:
  """{latent_displacement, latent_path_length} of codes along inference [B, N, T + 1, D]."""
  z = np.asarray(codes_BxNxTxD, np.float64)
  displacement = np.linalg.norm(z[:, :, -1] - z[:, :, 0], axis=-1)
  path = np.linalg.norm(np.diff(z, axis=2), axis=-1).sum(axis=-1)
  return {"latent_displacement": float(displacement.mean()), "latent_path_length": float(path.mean())}


def compute(ctx: base.Context) -> base.Scalars:
  codes = ctx.draw(ctx.num_samples, ctx.method.extras[EXTRA])
  ctx.info.update(inference_steps=int(codes.shape[2]) - 1)
  return displacement_metrics(codes)


def summarize(m: base.Scalars, header: dict) -> list[str]:
  if "latent_displacement" not in m:
    return []
  return [f"  latent codes over the {header.get('inference_steps', 'T')} inference steps  mean ||z_T - z_0|| "
          f"{m['latent_displacement']:.4f}, path length {m['latent_path_length']:.4f}"
          + ("  (z does not move: samples decode z_0)" if m["latent_displacement"] < STILL else "")]


LATENT_DISPLACEMENT = base.Evaluator("latent_displacement", compute, summarize, needs=(f"extra:{EXTRA}",))
