"""Super-resolution against its trivial baseline: the global skip, the bicubic reference row,
the bicubic grid column, the sample grid's std map, training augmentation and the periodic
evaluation (issue #16)."""

import dataclasses
import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

from conftest import REPO
from multimodal_jax import evaluate as evaluate_lib
from multimodal_jax import inference
from multimodal_jax import sample as sample_lib
from multimodal_jax import train
from multimodal_jax.data import local_photos_sr
from multimodal_jax.data import pipeline
from multimodal_jax.evaluation import grids
from multimodal_jax.evaluation import metrics
from multimodal_jax.models import conv_generator
from multimodal_jax.models import registry
from multimodal_jax.models import rrdb
from test_train import load_config


def _load_config(name, arg):
  return load_config(str(REPO / "configs" / f"{name}.py"), arg)[0]


def _sr_regression_config(data_dir):
  config = _load_config("regression", "runlocal,data=local_photos_sr")
  config.data.data_dir, config.data.batch_size, config.train.sample_every = data_dir, 4, 0
  return config


@pytest.fixture(scope="module")
def sr_workdir(tmp_path_factory, data_dir):
  workdir = str(tmp_path_factory.mktemp("sr_regression"))
  config = _sr_regression_config(data_dir)
  with config.unlocked():
    config.train.eval_every = 2
    config.train.eval_inputs = 3
    config.train.eval_samples = 2
  train.train_and_evaluate(config, workdir)
  return workdir


# ---------------------------------------------------------------- the global skip


_RRDB = lambda skip: rrdb.RRDBNet(features=4, num_blocks=1, growth=4, upsample_factor=4, global_skip=skip)
_CONV = lambda skip: conv_generator.ConvGenerator(out_channels=3, features=8, num_blocks=1, upsample_factor=4,
                                                  global_skip=skip)


# The RRDB compiles slowly on CPU: one skip kind for it, both for the small generator.
@pytest.mark.parametrize("make,skip", [(_RRDB, "bicubic"), (_CONV, "bicubic"), (_CONV, "bilinear")],
                         ids=["rrdb-bicubic", "conv_generator-bicubic", "conv_generator-bilinear"])
def test_an_untrained_global_skip_model_is_exactly_the_upsampled_input(make, skip):
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 3))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 2))
  def init_and_apply(model):  # One compiled function: eager RRDB ops compile one by one, slowly.
    return jax.jit(lambda x, z: model.apply(model.init(jax.random.PRNGKey(2), x, z), x, z))(x, z)

  y = init_and_apply(make(skip))
  expected = registry.upsample_reference(x, 4, skip)
  np.testing.assert_allclose(np.asarray(y), np.asarray(expected), atol=1e-6)
  # The paper's network (no skip) starts elsewhere: ~0.5 everywhere.
  y_plain = init_and_apply(make("none"))
  assert float(jnp.abs(y_plain - expected).mean()) > 0.05


def test_global_skip_auto_is_bicubic_for_rgb_super_resolution_only():
  sr = registry.ModelIO(x_shape=(8, 8, 3), y_shape=(64, 64, 3))
  assert sr.resolve_global_skip("auto") == "bicubic"
  assert sr.resolve_global_skip("none") == "none"
  layout = registry.ModelIO(x_shape=(32, 32, 12), y_shape=(32, 32, 3))
  assert layout.resolve_global_skip("auto") == "none"
  grey_same_size = registry.ModelIO(x_shape=(32, 32, 1), y_shape=(32, 32, 3))
  assert grey_same_size.resolve_global_skip("auto") == "none"
  with pytest.raises(ValueError, match="valid"):
    sr.resolve_global_skip("lanczos")


def test_the_paper_sr_variants_keep_the_paper_network():
  for arg in ("imagenet", "div2k"):
    assert _load_config("srim", arg).model.global_skip == "none"
  assert _load_config("srim", "").model.global_skip == "auto"


