"""The `mode_sets` evaluator: recall and precision over each input's own modes, spurious variation.

Exact values on hand-made sample sets (metrics.mode_set_metrics, metrics.spurious_variation), the
reference samplers on real toy_scenes_conditional layouts, and evaluate end to end on a tiny run.
"""

import json
import os
import types

import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import evaluate as evaluate_lib
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry
from multimodal_jax.data import toy_scenes as ts
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base as evaluator_base
from test_train import load_config

TOLERANCE = registry.get_dataset("toy_scenes_conditional").mode_tolerance


def _grey(rows):
  """[len(rows), 1, W, 1] images from rows of W grey values."""
  return np.asarray(rows, np.float32)[:, None, :, None]


# Two inputs of 1 x 4 grey pixels. A: one mode, 0.5 everywhere, classes [0, 0, 1, 1].
# B: classes [0, 0, 1, 2]; class 0 fixed at 0.2, class 2 fixed at 0.6, class 1 free: 0.4 or 0.8 (K = 2).
LABELS = np.array([[[0, 0, 1, 1]], [[0, 0, 1, 2]]])
MODE_SETS = [_grey([[0.5, 0.5, 0.5, 0.5]]), _grey([[0.2, 0.2, 0.4, 0.6], [0.2, 0.2, 0.8, 0.6]])]


def test_mode_set_metrics_and_spurious_variation_by_hand():
  samples = np.stack([
      _grey([[0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5],
             [0.5, 0.5, 0.5, 0.58],    # class 1 off by (0 + 0.08) / 2 = 0.04 < 0.05: precise
             [0.7, 0.5, 0.5, 0.5]]),   # class 0 off by 0.1: not
      _grey([[0.2, 0.2, 0.4, 0.6],     # mode 0
             [0.28, 0.2, 0.8, 0.6],    # mode 1 (class 0 off by 0.04)
             [0.2, 0.2, 0.6, 0.6],     # class 1 halfway: 0.2 from either mode
             [0.2, 0.2, 0.4, 0.7]])])  # class 2 off by 0.1
  matches = [metrics.mode_set_matches(s, m, l, 0.05) for s, m, l in zip(samples, MODE_SETS, LABELS)]
  np.testing.assert_array_equal(matches[0], [0, 0, 0, -1])
  np.testing.assert_array_equal(matches[1], [0, 1, -1, -1])
  assert metrics.mode_set_metrics(samples, MODE_SETS, LABELS, 0.05) == pytest.approx({
      "mode_set_recall": 1.0, "mode_set_precision": 5 / 8,
      "mode_set_recall/K1": 1.0, "mode_set_precision/K1": 3 / 4,
      "mode_set_recall/K2": 1.0, "mode_set_precision/K2": 2 / 4,
      "mode_set_recall/multimodal": 1.0, "mode_set_precision/multimodal": 2 / 4})
  # Fixed pixels: all 4 of A, pixels 0, 1, 3 of B. Standard deviations (divisor N = 4):
  #   A0 (.5 .5 .5 .7) sqrt(.0075); A3 (.5 .5 .5 .58) and B0 (.2 .28 .2 .2) sqrt(.0012); B3 (.6 .6 .6 .7)
  #   sqrt(.001875); A1, A2, B1 0. Free: B2 (.4 .8 .6 .4) sqrt(.0275).
  spurious = (np.sqrt(0.0075) + 2 * np.sqrt(0.0012) + np.sqrt(0.001875)) / 7
  assert metrics.spurious_variation(samples, MODE_SETS) == pytest.approx(
      {"spurious_variation": spurious, "free_variation": np.sqrt(0.0275)}, rel=1e-6)


def test_a_faithful_sampler_scores_no_spurious_variation_and_full_recall():
  faithful = np.stack([np.repeat(MODE_SETS[0], 4, axis=0), MODE_SETS[1][[0, 1, 0, 1]]])
  out = metrics.mode_set_metrics(faithful, MODE_SETS, LABELS, 0.05)
  assert out["mode_set_recall"] == 1.0 and out["mode_set_precision"] == 1.0
  assert metrics.spurious_variation(faithful, MODE_SETS) == pytest.approx(
      {"spurious_variation": 0.0, "free_variation": 0.2}, abs=1e-7)  # 0.4 / 0.8 as float32
  # One mode per input: no free pixel, no multimodal group.
  single = metrics.mode_set_metrics(faithful[:1], MODE_SETS[:1], LABELS[:1], 0.05)
  assert set(single) == {"mode_set_recall", "mode_set_precision", "mode_set_recall/K1", "mode_set_precision/K1"}
  assert metrics.spurious_variation(faithful[:1], MODE_SETS[:1]) == {"spurious_variation": 0.0}
  with pytest.raises(ValueError, match=r"mode sets must be 2 arrays \[K_j >= 1, H, W, C\]"):
    metrics.mode_set_metrics(faithful, MODE_SETS[:1], LABELS, 0.05)
  with pytest.raises(ValueError, match=r"labels must be \[B, H, W\]"):
    metrics.mode_set_metrics(faithful, MODE_SETS, LABELS[:, :, :2], 0.05)


