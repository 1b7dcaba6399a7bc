"""Dataset and loss rebalancing (cimle_semantic_layouts_iccv2019 §3.4): exact values on tiny inputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import prepared as prepared_lib
from multimodal_jax.losses import rebalancing
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import imle
from test_train import load_config

SRIM = str(REPO / "configs" / "srim.py")


def test_class_colour_means_by_hand():
  label = np.array([[[0, 0], [1, 2]]])  # [1, 2, 2]; class 3 absent
  image = np.array([[[[0.2, 0.0, 0.0], [0.4, 0.0, 0.0]], [[0.0, 1.0, 0.0], [0.0, 0.0, 0.5]]]])
  means, areas = rebalancing.class_colour_means(label, image, num_classes=4)
  np.testing.assert_allclose(means[0, 0], [0.3, 0.0, 0.0])
  np.testing.assert_allclose(means[0, 1], [0.0, 1.0, 0.0])
  np.testing.assert_allclose(means[0, 2], [0.0, 0.0, 0.5])
  assert np.all(np.isnan(means[0, 3]))
  np.testing.assert_array_equal(areas, [[2, 1, 1, 0]])


def test_kde_matches_scipy_gaussian_kde():
  rng = np.random.default_rng(0)
  points = rng.normal(size=(200, 3)) * [1.0, 0.5, 0.2] + [0.3, 0.1, 0.0]
  queries = rng.normal(size=(17, 3))
  expected = scipy.stats.gaussian_kde(points.T)(queries.T)
  np.testing.assert_allclose(rebalancing.kde_density(points, queries, chunk=5), expected, rtol=1e-5)


def test_rarity_is_the_inverse_density_over_its_class_mean_and_zero_where_a_class_is_absent():
  rng = np.random.default_rng(1)
  colours = np.concatenate([0.5 + 0.01 * rng.normal(size=(30, 3)), [[0.95, 0.05, 0.05]]])  # one outlier
  means = np.full((31, 2, 3), np.nan)
  means[:, 0] = colours
  means[:10, 1] = 0.2 + 0.01 * rng.normal(size=(10, 3))
  rarity = rebalancing.rarity_scores(means)
  assert rarity.shape == (31, 2) and rarity.dtype == np.float32
  inverse_density = 1.0 / scipy.stats.gaussian_kde(colours.T)(colours.T)
  np.testing.assert_allclose(rarity[:, 0], inverse_density / inverse_density.mean(), rtol=1e-4)
  assert np.argmax(rarity[:, 0]) == 30  # the outlier is the rarest
  np.testing.assert_array_equal(rarity[10:, 1], 0.0)
  assert np.all(rarity[:10, 1] > 0)
  np.testing.assert_allclose(rarity[:10, 1].mean(), 1.0, rtol=1e-6)  # mean 1 over the images showing the class


def _one_constant_class(n=40, seed=0):
  """Mean colours [n, 2, 3]: class 0 of one colour (up to a texture's average, 1e-4), class 1 one of two."""
  rng = np.random.default_rng(seed)
  means = np.zeros((n, 2, 3))
  means[:, 0] = 0.3 + 1e-4 * rng.normal(size=(n, 3))
  means[:, 1] = np.where((np.arange(n) % 2 == 0)[:, None], [0.2, 0.5, 0.8], [0.8, 0.5, 0.2])
  means[:, 1] += 0.01 * rng.normal(size=(n, 3))
  return means


def test_a_class_of_one_colour_keeps_its_weight_in_the_loss_mask():
  """issue 39: the raw 1 / D_p of a near-delta density is ~1e-7 of a varying class's, so M / max M deleted the
  constant class from the loss and the selection; relative to its class mean it weighs as much as the other."""
  means = _one_constant_class()
  rarity = rebalancing.rarity_scores(means)
  label = np.zeros((len(means), 2, 2), np.int32)
  label[:, :, 1] = 1  # left column class 0, right column class 1
  mask = np.asarray(rebalancing.rarity_mask(jnp.asarray(label), jnp.asarray(rarity)))
  assert mask[:, :, 0].min() > 0.3 and mask[:, :, 1].min() > 0.3, (mask[:, 0, 0].min(), mask[:, 0, 1].min())
  # The raw inverse densities, as the paper writes them, would give class 0 at most ~1e-7 of the mask.
  raw = np.stack([1.0 / rebalancing.kde_density(means[:, p], means[:, p]) for p in range(2)], axis=1)
  assert (raw[:, 0] / raw.max(axis=1)).max() < 1e-6
  # ... which `imle.rebalance_scale='paper'` keeps available, exactly.
  np.testing.assert_allclose(rebalancing.rarity_scores(means, scale="paper"), raw, rtol=1e-5)
  with pytest.raises(ValueError, match="rarity scale"):
    rebalancing.rarity_scores(means, scale="median")
  # A class of exactly one colour (a singular covariance) is exactly 1: every image as likely as the others.
  means[:, 0] = 0.3
  np.testing.assert_array_equal(rebalancing.rarity_scores(means)[:, 0], 1.0)


def test_rare_appearances_still_weigh_in_proportion_to_their_rarity_and_the_pool_is_unchanged():
  # Class 1 takes colour A in 30 images and colour B in 10: B's density is a third of A's, its rarity 3x
  # (the kernel of one colour is ~5e-4 of its peak at the other).
  means = _one_constant_class()
  means[:, 1] = np.where((np.arange(40) < 30)[:, None], [0.2, 0.5, 0.8], [0.8, 0.5, 0.2])
  rarity = rebalancing.rarity_scores(means)
  np.testing.assert_allclose(rarity[30:, 1].mean() / rarity[:30, 1].mean(), 3.0, rtol=0.02)
  # Per class: 30 images at 1/D ~ 40/30 and 10 at ~ 40/10 (in units of the kernel peak), mean 2.
  np.testing.assert_allclose(rarity[:30, 1].mean(), 2 / 3, rtol=0.02)
  np.testing.assert_allclose(rarity[30:, 1].mean(), 2.0, rtol=0.02)
  # Dataset rebalancing draws class p's images with R_p(k) / sum_k' R_p(k'): a per-class scale cancels.
  raw = np.stack([1.0 / rebalancing.kde_density(means[:, p], means[:, p]) for p in range(2)], axis=1)
  areas = np.ones((40, 2))
  np.testing.assert_allclose(rebalancing.pool_sampling_weights(rarity, areas, top=2),
                             rebalancing.pool_sampling_weights(raw, areas, top=2), rtol=1e-5)


def test_pool_weights_split_the_pool_among_the_largest_classes_by_rarity():
  rarity = np.array([[1.0, 0.0, 5.0], [3.0, 2.0, 0.0], [0.0, 2.0, 5.0]])
  areas = np.array([[10, 0, 1], [10, 5, 0], [0, 5, 1]])  # total area: class 0 20, class 1 10, class 2 2
  weights = rebalancing.pool_sampling_weights(rarity, areas, top=2)  # classes 0 and 1
  # Class 0's half draws images 0, 1 with 1/4, 3/4; class 1's half draws 1, 2 with 1/2 each.
  np.testing.assert_allclose(weights, [0.5 * 0.25, 0.5 * 0.75 + 0.5 * 0.5, 0.5 * 0.5])
  np.testing.assert_allclose(weights.sum(), 1.0)


def test_rarity_mask_puts_each_class_rarity_on_its_pixels_normalised_to_one():
  label = jnp.array([[[0, 1], [2, 2]], [[1, 1], [1, 0]]])
  rarity = jnp.array([[2.0, 4.0, 8.0], [3.0, 6.0, 100.0]])  # class 2 absent from image 1
  mask = np.asarray(rebalancing.rarity_mask(label, rarity))
  np.testing.assert_allclose(mask[0], [[0.25, 0.5], [1.0, 1.0]])
  np.testing.assert_allclose(mask[1], [[1.0, 1.0], [1.0, 0.5]])
  assert mask.min() > 0 and mask.max() == 1.0


def _layout_imle_config(data_dir, **imle):
  config, _ = load_config(SRIM, "runlocal")
  config.data.name, config.data.builder_config, config.data.data_dir = "toy_scenes", "tiny", data_dir
  config.model.name = "conv_generator"
  for key, value in imle.items():
    config.imle[key] = value
  return config


def test_prepare_computes_rarity_and_pool_weights_over_the_training_set(data_dir, tmp_path):
  config = _layout_imle_config(data_dir, rebalance_dataset=True, rebalance_loss=True)
  arrays = prepared_lib.prepare_or_restore(config, str(tmp_path))
  assert arrays["rarity"].shape == (64, 6)  # toy_scenes tiny: 64 training layouts, 6 classes
  weights = arrays[methods_base.SAMPLING_WEIGHTS]
  assert weights.shape == (64,) and np.all(weights >= 0) and np.isclose(weights.sum(), 1.0)
  # Every layout has sky, ground, road, building and tree: all take part in the pool.
  assert np.all(weights > 0)
  only_loss = _layout_imle_config(data_dir, rebalance_loss=True)
  assert methods_base.SAMPLING_WEIGHTS not in prepared_lib.compute(only_loss)


def test_prepare_on_scenes_with_fixed_classes_keeps_every_class_in_the_mask(data_dir, tmp_path):
  """toy_scenes_conditional: fixed classes never vary; their pixels keep a weight near the free classes'."""
  config = _layout_imle_config(data_dir, rebalance_dataset=True, rebalance_loss=True)
  config.data.name = "toy_scenes_conditional"
  arrays = prepared_lib.prepare_or_restore(config, str(tmp_path))
  rarity = arrays["rarity"]
  assert rarity.shape == (64, 12)  # tiny: 64 training layouts; 6 fixed and 6 free classes
  from multimodal_jax.data import pipeline, toy_scenes  # pylint: disable=g-import-not-at-top
  source = pipeline.get_builder(config.data).as_data_source("train")
  labels = np.stack([source[i]["label"] for i in range(len(source))])  # the rows of `rarity`
  mask = np.asarray(rebalancing.rarity_mask(jnp.asarray(labels.astype(np.int32)), jnp.asarray(rarity)))
  fixed = labels < toy_scenes.FREE_CLASS_OFFSET
  assert mask[fixed].mean() > 0.25 and mask[fixed].min() > 1e-2, (mask[fixed].mean(), mask[fixed].min())
  for p in range(12):
    shown = rarity[:, p] > 0
    if shown.any():
      np.testing.assert_allclose(rarity[shown, p].mean(), 1.0, rtol=1e-5)


def test_loss_rebalancing_weights_the_selection_distance_by_the_rarity_mask():
  config, _ = load_config(SRIM, "runlocal")
  config.distance = config_lib.default_distance_config("pixel", pixel_norm="l1")
  config.imle.selection_distance = config_lib.default_distance_config("pixel", pixel_norm="l1")
  config.imle.zero_code_steps = 2  # the select step evaluates T(x, 0): a deterministic distance
  config.imle.rebalance_loss = True
  b, h, w = 8, 4, 4
  label = np.zeros((b, h, w), np.int32)
  label[:, :, 2:] = 1  # left half class 0, right half class 1
  y = np.zeros((b, h, w, 3), np.float32)
  y[:, :, :2] = 1.0  # the targets differ from the near-0.5 outputs in both halves
  batch = {"x": jnp.asarray(np.eye(2, dtype=np.float32)[label]), "y": jnp.asarray(y),
           "label": jnp.asarray(label), "index": jnp.arange(b)}
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)

  def selected(rarity):
    method = imle.make_method(config, spec, {"rarity": rarity}, generator=_Constant())
    state = method.init(jax.random.PRNGKey(0))
    state, _ = jax.jit(method.steps["select"])(state, batch)
    return np.asarray(state.pool_distances)

  even = selected(np.ones((b, 2), np.float32))
  np.testing.assert_allclose(even, 0.5)  # mask 1 everywhere: the plain mean |0.5 - y|
  left_only = selected(np.tile(np.array([[1.0, 1e-6]], np.float32), (b, 1)))
  np.testing.assert_allclose(left_only, 0.25, rtol=1e-5)  # the right half weighs ~0
  with pytest.raises(ValueError, match="needs the prepared 'rarity'"):
    imle.make_method(config, spec, {}, generator=_Constant())


