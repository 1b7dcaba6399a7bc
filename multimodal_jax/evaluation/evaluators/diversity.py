"""`diversity` / `lpips_diversity`: the mean distance between samples of one input.

Over all N (N - 1) / 2 pairs, and over 40 random pairs per input (cimle_srim_ijcv
§5.2 and cimle_semantic_layouts_iccv2019 Table 2: "40 pairs of output images for
each of 100 input semantic layouts"; disjoint pairs when N >= 80). `diversity`
measures it with the mean absolute pixel difference (`diversity_mean_abs_pixel`,
`pairwise_mean_abs_pixel_40pairs`), `lpips_diversity` with LPIPS (AlexNet v0.1:
`lpips_diversity`, `lpips_diversity_40pairs`), the literature's measure.
"""

from __future__ import annotations

import jax
import numpy as np

from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base


def keys(kind: str) -> tuple[str, str]:
  """(all pairs, 40 random pairs) metric names of a distance kind."""
  if kind == base.LPIPS:
    return "lpips_diversity", f"lpips_diversity_{metrics.PAIRWISE_NUM_PAIRS}pairs"
  return f"diversity_{kind}", f"pairwise_{kind}_{metrics.PAIRWISE_NUM_PAIRS}pairs"


@jax.jit
def _pair_distances(distance, samples_BxNxHxWxC: jax.Array, first_BxP: jax.Array,
                    second_BxP: jax.Array) -> jax.Array:
  """`metrics.distance_of_pairs` [B, P], one input at a time (bounded memory)."""

  def one_input(args):  # `metrics.distance_of_pairs`, from the features of each sample once
    samples_NxHxWxC, first_P, second_P = args
    features = distance.features(base.to_rgb(samples_NxHxWxC))
    return distance.from_features(base.tree_take(features, first_P), base.tree_take(features, second_P))

  return jax.lax.map(one_input, (samples_BxNxHxWxC, first_BxP, second_BxP))


def _compute(ctx: base.Context, kind: str) -> base.Scalars:
  all_pairs, random_pairs = keys(kind)
  distance = ctx.distance(kind)
  if distance is None:
    ctx.skip(all_pairs, base.MISSING_LPIPS)
    return {}
  out = {all_pairs: float(np.mean(ctx.distance_terms(kind)[2]))}
  b, n = ctx.samples.shape[:2]
  num_pairs = metrics.PAIRWISE_NUM_PAIRS
  if n * (n - 1) // 2 < num_pairs:
    ctx.skip(random_pairs, f"{num_pairs} different pairs need N (N - 1) / 2 >= {num_pairs}, i.e. "
             f"--num_samples >= 10; got {n}")
    return out
  first_BxP, second_BxP = metrics.random_distinct_pairs(ctx.metric_rngs()["pairs"], b, n, num_pairs)
  out[random_pairs] = float(np.mean(_pair_distances(distance, ctx.samples, first_BxP, second_BxP)))
  return out


def _summarize(kind: str):
  def summarize(m: base.Scalars, header: dict) -> list[str]:
    del header
    all_pairs, random_pairs = keys(kind)
    if all_pairs not in m:
      return []
    return [f"  diversity  {kind} {m[all_pairs]:.4g}"
            + (f" ({metrics.PAIRWISE_NUM_PAIRS} random pairs: {m[random_pairs]:.4g})" if random_pairs in m
               else "")]
  return summarize


DIVERSITY = base.Evaluator("diversity", lambda ctx: _compute(ctx, base.PIXEL), _summarize(base.PIXEL))
LPIPS_DIVERSITY = base.Evaluator("lpips_diversity", lambda ctx: _compute(ctx, base.LPIPS),
                                 _summarize(base.LPIPS), needs=("rgb_images",))
