"""`class_variance`: per-class pixel variance across samples (cimle_semantic_layouts_iccv2019 §4.3, Table 1).

`per_class_variance/<class>`: the variance over the N samples of each pixel,
averaged over the pixels of each class of the input layout, and `/overall`.
`clustered_variance/<class>`: the paper's protocol — k-means of the N samples
into 9 clusters (CRN's 9 outputs), one sample of each, the same variance, 10
repeats (needs N >= 9; the paper: 100). Classes absent from every evaluated
layout are left out; names from `DatasetSpec.class_names`, else class<c>.
"""

from __future__ import annotations

import numpy as np

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base


def _named(prefix: str, names: tuple[str, ...], per_class_K, overall) -> base.Scalars:
  out = {f"{prefix}/{name}": float(value) for name, value in zip(names, per_class_K) if np.isfinite(value)}
  out[f"{prefix}/overall"] = overall
  return out


def compute(ctx: base.Context) -> base.Scalars:
  labels_BxHxW, num_classes, names = ctx.batch["label"], ctx.batch["x"].shape[-1], ctx.class_names()
  out = _named("per_class_variance", names,
               *metrics.per_class_pixel_variance(ctx.samples, labels_BxHxW, num_classes))
  if ctx.num_samples < metrics.NUM_CLUSTERS:
    ctx.skip("clustered_variance", f"k-means into {metrics.NUM_CLUSTERS} clusters needs --num_samples >= "
             f"{metrics.NUM_CLUSTERS} (the paper: 100); got {ctx.num_samples}")
    return out
  out.update(_named("clustered_variance", names, *metrics.clustered_per_class_variance(
      ctx.samples, labels_BxHxW, num_classes, ctx.metric_rngs()["clusters"])))
  return out


def summarize(m: base.Scalars, header: dict) -> list[str]:
  del header
  if "per_class_variance/overall" not in m:
    return []
  return [f"  per-class pixel variance, overall {m['per_class_variance/overall']:.4g}"
          + (f"; clustered ({metrics.NUM_CLUSTERS} clusters, {metrics.CLUSTER_REPEATS} repeats, "
             f"ICCV'19 Table 1) {m['clustered_variance/overall']:.4g}"
             if "clustered_variance/overall" in m else "")]


CLASS_VARIANCE = base.Evaluator("class_variance", compute, summarize, needs=("label",))