class _Constant(imle.nn.Module):
  """T(x, z) = 0.5 everywhere (3 channels), with one parameter so the optimiser has something."""

  @imle.nn.compact
  def __call__(self, x, z, bilinear=False):
    del z, bilinear
    bias = self.param("bias", jax.nn.initializers.zeros, ())
    return jnp.full(x.shape[:3] + (3,), 0.5) + 0.0 * bias


# ---------------------------------------------------------------- rare modes: data and metric


def test_skewed_toy_scenes_draws_modes_with_the_stated_probabilities():
  from multimodal_jax.data import toy_scenes  # pylint: disable=g-import-not-at-top
  p = toy_scenes.mode_probabilities(12, 0.7)
  np.testing.assert_allclose(p, 0.7**np.arange(12) / np.sum(0.7**np.arange(12)))
  np.testing.assert_allclose(toy_scenes.mode_probabilities(4), 0.25)
  modes = np.array([toy_scenes.make_example(0, 0, i, 8, 16, 12, mode_decay=0.7)["mode"] for i in range(3000)])
  counts = np.bincount(modes, minlength=12) / len(modes)
  tolerance = 4 * np.sqrt(p * (1 - p) / len(modes)) + 1e-3  # 4 binomial standard deviations
  assert np.all(np.abs(counts - p) <= tolerance), (counts, p)
  # The uniform draw is unchanged: the default data stay byte-identical.
  a = toy_scenes.make_example(0, 0, 5, 8, 16, 12)
  b = toy_scenes.make_example(0, 0, 5, 8, 16, 12, mode_decay=1.0)
  assert a["mode"] == b["mode"] and np.array_equal(a["image"], b["image"])


