"""Evaluators by name: `config.evals` lists the metric families `evaluate` runs, in order.

One module per family (evaluators/base.py says what an evaluator is):

  fidelity         psnr_best, psnr_mean, ssim_best, ssim_mean (RGB, dm-pix)
  lpips            lpips_best, lpips_mean: LPIPS (alex) to the ground truth
  diversity        diversity_mean_abs_pixel, pairwise_mean_abs_pixel_40pairs
  lpips_diversity  lpips_diversity, lpips_diversity_40pairs (ICCV'19 / IJCV §5.2 protocol)
  fwv              fwv_mean_abs_pixel_sigma{0.3,0.2,0.15} (IJCV §5.1.5)
  lpips_fwv        lpips_fwv_sigma{0.3,0.2,0.15}, with LPIPS as the paper
  class_variance   per_class_variance/<class>, clustered_variance/<class> (ICCV'19 Table 1)
  modes            mode_recall, mode_recall_nearest, mode_precision, mode_recall_rare
  modes_t0         mode_*_t0: cGML's z_0 decoded without inference steps
  latent_displacement  latent_displacement (mean ||z_T - z_0||), latent_path_length: how far cGML's
                   inference moves z
  modes_by_code    mode_*_training_codes / _fresh_codes: latent drop-out codes' two kinds of codes apart
  mode_sets        mode_set_recall, mode_set_precision (overall, /K<k>, /multimodal), spurious_variation,
                   free_variation: where each input has its own modes (toy_scenes_conditional)
  sr_reference     bicubic/{psnr,ssim}, psnr_gap_to_bicubic, diversity_per_db_gap
  sr_protocol      NTIRE'21: lr_psnr_{mean,worst}, sr_diversity_score; psnr_y_*, ssim_y_* (BasicSR),
                   and the same for bicubic
  noise_linking    noise_linking/<class>, noise_linking, noise_linking_beyond_rim/<class>
  reality          reality/{pixel_accuracy,mean_iou}, reality/real_* (diversity loss Table II)

The table holds "module:ATTR" strings, resolved on first use, like
`models.registry.MODELS`; `register` adds a user's own (docs/extending.md).
"""

from __future__ import annotations

import importlib

from multimodal_jax.evaluation.evaluators.base import Context, Evaluator, parameter_counts  # noqa: F401  (the API)

_PKG = "multimodal_jax.evaluation.evaluators"
EVALUATORS: dict[str, str | Evaluator] = {
    "fidelity": f"{_PKG}.fidelity:FIDELITY",
    "completion": f"{_PKG}.completion:COMPLETION",
    "lpips": f"{_PKG}.lpips:LPIPS",
    "diversity": f"{_PKG}.diversity:DIVERSITY",
    "lpips_diversity": f"{_PKG}.diversity:LPIPS_DIVERSITY",
    "fwv": f"{_PKG}.fwv:FWV",
    "lpips_fwv": f"{_PKG}.fwv:LPIPS_FWV",
    "class_variance": f"{_PKG}.class_variance:CLASS_VARIANCE",
    "modes": f"{_PKG}.modes:MODES",
    "modes_t0": f"{_PKG}.modes:MODES_T0",
    "latent_displacement": f"{_PKG}.latent_displacement:LATENT_DISPLACEMENT",
    "modes_by_code": f"{_PKG}.modes:MODES_BY_CODE",
    "mode_sets": f"{_PKG}.mode_sets:MODE_SETS",
    "sr_reference": f"{_PKG}.sr_reference:SR_REFERENCE",
    "sr_protocol": f"{_PKG}.sr_protocol:SR_PROTOCOL",
    "noise_linking": f"{_PKG}.noise_linking:NOISE_LINKING",
    "reality": f"{_PKG}.reality:REALITY",
}


def register(evaluator: Evaluator) -> None:
  """Adds an evaluator defined outside this package (a module given with `--import`)."""
  if EVALUATORS.get(evaluator.name, evaluator) is not evaluator:
    raise ValueError(f"Evaluator {evaluator.name!r} is registered twice.")
  EVALUATORS[evaluator.name] = evaluator


def get(name: str) -> Evaluator:
  entry = EVALUATORS.get(name)
  if entry is None:
    raise ValueError(f"Unknown evaluator {name!r}; valid: {sorted(EVALUATORS)}")
  if isinstance(entry, str):
    module, attr = entry.split(":")
    entry = EVALUATORS[name] = getattr(importlib.import_module(module), attr)
  return entry


def check_names(names) -> str | None:
  """Why the list `names` is invalid (an unknown name, a repeat, an evaluator before one it reads), or None."""
  names = list(names)
  for i, name in enumerate(names):
    if name not in EVALUATORS:
      return f"unknown evaluator {name!r}; valid: {sorted(EVALUATORS)}"
    if name in names[:i]:
      return f"{name!r} is listed twice"
    missing = [a for a in get(name).after if a not in names[:i]]
    if missing:
      return f"{name!r} reads the metrics of {missing}: list them before it"
  return None


def run(names, ctx: Context, periodic_only: bool = False) -> dict[str, float]:
  """Runs the listed evaluators that apply to the run, in order; returns every metric (also in ctx.scalars)."""
  for name in names:
    evaluator = get(name)
    if (periodic_only and not evaluator.periodic) or not evaluator.applies(ctx):
      continue
    ctx.scalars.update(evaluator.compute(ctx))
  return ctx.scalars


def summary_lines(names, scalars: dict[str, float], header: dict) -> list[str]:
  """Every listed evaluator's console lines, in order."""
  return [line for name in names for line in get(name).summarize(scalars, header)]
