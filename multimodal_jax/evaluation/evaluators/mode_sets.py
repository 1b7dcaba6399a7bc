"""`mode_sets`: modes that depend on the input, and spurious variation.

cimle_srim_ijcv §4: in super-resolution "the factors of variation in the
plausible output images depend very much on the input"; a method should vary
the ambiguous regions and keep the rest faithful. For datasets that know each
input's own set of modes (`DatasetSpec.modes_depend_on_input`:
toy_scenes_conditional, 1 to 16 modes per layout), from `--mode_samples`
samples per input (the `modes` evaluator's draw):

  mode_set_recall           share of an input's own K_j modes that some sample
                            matches (every segment within `mode_tolerance`), mean over inputs
  mode_set_precision        share of samples that match one of their input's modes
  mode_set_{recall,precision}/K<k>         the same over the inputs with k modes
  mode_set_{recall,precision}/multimodal   the same over the inputs with > 1 mode
  spurious_variation        mean per-pixel std across samples where all the input's
                            modes agree (0 for a faithful method)
  free_variation            the same where they differ (the variation asked for)

`metrics.mode_set_metrics` and `metrics.spurious_variation` define them. On
other datasets the evaluator does not apply (its need `mode_sets`).
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base
from multimodal_jax.evaluation.evaluators import modes


def compute(ctx: base.Context) -> base.Scalars:
  mode_sets = ctx.mode_sets()
  tolerance = ctx.dataset_spec().mode_tolerance
  sizes, counts = np.unique([len(m) for m in mode_sets], return_counts=True)
  ctx.info.update(mode_set_sizes={str(k): int(n) for k, n in zip(sizes, counts)}, mode_tolerance=tolerance,
                  mode_samples=ctx.mode_samples)
  samples = modes.mode_samples(ctx)
  out = metrics.mode_set_metrics(samples, mode_sets, ctx.batch["label"], tolerance)
  out.update(metrics.spurious_variation(samples, mode_sets))
  if "mode_set_recall/multimodal" not in out:
    ctx.skip("mode_set_recall/multimodal", "no eval input has more than one mode")
  for key, where in (("spurious_variation", "a fixed pixel"), ("free_variation", "a free pixel")):
    if key not in out:
      ctx.skip(key, f"no eval input has {where}")
  return out


def summarize(m: base.Scalars, header: dict) -> list[str]:
  if "mode_set_recall" not in m:
    return []
  sizes = header.get("mode_set_sizes", {})
  lines = [f"  mode sets (each input its own modes; inputs by number of modes: "
           f"{', '.join(f'{n} x {k}' for k, n in sizes.items())}; {header['mode_samples']} samples per input)  "
           f"recall {m['mode_set_recall']:.3f}, precision {m['mode_set_precision']:.3f}"
           + (f"; over inputs with > 1 mode: recall {m['mode_set_recall/multimodal']:.3f}, precision "
              f"{m['mode_set_precision/multimodal']:.3f}" if "mode_set_recall/multimodal" in m else "")]
  lines.append("    by number of modes: " + ", ".join(
      f"K={k} recall {m[f'mode_set_recall/K{k}']:.3f} precision {m[f'mode_set_precision/K{k}']:.3f}"
      for k in sizes if f"mode_set_recall/K{k}" in m))
  if "spurious_variation" in m or "free_variation" in m:
    fmt = lambda key: f"{m[key]:.4f}" if key in m else "-"
    lines.append(f"    per-pixel std across samples: spurious (where the input fixes the appearance) "
                 f"{fmt('spurious_variation')}, free (where it does not) {fmt('free_variation')}")
  return lines


MODE_SETS = base.Evaluator("mode_sets", compute, summarize, needs=("mode_sets",))