def test_the_sr_regression_default_keeps_its_own_network_settings():
  """The general model lines once came after the SR branch and silently reset 8 blocks to 2."""
  config = _load_config("regression", "data=local_photos_sr")
  assert config.model.num_blocks == 8 and config.data.options.augment
  assert config.optimizer.schedule == "cosine" and config.train.eval_every == 250
  assert _load_config("regression", "").model.num_blocks == 2


def test_the_srim_regression_baselines_share_srims_network_budget_and_distance():
  """issue 37: the regressions of the SR comparison differ from SRIM's default in the loss only."""
  srim, baseline = _load_config("srim", ""), _load_config("regression", "srim_net")
  for key in ("name", "features", "num_blocks", "growth", "dense_conv_style", "global_skip", "consistency"):
    assert baseline.model[key] == srim.model[key], key
  assert baseline.data.batch_size == srim.imle.minibatch_size and baseline.train.num_steps == srim.train.num_steps
  assert baseline.data.name == srim.data.name and baseline.data.options.augment
  assert baseline.distance.name == "pixel"
  vgg16 = _load_config("regression", "srim_net,vgg16").distance
  assert vgg16.to_dict() == _load_config("srim", "vgg16").distance.to_dict()
  assert baseline.model.consistency == "bicubic"
  assert _load_config("regression", "srim_net,no_cem").model.consistency == "none"
  with pytest.raises(ValueError, match="srim_net"):
    _load_config("regression", "vgg16")


# ---------------------------------------------------------------- the reference row


def test_reference_metrics_of_a_constant_image_by_hand():
  # Bicubic of a constant is that constant: 0.5 against a truth of 0.6 -> MSE 0.01 -> 20 dB.
  # SSIM of two constants = (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = 0.01^2:
  # (0.6 + 1e-4) / (0.61 + 1e-4) = 0.98360924 (dm-pix's float32 variances of a constant are
  # ~1e-8, not 0, which moves its structure term by ~1e-4).
  x = np.full((2, 4, 4, 3), 0.5, np.float32)
  y = np.full((2, 32, 32, 3), 0.6, np.float32)
  assert metrics.is_super_resolution(x, y)
  assert not metrics.is_super_resolution(y, y)
  out = metrics.reference_upsampling_metrics(x, y)
  assert out["bicubic/psnr"] == pytest.approx(20.0, abs=1e-4)
  assert out["bicubic/ssim"] == pytest.approx(0.98360924, abs=2e-4)


def test_reference_bicubic_agrees_with_pil_on_a_smooth_image():
  # An independent bicubic (PIL's, Keys a = -0.5) on a smooth image (~32 dB, where PIL's 8-bit
  # intermediate rounding is negligible): the PSNRs agree closely.
  yy, xx = np.mgrid[0:64, 0:64] / 63.0
  hr = np.stack([0.5 + 0.4 * np.sin(9 * xx + 4 * yy), 0.5 + 0.3 * np.cos(9 * yy), 0.3 + 0.4 * xx * yy], -1)
  hr_u8 = np.round(hr * 255).astype(np.uint8)
  lr_u8 = local_photos_sr.bicubic_downsample(hr_u8, 8)
  pil_up = np.asarray(Image.fromarray(lr_u8).resize((64, 64), Image.BICUBIC), np.float32) / 255
  truth = hr_u8.astype(np.float32) / 255
  pil_psnr = -10 * np.log10(np.mean((pil_up - truth) ** 2))
  ours = metrics.reference_upsampling_metrics(lr_u8[None].astype(np.float32) / 255, truth[None])
  assert ours["bicubic/psnr"] == pytest.approx(pil_psnr, abs=0.05)


