"""`reality`: samples and real images segmented by a net trained on the real images (diversity_loss_yang_liu_cai Table II).

`reality/{pixel_accuracy,mean_iou}` of the samples against their input
layout, next to `reality/real_*`, the same for the real images: how real the
samples look to a segmenter (evaluation/reality.py; trained once, ~20 s, and
cached in the workdir). Layout datasets only.
"""

from __future__ import annotations

from multimodal_jax.evaluation import reality
from multimodal_jax.evaluation.evaluators import base


def compute(ctx: base.Context) -> base.Scalars:
  params, _ = reality.load_or_train_segmenter(ctx.workdir, ctx.config.data)
  labels_BxHxW, num_classes = ctx.batch["label"], ctx.batch["x"].shape[-1]
  out = reality.reality_metrics(params, ctx.samples, labels_BxHxW, num_classes)
  out.update(reality.real_reference(params, ctx.batch["y"], labels_BxHxW, num_classes))
  return {k: float(v) for k, v in out.items()}


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "reality/mean_iou" not in m:
    return []
  return [f"  reality (segmented by a net trained on real images)  pixel accuracy "
          f"{m['reality/pixel_accuracy']:.3f}, mean IoU {m['reality/mean_iou']:.3f}; real images: "
          f"{m['reality/real_pixel_accuracy']:.3f}, {m['reality/real_mean_iou']:.3f}"]


REALITY = base.Evaluator("reality", compute, summarize, needs=("label",))
