"""The reality metric (diversity_loss_yang_liu_cai §IV-C): exact scores, the segmenter cache, a sanity property."""

import json
import os

import jax
import numpy as np
import pytest

from multimodal_jax import config_lib
from multimodal_jax.evaluation import reality

# The tests' segmenter: a few steps on the 64 tiny toy_scenes images (~10 s with compilation).
TINY_STEPS = 150


def _tiny_data_config(data_dir, name="toy_scenes"):
  data = config_lib.base_config().data
  data.name = name
  data.data_dir = data_dir
  data.builder_config = "tiny"
  return data


# ---------------------------------------------------------------- exact scores


def test_scores_from_confusion_equal_hand_computation():
  # Rows 0-1 are class 0, rows 2-3 class 1; two class-1 pixels are predicted 0:
  #   class 0: TP 8, FP 2, FN 0 -> IoU 8/10;  class 1: TP 6, FP 0, FN 2 -> IoU 6/8.
  labels = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
  predictions = np.array([[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 1, 1], [1, 1, 1, 1]])
  confusion = reality.confusion_matrix(labels, predictions, 2)
  np.testing.assert_array_equal(confusion, [[8, 0], [2, 6]])
  accuracy, mean_iou, iou_K = reality.scores_from_confusion(confusion)
  assert accuracy == 14 / 16
  assert mean_iou == pytest.approx((8 / 10 + 6 / 8) / 2, abs=1e-12)
  np.testing.assert_allclose(iou_K, [0.8, 0.75])

  # A class absent from the labels is left out of the mean, though predicted: its
  # one pixel is an FN of class 1 (IoU 5/8), and class 0 is unchanged (8/10).
  predictions[3, 3] = 2
  accuracy, mean_iou, iou_K = reality.scores_from_confusion(reality.confusion_matrix(labels, predictions, 3))
  assert accuracy == 13 / 16
  assert mean_iou == pytest.approx((8 / 10 + 5 / 8) / 2, abs=1e-12)
  assert np.isnan(iou_K[2])
  with pytest.raises(ValueError, match="class ids in"):
    reality.confusion_matrix(labels + 2, predictions, 3)


def test_reality_metrics_pool_the_confusion_over_samples_and_inputs(monkeypatch):
  # A fake segmenter with fixed outputs: class = the red channel (0 or 1).
  monkeypatch.setattr(reality, "segment",
                      lambda params, images, num_classes: np.asarray(images[..., 0], np.int32))
  labels_BxHxW = np.array([[[0, 0], [1, 1]]])
  # Sample 0 is exact; sample 1 predicts class 0 everywhere.
  predicted_BxNxHxW = np.array([[[[0, 0], [1, 1]], [[0, 0], [0, 0]]]])
  images = np.repeat(predicted_BxNxHxW[..., None], 3, axis=-1).astype(np.float32)
  scores = reality.reality_metrics(None, images, labels_BxHxW, 2)
  # Pooled over both samples: class 0 TP 4, FP 2 -> 4/6; class 1 TP 2, FN 2 -> 2/4.
  # (The mean of per-sample mIoUs would be (1 + 0.25) / 2 = 0.625.)
  assert scores == pytest.approx({"reality/pixel_accuracy": 6 / 8,
                                  "reality/mean_iou": (4 / 6 + 2 / 4) / 2}, abs=1e-12)
  real = reality.real_reference(None, images[:, 0], labels_BxHxW, 2)
  assert real == {"reality/real_pixel_accuracy": 1.0, "reality/real_mean_iou": 1.0}


def test_segmenter_shapes():
  # Shapes only (eval_shape): nothing is compiled. H and W need not be multiples of 4.
  model = reality.Segmenter(num_classes=5)
  images = jax.ShapeDtypeStruct((2, 14, 22, 3), np.float32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), images)["params"]
  assert jax.eval_shape(model.apply, {"params": params}, images).shape == (2, 14, 22, 5)
  assert 10_000 < sum(a.size for a in jax.tree.leaves(params)) < 100_000


def test_a_dataset_without_classes_is_refused(data_dir):
  with pytest.raises(ValueError, match="class_names"):
    reality.num_classes_of(_tiny_data_config(data_dir, "toy_scenes_colorization"))


# ---------------------------------------------------------------- training and the cache


@pytest.fixture(scope="module")
def cached_segmenter(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("reality"))
  params, info = reality.load_or_train_segmenter(workdir, _tiny_data_config(data_dir), num_steps=TINY_STEPS,
                                                 num_heldout=16)
  return workdir, params, info


def test_cache_round_trip(cached_segmenter, data_dir, monkeypatch):
  workdir, params, info = cached_segmenter
  with open(os.path.join(workdir, reality.SEGMENTER_INFO_FILE)) as f:
    assert json.load(f) == info
  assert info["dataset"] == "toy_scenes" and info["builder_config"] == "tiny"
  assert info["num_steps"] == info["steps"] == TINY_STEPS and info["num_heldout"] == 16
  assert 0 <= info["heldout_pixel_accuracy"] <= 1 and 0 <= info["heldout_mean_iou"] <= 1

  def no_training(*args, **kwargs):
    raise AssertionError("a matching cache must not retrain")

  monkeypatch.setattr(reality, "train_segmenter", no_training)
  loaded, loaded_info = reality.load_or_train_segmenter(workdir, _tiny_data_config(data_dir),
                                                        num_steps=TINY_STEPS, num_heldout=16)
  assert loaded_info == info
  jax.tree.map(np.testing.assert_array_equal, loaded, params)

  # Another budget does not match the sidecar: it retrains (here: a stand-in), and rewrites it.
  retrained = []

  def stand_in(data_config, num_steps, *args, **kwargs):
    retrained.append(num_steps)
    return params, {"train_accuracy": 0.0, "steps": num_steps, "seconds": 0.0}

  monkeypatch.setattr(reality, "train_segmenter", stand_in)
  _, new_info = reality.load_or_train_segmenter(workdir, _tiny_data_config(data_dir),
                                                num_steps=TINY_STEPS + 1, num_heldout=16)
  assert retrained == [TINY_STEPS + 1] and new_info["num_steps"] == TINY_STEPS + 1
  with open(os.path.join(workdir, reality.SEGMENTER_INFO_FILE)) as f:
    assert json.load(f)["num_steps"] == TINY_STEPS + 1


def test_real_images_score_far_better_than_noise(cached_segmenter, data_dir):
  _, params, info = cached_segmenter
  from multimodal_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  config = reality._config_of(_tiny_data_config(data_dir))  # pylint: disable=protected-access
  batch = pipeline.load_eval_examples(config, 16)
  real = reality.real_reference(params, batch["y"], batch["label"])  # K read from the params
  assert real["reality/real_pixel_accuracy"] == pytest.approx(info["heldout_pixel_accuracy"])
  noise = np.random.default_rng(0).uniform(size=(16, 2) + batch["y"].shape[1:]).astype(np.float32)
  generated = reality.reality_metrics(params, noise, batch["label"], 6)
  assert real["reality/real_pixel_accuracy"] > generated["reality/pixel_accuracy"] + 0.3
  assert real["reality/real_mean_iou"] > generated["reality/mean_iou"] + 0.3
