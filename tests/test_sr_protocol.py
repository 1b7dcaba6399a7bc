"""The super-resolution protocol (evaluation/evaluators/sr_protocol.py): exact values on hand-made samples."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_jax import config_lib
from multimodal_jax.data import local_photos_sr
from multimodal_jax.data import pipeline
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation.evaluators import sr_protocol
from multimodal_jax.losses import perceptual
from test_train import load_config
from conftest import REPO


def test_diversity_score_is_zero_for_identical_samples_and_hand_computed_for_two_halves():
  rng = np.random.default_rng(0)
  one = rng.uniform(0.1, 0.5, size=(1, 1, 4, 6))
  assert sr_protocol.diversity_score(np.repeat(one, 5, axis=1)) == 0.0
  # Sample 0: 0.1 on the left half, 0.3 on the right (mean 0.2); sample 1: 0.5 left, 0.1 right (mean 0.3).
  maps = np.zeros((1, 2, 2, 4))
  maps[0, 0, :, :2], maps[0, 0, :, 2:] = 0.1, 0.3
  maps[0, 1, :, :2], maps[0, 1, :, 2:] = 0.5, 0.1
  # Global best 0.2 (sample 0); local best: 0.1 everywhere; (0.2 - 0.1) / 0.2 x 100.
  assert sr_protocol.diversity_score(maps) == pytest.approx(50.0)
  # The average over inputs: a second input with identical samples scores 0.
  both = np.concatenate([maps, np.repeat(maps[:, :1], 2, axis=1)])
  assert sr_protocol.diversity_score(both) == pytest.approx(25.0)


def _bilinear_half_pixel(e_hxw: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
  """PyTorch's bilinear upsampling with align_corners=False, written out in numpy."""

  def coords(n_in, n_out):
    src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
    lo = np.minimum(np.floor(src).astype(int), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, src - lo

  y0, y1, fy = coords(e_hxw.shape[0], out_h)
  x0, x1, fx = coords(e_hxw.shape[1], out_w)
  top = e_hxw[y0][:, x0] * (1 - fx) + e_hxw[y0][:, x1] * fx
  bottom = e_hxw[y1][:, x0] * (1 - fx) + e_hxw[y1][:, x1] * fx
  return top * (1 - fy[:, None]) + bottom * fy[:, None]


def test_spatial_map_upsamples_each_term_as_pytorch_and_sums_them():
  rng = np.random.default_rng(1)
  a, b = (rng.uniform(size=(2, 16, 24, 3)).astype(np.float32) for _ in range(2))
  pixel = perceptual.make_distance(config_lib.default_distance_config("pixel"))
  np.testing.assert_allclose(pixel.spatial_map(a, b), np.mean(np.abs(a - b), axis=-1), rtol=1e-6)
  # A feature distance on random VGG-16 weights: each term by hand, upsampled by the numpy bilinear above.
  from multimodal_jax.models import vgg as vgg_lib  # pylint: disable=g-import-not-at-top
  params = vgg_lib.VGG(arch="vgg16").init(jax.random.PRNGKey(0), jnp.zeros((1, 16, 24, 3)),
                                           taps=("relu1_2", "relu2_2"))["params"]
  feature = perceptual.Distance(name="vgg16", layers=("relu1_2", "relu2_2"), layer_weights=(0.5, 2.0),
                                trunk="vgg16", input_norm="torchvision", params=params)
  fa, fb = feature.features(a), feature.features(b)
  expected = sum(w * np.stack([_bilinear_half_pixel(e, 16, 24) for e in np.mean(np.abs(fa[t] - fb[t]), axis=-1)])
                 for w, t in ((0.5, "relu1_2"), (2.0, "relu2_2")))
  np.testing.assert_allclose(feature.spatial_map(a, b), expected, rtol=1e-5, atol=1e-6)
  assert float(jnp.max(jnp.abs(feature.spatial_map(a, a)))) == 0.0


def test_lr_psnr_and_y_channel_by_hand():
  assert sr_protocol.psnr_255(np.zeros((4, 4, 3)), np.full((4, 4, 3), 5.0)) == pytest.approx(
      10 * np.log10(255 ** 2 / 25))
  assert sr_protocol.psnr_255(np.ones((2, 2, 3)), np.ones((2, 2, 3))) == sr_protocol.MAX_PSNR
  # BT.601 luma: black 16, white 235.
  np.testing.assert_allclose(sr_protocol.luma(np.array([[0, 0, 0], [255, 255, 255]], np.uint8))[:, 0], [16, 235])
  # Grey images whose luma differs by 219 / 255 * 10 inside the cropped border: a known PSNR.
  y = np.full((1, 12, 12, 3), 100, np.uint8)
  s = y.copy()[:, None]
  s[..., 2:-2, 2:-2, :] += 10  # the border of 2 px is cropped, so only the changed pixels count
  q = sr_protocol.y_channel_quality(s, y, border=2)
  assert q["psnr_y_mean"] == pytest.approx(10 * np.log10(255 ** 2 / (10 * 219 / 255) ** 2), rel=1e-5)
  assert q["psnr_y_best"] == q["psnr_y_mean"] and q["ssim_y_mean"] < 1.0


def _sr_context(data_dir, samples_fn, n=3):
  config, _ = load_config(str(REPO / "configs" / "srim.py"), "runlocal")
  config.data.data_dir = data_dir
  batch = pipeline.load_eval_examples(config, 2)
  samples = samples_fn(batch)
  return evaluators.Context(config, types.SimpleNamespace(extras={}), None, "", batch,
                            samples=samples if samples.ndim == 5 else np.repeat(samples[:, None], n, axis=1))


def test_the_datasets_degradation_makes_its_inputs_and_a_deterministic_method_scores_zero(data_dir,
                                                                                          packaged_weights):
  ctx = _sr_context(data_dir, lambda batch: batch["y"])
  # The ground truth through the dataset's own degradation is its input (LR-PSNR >= 45 dB: the
  # downscaler matches how the inputs were made).
  degrade = ctx.dataset_spec().degrade
  for x, y in zip(ctx.batch["x"], ctx.batch["y"]):
    assert sr_protocol.psnr_255(degrade(sr_protocol.quantize(y), 8), sr_protocol.quantize(x)) >= 45.0
  assert degrade is local_photos_sr.bicubic_downsample
  out = evaluators.run(["sr_protocol"], ctx)
  # Identical samples (a deterministic method, here the ground truth): diversity score 0, LR-PSNR of
  # the truth itself; bicubic upsampling is far less consistent with its input.
  assert out["sr_diversity_score"] == 0.0
  assert out["lr_psnr_mean"] == out["lr_psnr_worst"] == sr_protocol.MAX_PSNR
  assert out["bicubic/lr_psnr"] < 45.0 and out["psnr_y_mean"] > 100.0 and out["ssim_y_mean"] == pytest.approx(1.0)
  assert 0.0 < out["bicubic/lpips"] < 1.0 and out["bicubic/psnr_y"] < 40.0


def test_samples_that_differ_by_region_score_a_positive_diversity(data_dir, packaged_weights):
  def halves(batch):  # sample 0: truth on the left half, grey on the right; sample 1: the reverse
    y = batch["y"]
    grey = np.full_like(y, 0.5)
    left = np.concatenate([y[:, :, :32], grey[:, :, 32:]], axis=2)
    right = np.concatenate([grey[:, :, :32], y[:, :, 32:]], axis=2)
    return np.stack([left, right], axis=1)

  out = evaluators.run(["sr_protocol"], _sr_context(data_dir, halves))
  assert out["sr_diversity_score"] > 20.0
  assert out["lr_psnr_worst"] <= out["lr_psnr_mean"] < 45.0