def _conditional_layouts(n=10):
  """Test layouts of toy_scenes_conditional at 32x64 and their own modes (1 to 16 of them)."""
  labels = np.stack([ts.make_conditional_example(0, 1, i, 32, 64)["label"] for i in range(n)])
  return labels, [ts.render_conditional_modes(label) for label in labels]


def test_reference_samplers_on_conditional_scenes():
  labels, mode_sets = _conditional_layouts()
  sizes = [len(m) for m in mode_sets]
  assert 1 in sizes and max(sizes) >= 8
  n = 16
  # The modes themselves (each drawn once at least): recall and precision 1, no spurious variation.
  faithful = np.stack([m[np.arange(n) % len(m)] for m in mode_sets])
  out = metrics.mode_set_metrics(faithful, mode_sets, labels, TOLERANCE)
  assert out["mode_set_recall"] == 1.0 and out["mode_set_precision"] == 1.0
  variation = metrics.spurious_variation(faithful, mode_sets)
  assert variation["spurious_variation"] == 0.0 and variation["free_variation"] > 0.05
  # L1 regression's tendency: every sample the per-pixel mean of the modes. Exactly the mode where there is
  # one; on a free class the mean of its two colours, >= MIN_MODE_COLOUR_DISTANCE from either.
  mean = np.stack([np.repeat(m.mean(axis=0, keepdims=True), n, axis=0) for m in mode_sets])
  out = metrics.mode_set_metrics(mean, mode_sets, labels, TOLERANCE)
  assert out["mode_set_recall/K1"] == 1.0 and out["mode_set_precision/K1"] == 1.0
  assert out["mode_set_recall/multimodal"] == 0.0 and out["mode_set_precision/multimodal"] == 0.0
  assert metrics.spurious_variation(mean, mode_sets) == {"spurious_variation": 0.0, "free_variation": 0.0}
  # The faithful sampler with the fixed sky 0.1 brighter in every other sample: std 0.05 on the sky's
  # pixels and channels, 0 on the other fixed ones; those samples are off the modes by 0.1 on the sky.
  sky = labels == ts.SKY  # fixed sky; [B, H, W]
  assert sky.any()
  varied = faithful.copy()
  varied[:, 1::2] += 0.1 * sky[:, None, :, :, None]
  fixed = np.stack([np.ptp(m, axis=0).max(-1) == 0 for m in mode_sets])
  assert metrics.spurious_variation(varied, mode_sets)["spurious_variation"] == pytest.approx(
      0.05 * sky.sum() / fixed.sum(), rel=1e-5)
  out = metrics.mode_set_metrics(varied, mode_sets, labels, TOLERANCE)
  with_sky = sky.any(axis=(1, 2))
  assert out["mode_set_precision"] == pytest.approx(1 - 0.5 * with_sky.mean())


def _context(samples, batch, mode_sets, tolerance=0.05):
  """An evaluation context over hand-made samples and mode sets (no trained run, a fake dataset spec)."""
  ctx = evaluators.Context(config=None, method=types.SimpleNamespace(extras={}), state=None, workdir="",
                           batch=batch, samples=samples, mode_samples=samples.shape[1])
  spec = types.SimpleNamespace(mode_tolerance=tolerance, class_names=None)
  ctx.dataset_spec = lambda: spec
  ctx.memo("true_modes", lambda: None)
  ctx.memo("mode_sets", lambda: mode_sets)
  return ctx


