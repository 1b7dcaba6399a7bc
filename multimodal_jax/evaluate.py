r"""Evaluates a trained run: `python -m multimodal_jax.evaluate --workdir=DIR`.

  python -m multimodal_jax.evaluate --workdir=/tmp/regression [--num_inputs=16 --num_samples=16 --step=S]
  python -m multimodal_jax.evaluate --workdir=DIR --import=my_data   # a user dataset or method module
  python -m multimodal_jax.evaluate --workdir=DIR --num_inputs=100 --num_samples=100   # the papers' protocol

Restores the newest (or `--step`) checkpoint of DIR, draws `num_samples`
samples for each of the first `num_inputs` eval examples and computes every
metric that applies to the dataset (evaluation/metrics.py):

  fwv_<d>_sigma{0.3,0.2,0.15}  faithfulness-weighted variance (cimle_srim_ijcv §5.1.5)
  psnr_best, psnr_mean,        dm-pix PSNR / SSIM to the ground truth, of the best
  ssim_best, ssim_mean         of N samples and averaged over the N samples
  diversity_<d>                mean pairwise distance between samples of one input
  pairwise_<d>_40pairs         the same over 40 random pairs per input
                               (cimle_srim_ijcv §5.2; needs N >= 10, disjoint
                               pairs when N >= 80)
  per_class_variance/<class>   per-class pixel variance over the N samples
                               (datasets whose eval batches carry a `label`
                               layout, e.g. toy_scenes); class names from
                               `DatasetSpec.class_names`, else class<c>
  clustered_variance/<class>   ICCV'19 §4.3 / Table 1: k-means of the N samples
                               into 9 clusters, one sample of each, per-class
                               pixel variance, 10 repeats (`label` and N >= 9)
  bicubic/{psnr,ssim},         super-resolution datasets: bicubic upsampling of the same
  psnr_gap_to_bicubic,         inputs (the trivial baseline), bicubic PSNR - psnr_mean (dB),
  diversity_per_db_gap         and the diversity / that gap when it is > 0
  mode_recall, mode_recall_nearest, mode_precision
  (+ mode_*_t0 for methods with an `initial_sample` extra, cGML: the same z_0
  decoded without the Z-network's T iterations, what inference adds or loses)
                               datasets whose `DatasetSpec.true_modes` gives the
                               exact modes of an example (toy_scenes: K = 12),
                               from `--mode_samples` (default 64) samples per input;
                               per segment where each class draws its own mode
                               (toy_scenes `segments`; metrics.segment_mode_metrics)
  reality/{pixel_accuracy,     layout datasets, `--reality` (default: the diversity
  mean_iou}, reality/real_*    method): samples and real images segmented by a small
                               net trained on the real training images (Table II of
                               diversity_loss_yang_liu_cai; evaluation/reality.py)
  noise_linking/<class>,       methods with `gradation_<class id>` extras (the diversity
  noise_linking                loss): mean change inside segment c over the mean change
                               outside it as n^c sweeps -1 -> 1 (diversity_loss_yang_liu_cai
                               Fig. 2-3 as a number; `metrics.noise_linking`), per class
                               and averaged over classes (`noise_linking_inside`: the
                               inside change itself)
  noise_linking_beyond_rim/    the same ratio with "outside" taken beyond 2 px of segment
  <class>                      c: how much of the outside change is the rim a generator's
                               last upsampling blurs (a diagnostic; at 32x64 the rim is a
                               large share of a big segment's surroundings)

`--num_inputs=100 --num_samples=100` is the papers' protocol: the ICCV'19 Table 1
variance over 100 samples of each of 100 layouts, and the IJCV 40 pairs of
different outputs for each of 100 layouts (disjoint pairs, as N >= 80). Metrics
that do not apply to the drawn N are skipped, with the reason printed and in
eval.json["skipped"].

<d> names the distance: `lpips` (LPIPS-alex) when its weights are found
(docs/weights.md), else `mean_abs_pixel` (the l1 `pixel` distance: mean absolute
pixel difference); the choice is logged and written to eval.json.

Writes DIR/eval.json ({"step", ..., "metrics": {name: value}, "skipped": {name: why}}), a copy
DIR/eval_<step>.json that later evaluations of other steps leave in place, and the same
scalars to TensorBoard under DIR with the prefix `eval/` at the checkpoint's
step, and prints a short summary. ~10 s for a small model on a CPU.

Modules given with `--import` (and those the run was trained with, recorded in
run_info.json) are imported first, so user datasets and methods work.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

from absl import app
from absl import flags
from absl import logging
from clu import metric_writers
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax import inference
from multimodal_jax import plugins
from multimodal_jax import workdir as workdir_lib
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry as data_registry
from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation import reality
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base

EVAL_JSON = "eval.json"
SUBSTITUTE_DISTANCE = "mean_abs_pixel"


def step_json(step: int) -> str:
  """The file name of one step's evaluation (a copy of eval.json written beside it)."""
  return f"eval_{step}.json"