def test_evaluate_reports_the_bicubic_row_on_an_sr_workdir(sr_workdir, data_dir, capsys):
  result = evaluate_lib.evaluate(sr_workdir, num_inputs=3, num_samples=2)
  m = result["metrics"]
  # The value, computed here with numpy from the same inputs: mean over inputs of the PSNR.
  batch = pipeline.load_eval_examples(_sr_regression_config(data_dir), 3)
  ref = np.asarray(registry.upsample_reference(batch["x"], 8))
  mse_B = np.mean((ref - batch["y"]) ** 2, axis=(1, 2, 3))
  assert m["bicubic/psnr"] == pytest.approx(float(np.mean(-10 * np.log10(mse_B))), abs=1e-3)
  assert m["psnr_gap_to_bicubic"] == pytest.approx(m["bicubic/psnr"] - m["psnr_mean"], abs=1e-6)
  assert ("diversity_per_db_gap" in m) == (m["psnr_gap_to_bicubic"] > 0)
  assert "reference  bicubic upsampling of the same inputs" in capsys.readouterr().out


def test_a_layout_workdir_has_no_bicubic_row():
  x = np.zeros((2, 8, 8, 12), np.float32)
  assert not metrics.is_super_resolution(x, np.zeros((2, 8, 8, 3), np.float32))


def test_sr_sample_grid_shows_the_bicubic_column(sr_workdir, data_dir, tmp_path):
  grid = sample_lib.sample_to_png(sr_workdir, str(tmp_path / "g.png"), num_samples=2, num_inputs=2, labels=False,
                                  std_map=False)
  batch = pipeline.load_eval_examples(_sr_regression_config(data_dir), 2)
  ref = np.asarray(registry.upsample_reference(batch["x"], 8))
  pad, size = 2, 64
  # Row pair i, column 1 (after the input): the bicubic upsampling of input i.
  for i in range(2):
    top, left = pad + 2 * i * (size + pad), pad + 1 * (size + pad)
    np.testing.assert_allclose(grid[top:top + size, left:left + size], ref[i], atol=1e-6)
  assert grid.shape[1] == 5 * (size + pad) + pad  # input | bicubic | 2 samples | truth: no std column


def test_difference_grid_reference_column_moves_the_samples_right():
  inputs = np.zeros((1, 2, 2, 3), np.float32)
  rows = np.stack([np.full((2, 2, 3), 0.25), np.full((2, 2, 3), 0.75)])[None].astype(np.float32)
  reference = np.full((1, 2, 2, 3), 0.5, np.float32)
  grid = grids.difference_grid(inputs, rows, pad=1, reference_SxHxWx3=reference)
  assert grid.shape == (2 * 3 + 1, 4 * 3 + 1, 3)
  assert grid[1, 4, 0] == 0.5 and grid[1, 7, 0] == 0.25 and grid[1, 10, 0] == 0.75
  assert grid[4, 10, 0] == 0.5  # |0.75 - 0.25| under sample 2
  assert grid[4, 7, 0] == 1.0 and grid[4, 4, 0] == 1.0  # blank under sample 1 and the reference


# ---------------------------------------------------------------- the std map


def _tile(grid, row, col, size=64, pad=2):
  top, left = pad + row * (size + pad), pad + col * (size + pad)
  return grid[top:top + size, left:left + size]


def _with_noisy_samples(monkeypatch):
  """Makes sample_to_png see the SR regression with noise added to its samples: N different images."""
  load_trained = inference.load_trained

  def noisy(workdir, step=None, **kwargs):
    config, method, state, batch_spec = load_trained(workdir, step, **kwargs)
    def sample(state, x, rng, n):
      y = method.sample(state, x, rng, n)
      return jnp.clip(y + 0.1 * jax.random.normal(jax.random.fold_in(rng, 1), y.shape), 0.0, 1.0)
    return config, dataclasses.replace(method, sample=sample), state, batch_spec

  monkeypatch.setattr(sample_lib.inference, "load_trained", noisy)