def test_the_evaluator_reports_the_metrics_its_header_and_summary():
  faithful = np.stack([np.repeat(MODE_SETS[0], 4, axis=0), MODE_SETS[1][[0, 1, 0, 1]]])
  batch = {"x": np.eye(3, dtype=np.float32)[LABELS], "y": faithful[:, 0], "label": LABELS}
  ctx = _context(faithful, batch, MODE_SETS)
  out = dict(evaluators.run(["modes", "mode_sets"], ctx))
  assert "mode_recall" not in out  # whole-image modes: not for these data
  assert out["mode_set_recall/multimodal"] == 1.0 and out["spurious_variation"] == 0.0
  assert out["free_variation"] == pytest.approx(0.2)
  assert ctx.info["mode_set_sizes"] == {"1": 1, "2": 1} and ctx.skipped == {}
  header = {"mode_samples": 4, **ctx.info}
  text = "\n".join(evaluators.summary_lines(["mode_sets"], out, header))
  assert "inputs by number of modes: 1 x 1, 1 x 2; 4 samples per input)  recall 1.000, precision 1.000; " in text
  assert "K=2 recall 1.000 precision 1.000" in text and "spurious (where the input fixes" in text
  json.dumps(ctx.info)  # eval.json's header
  # Inputs of one mode only: the multimodal group and the free variation are skipped with a reason.
  single = _context(faithful[:1], {k: v[:1] for k, v in batch.items()}, MODE_SETS[:1])
  out = dict(evaluators.run(["mode_sets"], single))
  assert "mode_set_recall/multimodal" not in out and "free_variation" not in out
  assert single.skipped == {"mode_set_recall/multimodal": "no eval input has more than one mode",
                            "free_variation": "no eval input has a free pixel"}
  # Datasets without per-input mode sets: the evaluator does not apply.
  assert dict(evaluators.run(["mode_sets"], _context(faithful, batch, None))) == {}
  assert "mode_sets" in config_lib.DEFAULT_EVALS
  assert evaluators.summary_lines(["mode_sets"], {}, {}) == []


def _conditional_regression_config(data_dir):
  config, _ = load_config(str(REPO / "configs" / "regression.py"), "conditional,runlocal")
  config.data.data_dir = data_dir
  config.data.batch_size = 4
  config.train.sample_every = 0
  return config


def test_batches_carry_mode_sets_and_no_whole_image_modes(data_dir):
  config = _conditional_regression_config(data_dir)
  batch = pipeline.load_eval_examples(config, 16)
  assert batch["x"].shape == (16, 32, 64, ts.NUM_CONDITIONAL_CLASSES)
  assert evaluator_base.true_modes_of_batch(config.data, batch) is None
  mode_sets = evaluator_base.mode_sets_of_batch(config.data, batch)
  assert [len(m) for m in mode_sets] == [2**len(ts.free_classes(label)) for label in batch["label"]]
  assert len({len(m) for m in mode_sets}) > 1
  # The real test images are precise, each matching its recorded mode.
  for y, modes, label, mode in zip(batch["y"], mode_sets, batch["label"], batch["mode"]):
    assert metrics.mode_set_matches(y[None], modes, label, TOLERANCE) == [mode]
  # The one-mode toy_scenes: whole-image modes, no mode sets.
  config.data.name, config.data.builder_config = "toy_scenes", "tiny"
  plain = pipeline.load_eval_examples(config, 2)
  assert evaluator_base.mode_sets_of_batch(config.data, plain) is None
  assert evaluator_base.true_modes_of_batch(config.data, plain).shape[1] == ts.DEFAULT_NUM_MODES


def test_evaluate_a_tiny_conditional_regression_run(data_dir, tmp_path):
  """regression:conditional,runlocal: every default evaluator runs on the 12-class layouts; `mode_sets` reports."""
  workdir = str(tmp_path)
  train.train_and_evaluate(_conditional_regression_config(data_dir), workdir)
  result = evaluate_lib.evaluate(workdir, num_inputs=8, num_samples=3, mode_samples=4,
                                 weights_dir=str(tmp_path / "no_weights"))
  m = result["metrics"]
  assert "mode_recall" not in m and "num_modes" not in result
  assert sum(result["mode_set_sizes"].values()) == 8
  for k in result["mode_set_sizes"]:
    assert 0.0 <= m[f"mode_set_recall/K{k}"] <= 1.0 / int(k)  # one image per input
  # Its samples are one image: no variation anywhere.
  assert m["spurious_variation"] == 0.0 and m["free_variation"] == 0.0
  assert "per_class_variance/fixed_sky" in m
  with open(os.path.join(workdir, "eval.json")) as f:
    assert json.load(f)["mode_set_sizes"] == result["mode_set_sizes"]