def make_eval_distance(weights_dir: str | None = None) -> tuple[str, perceptual.Distance]:
  """LPIPS-alex if its weights are found, else the mean absolute pixel difference.

  Returns:
    (the name used in metric keys, the distance).
  """
  try:
    return "lpips", perceptual.make_distance(perceptual.default_distance_config("lpips"), weights_dir)
  except perceptual.MissingWeightsError as e:
    logging.warning("LPIPS unavailable; using %s instead. %s", SUBSTITUTE_DISTANCE, e)
    missing = str(e).split(", which does not exist")[0]
    print(f"LPIPS unavailable ({missing}; see docs/weights.md): diversity and FWV use "
          f"{SUBSTITUTE_DISTANCE} (the mean absolute pixel difference) instead.", flush=True)
    return SUBSTITUTE_DISTANCE, perceptual.make_distance(perceptual.default_distance_config("pixel"))


def to_rgb(images: jax.Array) -> jax.Array:
  """[..., 1] grey -> [..., 3]; [..., 3] unchanged (perceptual distances need RGB)."""
  if images.shape[-1] == 1:
    return jnp.repeat(images, 3, axis=-1)
  if images.shape[-1] != 3:
    raise ValueError(f"Cannot show {images.shape[-1]}-channel images as RGB.")
  return images