def test_sr_sample_grid_std_column_is_the_std_of_the_samples_shown(sr_workdir, data_dir, tmp_path, monkeypatch,
                                                                   capsys):
  _with_noisy_samples(monkeypatch)
  n, b = 3, 2
  grid = sample_lib.sample_to_png(sr_workdir, str(tmp_path / "g.png"), num_samples=n, num_inputs=b, labels=False)
  # Columns: input | bicubic | samples 1..n | std | truth; rows: samples, then their differences.
  assert grid.shape == (2 * b * 66 + 2, (n + 4) * 66 + 2, 3)
  batch = pipeline.load_eval_examples(_sr_regression_config(data_dir), b)
  ref = np.asarray(registry.upsample_reference(batch["x"], 8))
  samples_BxNxHxWx3 = np.stack([[_tile(grid, 2 * i, 2 + k) for k in range(n)] for i in range(b)])
  std_BxHxW = samples_BxNxHxWx3.astype(np.float64).std(axis=1).mean(axis=-1)
  scale = std_BxHxW.max()
  assert scale > 0.01  # The noise makes the samples differ.
  for i in range(b):
    np.testing.assert_allclose(_tile(grid, 2 * i, 1), ref[i], atol=1e-6)
    np.testing.assert_allclose(_tile(grid, 2 * i, n + 2), np.repeat((std_BxHxW[i] / scale)[..., None], 3, -1),
                               atol=1e-5)
    np.testing.assert_allclose(_tile(grid, 2 * i, n + 3), batch["y"][i], atol=1e-6)
    for k in range(1, n):  # |sample_k+1 - sample_k| (diff_gain 1) under sample k+1.
      np.testing.assert_allclose(_tile(grid, 2 * i + 1, 2 + k),
                                 np.abs(samples_BxNxHxWx3[i, k] - samples_BxNxHxWx3[i, k - 1]), atol=1e-6)
    for col in (0, 1, 2, n + 2, n + 3):  # Nothing under the input, bicubic, sample 1, std and truth.
      assert np.all(_tile(grid, 2 * i + 1, col) == 1.0), col
  assert (f"std: each pixel's standard deviation across the {n} samples (mean over channels), black 0 to "
          f"white {scale:.4g}.") in capsys.readouterr().out


def test_identical_sr_samples_give_an_all_zero_std_map_and_10_samples_by_default(sr_workdir, tmp_path, capsys):
  # The regression is deterministic: its samples are one image.
  grid = sample_lib.sample_to_png(sr_workdir, str(tmp_path / "g.png"), num_inputs=1, labels=False)
  assert grid.shape[1] == (10 + 4) * 66 + 2  # input | bicubic | 10 samples | std | truth
  assert np.all(_tile(grid, 0, 12) == 0.0)
  printed = capsys.readouterr().out
  assert "across the 10 samples (mean over channels), black 0 to white 0." in printed


def test_an_explicit_std_map_of_iterates_is_a_one_line_error(sr_workdir, tmp_path, monkeypatch):
  load_trained = inference.load_trained

  def with_trajectory(workdir, step=None, **kwargs):
    config, method, state, batch_spec = load_trained(workdir, step, **kwargs)
    trajectory = lambda state, x, rng, n: jnp.stack([method.sample(state, x, rng, n)] * 2, axis=2)
    return config, dataclasses.replace(method, extras={"trajectory": trajectory}), state, batch_spec

  monkeypatch.setattr(sample_lib.inference, "load_trained", with_trajectory)
  with pytest.raises(sample_lib.InputError, match=r"^--std_map is across samples, but extras\['trajectory'\] drew"):
    sample_lib.sample_to_png(sr_workdir, str(tmp_path / "g.png"), num_samples=2, num_inputs=1,
                             extra="trajectory", std_map=True)


