"""`noise_linking`: does the noise of segment c change segment c only? (diversity_loss_yang_liu_cai Fig. 2-3).

For methods with `gradation_<class id>` extras (the diversity loss: the noise
of one class's segment swept from -1 to 1 in 9 steps):
  noise_linking/<class>   mean change inside segment c over the mean change outside it
  noise_linking           their mean over classes; `noise_linking_inside`: the inside change
  noise_linking_beyond_rim/<class>
                          the same ratio with "outside" taken beyond 2 px of segment c:
                          how much of the outside change is the rim a generator's last
                          upsampling blurs (a diagnostic; `metrics.within_distance`)
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base

# Extras named GRADATION_PREFIX + <class id> sweep the noise of that class's segment.
GRADATION_PREFIX = "gradation_"
NOISE_LINKING_STEPS = 9
RIM_PX = 2.0
BEYOND_RIM = "noise_linking_beyond_rim"


def compute(ctx: base.Context) -> base.Scalars:
  out, ratios, insides = {}, [], []
  for c, name in enumerate(ctx.class_names()):
    fn = ctx.method.extras.get(f"{GRADATION_PREFIX}{c}")
    if fn is None:
      continue
    sweep = ctx.draw(NOISE_LINKING_STEPS, fn)
    inside, outside = metrics.noise_linking(sweep, ctx.batch["label"], c)
    if np.isfinite(inside) and np.isfinite(outside):
      out[f"noise_linking/{name}"] = inside / max(outside, 1e-6)
      ratios.append(out[f"noise_linking/{name}"])
      insides.append(inside)
      _, beyond = metrics.noise_linking(sweep, ctx.batch["label"], c, rim_px=RIM_PX)
      if np.isfinite(beyond):
        out[f"{BEYOND_RIM}/{name}"] = inside / max(beyond, 1e-6)
  if ratios:
    out["noise_linking"] = float(np.mean(ratios))
    out["noise_linking_inside"] = float(np.mean(insides))
  return out


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "noise_linking" not in m:
    return []
  lines = [f"  noise linking (change inside segment c / outside, n^c swept -1 -> 1, mean over classes) "
           f"{m['noise_linking']:.3g}; mean change inside {m['noise_linking_inside']:.3g}"]
  per_class = [f"{k.split('/', 1)[1]} {v:.3g}" for k, v in m.items() if k.startswith("noise_linking/")]
  if per_class:
    lines.append(f"    per class: {', '.join(per_class)}")
  beyond = [f"{k.split('/', 1)[1]} {v:.3g}" for k, v in m.items() if k.startswith(f"{BEYOND_RIM}/")]
  if beyond:
    lines.append(f"    outside taken beyond a {RIM_PX:g}-px rim of the segment: {', '.join(beyond)}")
  return lines


NOISE_LINKING = base.Evaluator("noise_linking", compute, summarize,
                               needs=("label", f"extra_prefix:{GRADATION_PREFIX}"))