@jax.jit
def _distance_terms(distance: perceptual.Distance, samples_BxNxHxWxC: jax.Array,
                    y_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """FWV distances [B, N] x 2 and diversity [B], one input at a time (bounded memory)."""

  def one_input(args):
    samples_NxHxWxC, y_HxWxC = args
    samples_1xNxHxWx3, y_1xHxWx3 = to_rgb(samples_NxHxWxC[None]), to_rgb(y_HxWxC[None])
    d_to_mean_1xN, d_to_truth_1xN = metrics.fwv_distances(samples_1xNxHxWx3, y_1xHxWx3, distance)
    diversity = metrics.mean_pairwise_distance(samples_1xNxHxWx3, distance)
    return d_to_mean_1xN[0], d_to_truth_1xN[0], diversity

  return jax.lax.map(one_input, (samples_BxNxHxWxC, y_BxHxWxC))


@jax.jit
def _pair_distances(distance: perceptual.Distance, samples_BxNxHxWxC: jax.Array, first_BxP: jax.Array,
                    second_BxP: jax.Array) -> jax.Array:
  """`metrics.distance_of_pairs` [B, P], one input at a time (bounded memory)."""

  def one_input(args):
    samples_NxHxWxC, first_P, second_P = args
    return metrics.distance_of_pairs(to_rgb(samples_NxHxWxC[None]), first_P[None], second_P[None],
                                     distance)[0]

  return jax.lax.map(one_input, (samples_BxNxHxWxC, first_BxP, second_BxP))


def pairwise_key(distance_name: str) -> str:
  return f"pairwise_{distance_name}_{metrics.PAIRWISE_NUM_PAIRS}pairs"


def skipped_metrics(num_samples: int, batch: dict[str, np.ndarray], distance_name: str) -> dict[str, str]:
  """The metrics that `compute_metrics` leaves out for N samples per input: {key: why}."""
  skipped = {}
  num_pairs = metrics.PAIRWISE_NUM_PAIRS
  if num_samples * (num_samples - 1) // 2 < num_pairs:
    skipped[pairwise_key(distance_name)] = (
        f"{num_pairs} different pairs need N (N - 1) / 2 >= {num_pairs}, i.e. --num_samples >= 10; "
        f"got {num_samples}")
  if "label" in batch and num_samples < metrics.NUM_CLUSTERS:
    skipped["clustered_variance"] = (f"k-means into {metrics.NUM_CLUSTERS} clusters needs "
                                     f"--num_samples >= {metrics.NUM_CLUSTERS} (the paper: 100); "
                                     f"got {num_samples}")
  return skipped


def compute_metrics(samples_BxNxHxWxC: np.ndarray, batch: dict[str, np.ndarray], distance_name: str,
                    distance: perceptual.Distance, class_names: tuple[str, ...] | None = None,
                    true_modes_BxKxHxWxC: np.ndarray | None = None, mode_tolerance: float | None = None,
                    mode_samples_BxMxHxWxC: np.ndarray | None = None, rng: jax.Array | None = None,
                    rare_modes_K: np.ndarray | None = None,
                    segment_labels_BxHxW: np.ndarray | None = None) -> dict[str, float]:
  """Every metric that applies to the batch, as a flat dict of floats.

  Metrics that do not apply to N (`skipped_metrics`) are left out.

  Args:
    samples_BxNxHxWxC: N samples of each of the B inputs of `batch`.
    batch: eval examples; a `label` [B, H, W] (class ids of the one-hot x)
      adds the per-class variances.
    distance_name, distance: the image distance of diversity and FWV.
    class_names: names of the classes of `label` (default `class{c}`).
    true_modes_BxKxHxWxC: the exact modes of each input (`true_modes_of_batch`);
      given, adds mode recall and precision at `mode_tolerance`.
    mode_samples_BxMxHxWxC: the samples that the mode metrics use (evaluate:
      `--mode_samples` of them); default: `samples_BxNxHxWxC`.
    rng: the key of the random pairs and of k-means (split in two); default PRNGKey(0).
    rare_modes_K: the modes the training data shows least often (`rare_modes_of`):
      adds `mode_recall_rare`.
    segment_labels_BxHxW: the layouts where every class draws its own mode
      (`segment_labels_of`): the mode metrics are then per segment.
  """
  y_BxHxWxC = batch["y"]
  b, n = samples_BxNxHxWxC.shape[:2]
  skipped = skipped_metrics(n, batch, distance_name)
  pairs_rng, clusters_rng = jax.random.split(jax.random.PRNGKey(0) if rng is None else rng)
  out: dict[str, float] = {}
  d_to_mean_BxN, d_to_truth_BxN, diversity_B = _distance_terms(distance, samples_BxNxHxWxC, y_BxHxWxC)
  for sigma in metrics.FWV_SIGMAS:
    out[metrics.fwv_key(distance_name, sigma)] = float(
        metrics.faithfulness_weighted_variance_from_distances(d_to_mean_BxN, d_to_truth_BxN, sigma))
  out.update({k: float(v) for k, v in
              jax.jit(metrics.psnr_ssim_best_and_mean)(samples_BxNxHxWxC, y_BxHxWxC).items()})
  out[f"diversity_{distance_name}"] = float(jnp.mean(diversity_B))
  if pairwise_key(distance_name) not in skipped:
    first_BxP, second_BxP = metrics.random_distinct_pairs(pairs_rng, b, n, metrics.PAIRWISE_NUM_PAIRS)
    out[pairwise_key(distance_name)] = float(jnp.mean(
        _pair_distances(distance, samples_BxNxHxWxC, first_BxP, second_BxP)))

  if "label" in batch:
    num_classes = batch["x"].shape[-1]
    names = class_names or tuple(f"class{c}" for c in range(num_classes))
    if len(names) != num_classes:
      raise ValueError(f"class_names has {len(names)} names for the {num_classes} classes of the one-hot "
                       f"input: {names}.")
    per_class_K, overall = metrics.per_class_pixel_variance(samples_BxNxHxWxC, batch["label"], num_classes)
    for name, value in zip(names, per_class_K):
      if np.isfinite(value):  # Classes absent from every evaluated layout are left out.
        out[f"per_class_variance/{name}"] = float(value)
    out["per_class_variance/overall"] = overall
    if "clustered_variance" not in skipped:
      per_class_K, overall = metrics.clustered_per_class_variance(samples_BxNxHxWxC, batch["label"],
                                                                  num_classes, clusters_rng)
      for name, value in zip(names, per_class_K):
        if np.isfinite(value):
          out[f"clustered_variance/{name}"] = float(value)
      out["clustered_variance/overall"] = overall
  if true_modes_BxKxHxWxC is not None:
    out.update(metrics.mode_metrics(samples_BxNxHxWxC if mode_samples_BxMxHxWxC is None
                                    else mode_samples_BxMxHxWxC, true_modes_BxKxHxWxC, mode_tolerance,
                                    rare_modes_K, segment_labels_BxHxW))
  return out


NOISE_LINKING_STEPS = 9
# The diagnostic `noise_linking_beyond_rim/<class>`: the ratio without the pixels this close to the segment.
NOISE_LINKING_RIM_PX = 2.0
BEYOND_RIM = "noise_linking_beyond_rim"
REALITY_CHOICES = ("auto", "on", "off")


def reality_metrics_of(workdir: str, data_config, samples_BxNxHxWxC: np.ndarray,
                       batch: dict[str, np.ndarray]) -> dict[str, float]:
  """diversity_loss_yang_liu_cai Table II: samples and real images segmented by a net trained on real images."""
  params, _ = reality.load_or_train_segmenter(workdir, data_config)
  num_classes = batch["x"].shape[-1]
  out = reality.reality_metrics(params, samples_BxNxHxWxC, batch["label"], num_classes)
  out.update(reality.real_reference(params, batch["y"], batch["label"], num_classes))
  return {k: float(v) for k, v in out.items()}


def reference_row(scalars: dict[str, float], distance_name: str, batch: dict[str, np.ndarray]
                  ) -> dict[str, float]:
  """Super-resolution: bicubic upsampling's PSNR/SSIM on the same inputs, and the model's gap to it.

  `psnr_gap_to_bicubic` = bicubic PSNR - the model's mean PSNR (dB; negative
  when a typical sample beats bicubic); `diversity_per_db_gap` = the model's
  diversity / that gap: how much diversity each dB lost buys (left out when
  there is no loss).
  """
  ref = metrics.REFERENCE_UPSAMPLING
  out = metrics.reference_upsampling_metrics(batch["x"], batch["y"])
  gap = out[f"{ref}/psnr"] - scalars["psnr_mean"]
  out[f"psnr_gap_to_{ref}"] = gap
  if gap > 0:
    out["diversity_per_db_gap"] = scalars[f"diversity_{distance_name}"] / gap
  return out


def noise_linking_metrics(method, state, batch: dict[str, np.ndarray], class_names: tuple[str, ...] | None,
                          seed: int = 0) -> dict[str, float]:
  """`noise_linking/<class>` (inside / outside change) and their mean, from the method's gradation extras."""
  num_classes = batch["x"].shape[-1]
  names = class_names or tuple(f"class{c}" for c in range(num_classes))
  out, ratios, insides = {}, [], []
  for c, name in enumerate(names):
    fn = method.extras.get(f"{methods_base.GRADATION_PREFIX}{c}")
    if fn is None:
      continue
    sweep = jax.device_get(jax.jit(fn, static_argnums=3)(state, jnp.asarray(batch["x"]),
                                                          jax.random.PRNGKey(seed), NOISE_LINKING_STEPS))
    inside, outside = metrics.noise_linking(sweep, batch["label"], c)
    if np.isfinite(inside) and np.isfinite(outside):
      out[f"noise_linking/{name}"] = inside / max(outside, 1e-6)
      ratios.append(out[f"noise_linking/{name}"])
      insides.append(inside)
      _, beyond = metrics.noise_linking(sweep, batch["label"], c, rim_px=NOISE_LINKING_RIM_PX)
      if np.isfinite(beyond):
        out[f"{BEYOND_RIM}/{name}"] = inside / max(beyond, 1e-6)
  if ratios:
    out["noise_linking"] = float(np.mean(ratios))
    out["noise_linking_inside"] = float(np.mean(insides))
  return out


def rare_modes_of(data_config) -> np.ndarray | None:
  """Boolean [K]: the modes below the median training frequency, for datasets that give
  `DatasetSpec.mode_frequencies` (None when every mode is as frequent)."""
  spec = data_registry.get_dataset(data_config.name)
  if spec.mode_frequencies is None:
    return None
  return metrics.rare_modes(spec.mode_frequencies(pipeline.get_builder(data_config).builder_config))


def true_modes_of_batch(data_config, batch: dict[str, np.ndarray]) -> np.ndarray | None:
  """The exact modes [B, K, H, W, C] of each eval example, for datasets that know them; else None.

  They come from the dataset's `DatasetSpec.true_modes(label, builder_config)`:
  the modes depend on the layout and on the variant (e.g. toy_scenes' K).
  """
  spec = data_registry.get_dataset(data_config.name)
  if spec.true_modes is None:
    return None
  if "label" not in batch:
    logging.warning("Dataset %s gives true_modes, but its eval batches carry no `label`: no mode metrics.",
                    data_config.name)
    return None
  builder_config = pipeline.get_builder(data_config).builder_config
  modes = [spec.true_modes(label_HxW, builder_config) for label_HxW in batch["label"]]
  if any(m is None for m in modes):  # a variant without discrete modes (toy_scenes `lighting`)
    return None
  return np.stack([np.asarray(m, np.float32) for m in modes])


def segment_labels_of(data_config, batch: dict[str, np.ndarray]) -> np.ndarray | None:
  """The eval layouts when the dataset's classes draw their modes independently (else None)."""
  spec = data_registry.get_dataset(data_config.name)
  if spec.independent_segments is None or "label" not in batch:
    return None
  return batch["label"] if spec.independent_segments(pipeline.get_builder(data_config).builder_config) else None


def initial_mode_metrics(method, state, batch: dict[str, np.ndarray], true_modes_BxKxHxWxC: np.ndarray,
                         tolerance: float, num_samples: int, seed: int = 0,
                         segment_labels_BxHxW: np.ndarray | None = None) -> dict[str, float]:
  """`mode_*_t0`: the mode metrics of the method's `initial_sample` (cGML: G at the z_0 of `sample`).

  Drawn with `sample`'s key, so t = 0 and t = T are the same starting codes.
  """
  samples = np.asarray(jax.device_get(jax.jit(method.extras["initial_sample"], static_argnums=3)(
      state, jnp.asarray(batch["x"]), jax.random.PRNGKey(seed), num_samples)), np.float32)
  out = metrics.mode_metrics(samples, true_modes_BxKxHxWxC, tolerance, segment_labels_BxHxW=segment_labels_BxHxW)
  return {f"{k}_t0": v for k, v in out.items()}


def parameter_counts(state) -> dict[str, int]:
  """{network name: its trainable parameters} of a method state ({} for a state without `networks`)."""
  return {name: int(sum(np.size(leaf) for leaf in jax.tree.leaves(network.params)))
          for name, network in getattr(state, "networks", {}).items()}


def evaluate(workdir: str, num_inputs: int = 16, num_samples: int = 16, step: int | None = None,
             seed: int = 0, weights_dir: str | None = None, mode_samples: int = 64,
             reality_mode: str = "auto", return_samples: bool = False) -> dict[str, Any]:
  """Evaluates the run in `workdir`; writes eval.json and TensorBoard scalars; returns the json dict.

  Args:
    workdir: the --workdir of a training run.
    num_inputs: how many eval examples (the first ones of the eval split; all of
      them, with a printed note, if the split has fewer).
    num_samples: samples drawn per input (N >= 2).
    step: the checkpoint to evaluate; None = the newest.
    seed: the sampling rng seed.
    weights_dir: where to look for the LPIPS weights first (perceptual.make_distance).
    mode_samples: samples per input for the mode metrics (datasets with true
      modes): a second draw with the same seed (the same samples when equal to
      `num_samples`), so the other metrics do not depend on it.
    reality_mode: 'on', 'off' or 'auto' (on for the `diversity` method): the
      reality metrics of layout datasets (`evaluation/reality.py`: a small
      segmentation network trained on the real training images, cached in
      the workdir, ~20 s the first time).
    return_samples: also return the drawn arrays (not written to eval.json) under
      "arrays": samples [B, N, ...], mode_samples [B, M, ...] (datasets with true
      modes), true_modes [B, K, ...], label [B, H, W] (layout datasets).
  """
  _check_arguments(num_samples, mode_samples, reality_mode)
  start = time.time()
  config, method, state, _ = inference.load_trained(workdir, step)
  batch = pipeline.load_eval_examples(config, num_inputs, allow_fewer=True)
  draw = _sampler(method, state, batch, seed)
  samples_BxNxHxWxC = draw(num_samples)
  distance_name, distance = make_eval_distance(weights_dir)
  spec = data_registry.get_dataset(config.data.name)
  true_modes_BxKxHxWxC = true_modes_of_batch(config.data, batch)
  segment_labels_BxHxW = mode_samples_BxMxHxWxC = None
  if true_modes_BxKxHxWxC is not None:
    segment_labels_BxHxW = segment_labels_of(config.data, batch)
    mode_samples_BxMxHxWxC = samples_BxNxHxWxC if mode_samples == num_samples else draw(mode_samples)
  skipped = skipped_metrics(num_samples, batch, distance_name)
  for name, why in skipped.items():
    logging.info("Skipping %s: %s.", name, why)
  # The sampling key is PRNGKey(seed) itself; the metrics' randomness is a stream of its own.
  scalars = compute_metrics(samples_BxNxHxWxC, batch, distance_name, distance, spec.class_names,
                            true_modes_BxKxHxWxC, spec.mode_tolerance, mode_samples_BxMxHxWxC,
                            rng=jax.random.fold_in(jax.random.PRNGKey(seed), 1),
                            rare_modes_K=None if true_modes_BxKxHxWxC is None else rare_modes_of(config.data),
                            segment_labels_BxHxW=segment_labels_BxHxW)
  scalars.update(_task_metrics(workdir, config, method, state, batch, samples_BxNxHxWxC, true_modes_BxKxHxWxC,
                               scalars, distance_name, mode_samples, seed, reality_mode, segment_labels_BxHxW))
  result = _result_header(workdir, config, state, len(batch["x"]), num_samples, mode_samples, seed,
                          distance_name, distance)
  if true_modes_BxKxHxWxC is not None:
    result.update(num_modes=int(true_modes_BxKxHxWxC.shape[1]), mode_tolerance=spec.mode_tolerance,
                  modes_per_segment=segment_labels_BxHxW is not None)
  result["metrics"] = scalars
  result["skipped"] = skipped
  if jax.process_index() == 0:
    _write(workdir, result)
  print(summary(result, time.time() - start), flush=True)
  if return_samples:
    result["arrays"] = {"samples": samples_BxNxHxWxC, "mode_samples": mode_samples_BxMxHxWxC,
                        "true_modes": true_modes_BxKxHxWxC, "label": batch.get("label")}
  return result


def _sampler(method, state, batch: dict[str, np.ndarray], seed: int) -> Callable[[int], np.ndarray]:
  """n -> [B, n, ...] samples of the eval inputs, drawn from PRNGKey(seed)."""
  sample_jit = jax.jit(method.sample, static_argnums=3)

  def draw(n: int) -> np.ndarray:
    samples = np.asarray(jax.device_get(
        sample_jit(state, jnp.asarray(batch["x"]), jax.random.PRNGKey(seed), n)), np.float32)
    expected = (len(batch["x"]), n) + batch["y"].shape[1:]
    if samples.shape != expected:
      raise ValueError(f"method.sample returned {samples.shape}; expected {expected}.")
    return samples
  return draw


def _result_header(workdir: str, config, state, num_inputs: int, num_samples: int, mode_samples: int,
                   seed: int, distance_name: str, distance: perceptual.Distance) -> dict[str, Any]:
  """eval.json's description of what was evaluated (everything but the metrics)."""
  return {
      "workdir": os.path.abspath(workdir), "step": int(jax.device_get(state.step)), "method": config.method,
      "dataset": config.data.name, "builder_config": config.data.builder_config,
      "num_inputs": num_inputs, "num_samples": num_samples, "mode_samples": mode_samples, "seed": seed,
      "distance": distance_name, "distance_description": distance.describe(),
      "fwv_sigmas": list(metrics.FWV_SIGMAS),
      "parameters": parameter_counts(state),
  }


def _task_metrics(workdir, config, method, state, batch, samples_BxNxHxWxC, true_modes_BxKxHxWxC, scalars,
                  distance_name, mode_samples, seed, reality_mode, segment_labels_BxHxW=None) -> dict[str, float]:
  """The metrics only some tasks have: cGML's t = 0 modes, the SR reference row, noise linking, reality."""
  spec = data_registry.get_dataset(config.data.name)
  out = {}
  if true_modes_BxKxHxWxC is not None and "initial_sample" in method.extras:
    out.update(initial_mode_metrics(method, state, batch, true_modes_BxKxHxWxC, spec.mode_tolerance,
                                    mode_samples, seed, segment_labels_BxHxW))
  if metrics.is_super_resolution(batch["x"], batch["y"]):
    out.update(reference_row(scalars, distance_name, batch))
  if "label" in batch:
    out.update(noise_linking_metrics(method, state, batch, spec.class_names, seed))
    if reality_mode == "on" or (reality_mode == "auto" and config.method == "diversity"):
      out.update(reality_metrics_of(workdir, config.data, samples_BxNxHxWxC, batch))
  return out


def _check_arguments(num_samples: int, mode_samples: int, reality_mode: str) -> None:
  if num_samples < 2:
    raise ValueError(f"--num_samples must be >= 2 to measure diversity; got {num_samples}.")
  if mode_samples < 1:
    raise ValueError(f"--mode_samples must be >= 1; got {mode_samples}.")
  if reality_mode not in REALITY_CHOICES:
    raise ValueError(f"reality_mode must be one of {REALITY_CHOICES}; got {reality_mode!r}.")


def _write(workdir: str, result: dict[str, Any]) -> None:
  """eval.json and eval_<step>.json, and the finite metrics as eval/* scalars at the evaluated step in TensorBoard.

  eval.json is the latest evaluation; eval_<step>.json keeps each step's, so
  evaluating an older checkpoint (--step) does not lose the newest's numbers.
  """
  for name in (EVAL_JSON, step_json(result["step"])):
    with open(os.path.join(workdir, name), "w") as f:
      json.dump(result, f, indent=1)
  writer = metric_writers.create_default_writer(workdir, asynchronous=False)
  writer.write_scalars(result["step"], {f"eval/{k}": v for k, v in result["metrics"].items() if np.isfinite(v)})
  writer.flush()
  writer.close()


def summary(result: dict[str, Any], seconds: float) -> str:
  """A few human-readable lines of eval.json."""
  m = result["metrics"]
  d = result["distance"]
  lines = [f"Evaluated {result['method']} on {result['dataset']} at step {result['step']}: "
           f"{result['num_inputs']} inputs x {result['num_samples']} samples, distance {d} "
           f"({seconds:.1f}s).",
           f"  quality    PSNR best/mean {m['psnr_best']:.2f}/{m['psnr_mean']:.2f} dB, "
           f"SSIM best/mean {m['ssim_best']:.3f}/{m['ssim_mean']:.3f}",
           f"  diversity  {d} {m[f'diversity_{d}']:.4g}"
           + (f" ({metrics.PAIRWISE_NUM_PAIRS} random pairs: {m[pairwise_key(d)]:.4g})"
              if pairwise_key(d) in m else "")
           + "; FWV "
           + ", ".join(f"sigma={s:g}: {m[metrics.fwv_key(d, s)]:.3g}" for s in result["fwv_sigmas"])]
  ref = metrics.REFERENCE_UPSAMPLING
  if f"{ref}/psnr" in m:
    lines.append(f"  reference  {ref} upsampling of the same inputs: PSNR {m[f'{ref}/psnr']:.2f} dB, SSIM "
                 f"{m[f'{ref}/ssim']:.3f}; mean sample {-m[f'psnr_gap_to_{ref}']:+.2f} dB against it"
                 + (f"; diversity per dB lost {m['diversity_per_db_gap']:.3g}" if "diversity_per_db_gap" in m
                    else ""))
  if "per_class_variance/overall" in m:
    lines.append(f"  per-class pixel variance, overall {m['per_class_variance/overall']:.4g}"
                 + (f"; clustered ({metrics.NUM_CLUSTERS} clusters, {metrics.CLUSTER_REPEATS} repeats, "
                    f"ICCV'19 Table 1) {m['clustered_variance/overall']:.4g}"
                    if "clustered_variance/overall" in m else ""))
  if "mode_recall" in m:
    k = result["num_modes"]
    per = " per segment, drawn independently" if result.get("modes_per_segment") else ""
    lines.append(f"  modes (K={k}{per}, 1/K={1 / k:.3f}, {result['mode_samples']} samples per input)  recall "
                 f"{m['mode_recall']:.3f}, recall (nearest, no tolerance) {m['mode_recall_nearest']:.3f}, "
                 f"precision {m['mode_precision']:.3f}"
                 + (f"; recall of the rarer half of the modes {m['mode_recall_rare']:.3f}"
                    if "mode_recall_rare" in m else ""))
    if "mode_recall_t0" in m:
      lines.append(f"    at t = 0 (z_0 decoded, no inference steps)  recall {m['mode_recall_t0']:.3f}, "
                   f"recall (nearest) {m['mode_recall_nearest_t0']:.3f}, precision {m['mode_precision_t0']:.3f}")
  if "noise_linking" in m:
    lines.append(f"  noise linking (change inside segment c / outside, n^c swept -1 -> 1, mean over classes) "
                 f"{m['noise_linking']:.3g}; mean change inside {m['noise_linking_inside']:.3g}")
    per_class = [f"{k.split('/', 1)[1]} {v:.3g}" for k, v in m.items() if k.startswith("noise_linking/")]
    if per_class:
      lines.append(f"    per class: {', '.join(per_class)}")
    beyond = [f"{k.split('/', 1)[1]} {v:.3g}" for k, v in m.items() if k.startswith(f"{BEYOND_RIM}/")]
    if beyond:
      lines.append(f"    outside taken beyond a {NOISE_LINKING_RIM_PX:g}-px rim of the segment: {', '.join(beyond)}")
  if "reality/mean_iou" in m:
    lines.append(f"  reality (segmented by a net trained on real images)  pixel accuracy "
                 f"{m['reality/pixel_accuracy']:.3f}, mean IoU {m['reality/mean_iou']:.3f}; real images: "
                 f"{m['reality/real_pixel_accuracy']:.3f}, {m['reality/real_mean_iou']:.3f}")
  for name, why in result.get("skipped", {}).items():
    lines.append(f"  skipped {name}: {why}")
  lines.append(f"  written to {os.path.join(result['workdir'], EVAL_JSON)} (and {step_json(result['step'])}) and "
               f"TensorBoard (eval/*).")
  return "\n".join(lines)


def _define_flags() -> None:
  # Defined only when run as a program, so tests can import this module next to
  # main.py and sample.py, whose flags share names.
  flags.DEFINE_string("workdir", None, "The --workdir of a training run.", required=True)
  flags.DEFINE_integer("num_inputs", 16, "The first this many eval examples.")
  flags.DEFINE_integer("num_samples", 16, "Samples per input.")
  flags.DEFINE_integer("mode_samples", 64, "Samples per input for mode recall / precision (datasets "
                       "with true modes).")
  flags.DEFINE_integer("step", None, "The checkpoint step to evaluate (default: the newest).")
  flags.DEFINE_integer("seed", 0, "Sampling rng seed.")
  flags.DEFINE_string("weights_dir", None, "Where to look for the LPIPS weights first.")
  flags.DEFINE_enum("reality", "auto", REALITY_CHOICES, "Reality metrics of layout datasets (a segmentation "
                    "net trained on real images, cached in the workdir): auto = for the diversity method.")
  plugins.define_import_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  plugins.import_modules(f[plugins.IMPORT_FLAG].value)
  try:
    evaluate(f.workdir, num_inputs=f.num_inputs, num_samples=f.num_samples, step=f.step, seed=f.seed,
             weights_dir=f.weights_dir, mode_samples=f.mode_samples, reality_mode=f.reality)
  except workdir_lib.WorkdirError as e:  # Not a run, no checkpoint restores: one line.
    plugins.fail(str(e))


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=plugins.parse_cli_flags)