def test_layout_imle_skewed_variants_pick_their_data_and_exclude_each_other():
  configs = REPO / "configs" / "layout_imle.py"
  assert load_config(str(configs), "skewed")[0].data.builder_config == "skewed"
  assert load_config(str(configs), "skewed_mild,no_encoder")[0].data.builder_config == "skewed_mild"
  from multimodal_jax.data import toy_scenes  # pylint: disable=g-import-not-at-top
  decay = {c.name: c.mode_decay for c in toy_scenes.ToyScenes.BUILDER_CONFIGS}
  assert (decay["skewed"], decay["skewed_mild"]) == (0.7, 0.85)
  with pytest.raises(ValueError, match="pick one"):
    load_config(str(configs), "skewed,skewed_mild")


def test_rare_mode_recall_counts_only_the_rare_modes():
  from multimodal_jax.evaluation import metrics  # pylint: disable=g-import-not-at-top
  modes = np.zeros((1, 4, 2, 2, 3), np.float32)
  for k in range(4):
    modes[0, k] = k / 4
  samples = modes[:, [0, 0, 1, 3]]  # hits modes 0, 1, 3 exactly
  rare = metrics.rare_modes(np.array([0.4, 0.3, 0.2, 0.1]))
  np.testing.assert_array_equal(rare, [False, False, True, True])
  out = metrics.mode_metrics(samples, modes, 0.01, rare)
  assert out["mode_recall"] == 0.75 and out["mode_recall_rare"] == 0.5
  assert metrics.rare_modes(np.full(4, 0.25)) is None