def test_difference_grid_std_column_by_hand():
  inputs = np.zeros((1, 1, 1, 3), np.float32)
  # Two RGB samples: per-channel std (divisor 2) 0.2, 0, 0.1 -> mean over channels 0.1.
  rows = np.array([[[[[0.2, 0.2, 0.2]]], [[[0.6, 0.2, 0.4]]]]], np.float32)  # [1, 2, 1, 1, 3]
  truth = np.full((1, 1, 1, 1), 0.9, np.float32)
  np.testing.assert_allclose(grids.std_map(rows), [[[0.1]]], atol=1e-7)
  grid = grids.difference_grid(inputs, rows, pad=1, std_scale=0.4, truth_SxHxWxC=truth)
  assert grid.shape == (2 * 2 + 1, 5 * 2 + 1, 3)  # input | 2 samples | std | truth
  np.testing.assert_allclose(grid[1, 1 + 2 * 3], 0.25, atol=1e-6)  # std 0.1 / scale 0.4, grey.
  np.testing.assert_allclose(grid[1, 1 + 2 * 4], 0.9)  # The truth after the std.
  np.testing.assert_allclose(grid[3, 1 + 2 * 2], [0.4, 0.0, 0.2], atol=1e-6)  # |sample 2 - sample 1|
  assert np.all(grid[3, 1 + 2 * 3] == 1.0) and np.all(grid[3, 1 + 2 * 4] == 1.0)  # Blank under std and truth.
  # Identical samples: an all-zero (black) map, also at scale 0; without a scale, no column.
  same = np.repeat(rows[:, :1], 3, axis=1)
  assert np.all(grids.std_map(same) == 0.0)
  assert np.all(grids.difference_grid(inputs, same, pad=1, std_scale=0.0)[1, 1 + 2 * 4] == 0.0)
  assert grids.difference_grid(inputs, same, pad=1).shape[1] == 4 * 2 + 1


# ---------------------------------------------------------------- augmentation


def test_flips_and_rotations_keep_exact_lr_hr_pairs():
  photo = local_photos_sr.load_photo("astronaut", 128)
  hr = photo[:64, 32:96]
  example = {"x": local_photos_sr.bicubic_downsample(hr, 8), "y": hr}
  seen = set()
  for seed in range(64):
    out = local_photos_sr.flip_rotate(example, np.random.default_rng(seed))
    # Downsampling the transformed HR gives the transformed LR, up to PIL's 8-bit rounding between
    # its two passes (which are not symmetric): at most 2 grey levels, nearly always 0.
    diff = np.abs(local_photos_sr.bicubic_downsample(out["y"], 8).astype(int) - out["x"].astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.25
    seen.add(out["y"].tobytes())
  assert len(seen) == 8  # All 8 symmetries of the square occur.


def test_local_photos_sr_augments_only_training_and_only_when_asked(data_dir):
  config = _sr_regression_config(data_dir)
  assert config.data.options.augment
  kinds = lambda train_: [type(t).__name__ for t in local_photos_sr._transforms(config.data, train_)]
  assert kinds(True) == ["LowToHighResolution", "RandomFlipRotate"]
  assert kinds(False) == ["LowToHighResolution"]
  with config.unlocked():
    config.data.options.augment = False
  assert kinds(True) == ["LowToHighResolution"]


# ---------------------------------------------------------------- evaluation during training


def test_eval_every_writes_eval_scalars_with_the_bicubic_reference(sr_workdir):
  from tensorflow.python.summary.summary_iterator import summary_iterator  # pylint: disable=g-import-not-at-top
  steps = {}
  for path in glob.glob(os.path.join(sr_workdir, "events.out.tfevents.*")):
    for event in summary_iterator(path):
      for value in event.summary.value:
        if value.tag.startswith("eval/"):
          steps.setdefault(value.tag, set()).add(event.step)
  assert steps["eval/psnr_mean"] == {2, 4, 6}
  for tag in ("eval/psnr_best", "eval/ssim_best", "eval/ssim_mean", "eval/bicubic/psnr",
              "eval/psnr_gap_to_bicubic"):
    assert steps[tag] == {2, 4, 6}, tag
