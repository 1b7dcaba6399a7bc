"""The diversity loss (Yang, Liu, Cai): noise channel, Eq. 7, Algorithm 1's paired forward, the method, noise linking."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import evaluate
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation import metrics
from multimodal_jax.losses import diversity as div
from multimodal_jax.methods import base as methods_base
from test_train import load_config

CONFIG = str(REPO / "configs" / "diversity.py")


def test_noise_channel_puts_n_c_on_the_pixels_of_class_c():
  label = jnp.array([[[0, 1], [2, 1]], [[2, 2], [0, 0]]])
  n = jnp.array([[0.5, -0.25, 1.0], [-1.0, 0.0, 0.75]])
  z = np.asarray(div.noise_channel(label, n))
  np.testing.assert_array_equal(z[..., 0], [[[0.5, -0.25], [1.0, -0.25]], [[0.75, 0.75], [-1.0, -1.0]]])


def test_segment_l1_and_eq_7_by_hand():
  label = jnp.array([[[0, 0], [1, 1]]])  # class 2 absent
  a = jnp.zeros((1, 2, 2, 1))
  b = jnp.array([[[[0.1], [0.3]], [[0.05], [0.05]]]])
  dist, present = div.segment_l1(a, b, label, 3)
  np.testing.assert_allclose(dist, [[0.4, 0.1, 0.0]], rtol=1e-6)  # mean |a - b| x 2 ([-1, 1] units)
  np.testing.assert_array_equal(present, [[True, True, False]])
  n = jnp.array([[-0.5, 1.0, 1.0]])
  # class 0: 0.4 >= 0.3, no hinge; class 1: |1| * (0.3 - 0.1); class 2 absent: nothing.
  np.testing.assert_allclose(div.diversity_loss(a, b, label, n, 0.3), [0.2], rtol=1e-6)
  np.testing.assert_allclose(div.diversity_loss(a, b, label, jnp.array([[-0.5, 0.5, 1.0]]), 0.5), [0.05 + 0.2],
                             rtol=1e-6)


def test_paired_outputs_is_two_forwards_in_one_batch():
  def generate(x, z):
    return jnp.tanh(x.sum(-1, keepdims=True) * 0.3 + z * 2.0)

  x = jnp.asarray(np.random.default_rng(0).uniform(size=(3, 4, 4, 2)), jnp.float32)
  z = jnp.asarray(np.random.default_rng(1).uniform(size=(3, 4, 4, 1)), jnp.float32)
  y_n, y_0 = div.paired_outputs(generate, x, z)
  np.testing.assert_allclose(y_n, generate(x, z), atol=1e-6)
  np.testing.assert_allclose(y_0, generate(x, jnp.zeros_like(z)), atol=1e-6)


def test_the_pair_g_l_n_and_g_l_0_shares_one_dropout_mask():
  """Alg. 1 compares the effect of the noise only: with n = 0 in both halves the pair is identical."""
  from multimodal_jax.models import pix2pix
  net = pix2pix.UNet(out_channels=3, num_downs=3, features=8)
  x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 8, 8, 3)), jnp.float32)
  z = jnp.zeros((2, 8, 8, 1))
  params = net.init({"params": jax.random.key(0), "dropout": jax.random.key(0)}, x, z)
  generate = lambda paired: lambda x2, z2: net.apply(params, x2, z2, train=True, paired_dropout=paired,
                                                     rngs={"dropout": jax.random.key(1)})
  y_n, y_0 = div.paired_outputs(generate(True), x, z)
  np.testing.assert_array_equal(y_n, y_0)
  y_n, y_0 = div.paired_outputs(generate(False), x, z)  # one batch of 2B, independent masks
  assert float(jnp.abs(y_n - y_0).max()) > 1e-3
  # Deterministic (train=False): paired or not, the same function.
  np.testing.assert_allclose(net.apply(params, x, z, train=False, paired_dropout=True),
                             net.apply(params, x, z, train=False), atol=1e-6)


def test_noise_linking_separates_inside_from_outside():
  label = np.zeros((1, 4, 4), np.int64)
  label[0, :2] = 1
  sweep = np.zeros((1, 3, 4, 4, 3), np.float32)
  sweep[0, :, :2] = np.array([0.0, 0.2, 0.5])[:, None, None, None]  # class 1 moves by 0.5 in total
  sweep[0, 2, 2:] = 0.01  # class 0 moves by 0.01
  inside, outside = metrics.noise_linking(sweep, label, 1)
  np.testing.assert_allclose([inside, outside], [0.5, 0.01], rtol=1e-5)
  assert np.isnan(metrics.noise_linking(sweep, label, 3)[0])


def test_noise_linking_beyond_the_rim_leaves_out_the_pixels_near_the_segment():
  label = np.zeros((1, 6, 6), np.int64)
  label[0, :2] = 1
  sweep = np.zeros((1, 2, 6, 6, 3), np.float32)
  sweep[0, 1, :2] = 0.5  # inside
  sweep[0, 1, 2:4] = 0.1  # rows 2 and 3: 1 and 2 px from the segment
  sweep[0, 1, 4:] = 0.01  # rows 4 and 5: 3 and 4 px away
  np.testing.assert_allclose(metrics.noise_linking(sweep, label, 1), [0.5, 0.055], rtol=1e-5)
  np.testing.assert_allclose(metrics.noise_linking(sweep, label, 1, rim_px=2.0), [0.5, 0.01], rtol=1e-5)
  np.testing.assert_allclose(metrics.noise_linking(sweep, label, 1, rim_px=1.0), [0.5, 0.04], rtol=1e-5)


def test_within_distance_is_a_euclidean_disc_per_image():
  mask = np.zeros((2, 9, 9), bool)
  mask[0, 4, 4] = True
  mask[1, 0, 8] = True
  for radius, count in [(1.0, 5), (1.5, 9), (2.0, 13), (2.9, 25)]:
    near = metrics.within_distance(mask, radius)
    assert near[0].sum() == count, radius
    yy, xx = np.mgrid[:9, :9]
    np.testing.assert_array_equal(near[0], (yy - 4) ** 2 + (xx - 4) ** 2 <= radius ** 2)
    np.testing.assert_array_equal(near[1], yy ** 2 + (xx - 8) ** 2 <= radius ** 2)  # clipped at the corner


def _train(arg, steps, beta=None):
  config, _ = load_config(CONFIG, arg)
  with config.unlocked():
    if beta is not None:
      config.diversity.beta = beta
    config.train.num_steps = steps
  spec = {"x": jax.ShapeDtypeStruct((4, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((4, 32, 64, 3), jnp.float32),
          "label": jax.ShapeDtypeStruct((4, 32, 64), jnp.int32)}
  method = methods_base.make_method(config, spec, {})
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  label = np.zeros((4, 32, 64), np.int32)
  label[:, 16:] = 2  # sky over road
  label[:, 8:16, 10:30] = 3
  x = np.eye(6, dtype=np.float32)[label]
  y = np.where(label[..., None] == 0, 0.6, 0.3) * np.ones((1, 1, 1, 3), np.float32)  # one target: noise is useless
  batch = {"x": jnp.asarray(x), "y": jnp.asarray(y), "label": jnp.asarray(label)}
  steps = {name: jax.jit(fn) for name, fn in method.steps.items()}

  class Compiled:
    def __call__(self, name, state, batch):
      return steps[name](state, batch)[0]

  before = state
  for _ in range(config.train.num_steps):
    state = method.run_round(Compiled(), state, batch)
  return config, method, before, state, batch


def test_discriminator_and_generator_steps_update_only_their_network_and_count_g_updates():
  _, method, state, _, batch = _train("runlocal", 0)
  assert set(method.steps) == {"generator", "discriminator"}

  def same(a, b):
    return all(jax.tree.leaves(jax.tree.map(lambda u, v: bool(jnp.all(u == v)), a, b)))

  after_d, metrics_d = jax.jit(method.steps["discriminator"])(state, batch)
  assert int(after_d.step) == 0  # a D update is not a G update
  assert same(after_d.networks["generator"].params, state.networks["generator"].params)
  assert not same(after_d.networks["discriminator"].params, state.networks["discriminator"].params)
  assert {"real_accuracy", "fake_accuracy", "loss"} <= set(metrics_d)
  after_g, metrics_g = jax.jit(method.steps["generator"])(after_d, batch)
  assert int(after_g.step) == 1
  assert same(after_g.networks["discriminator"].params, after_d.networks["discriminator"].params)
  assert not same(after_g.networks["generator"].params, after_d.networks["generator"].params)
  assert float(metrics_g["diversity_loss"]) > 0 and {"adversarial", "l1", "base_loss"} <= set(metrics_g)


@pytest.mark.parametrize("beta,linked", [(10.0, True), (0.0, False)])
def test_the_diversity_loss_links_each_noise_entry_to_its_segment(beta, linked):
  """With one target per layout the base loss alone makes G ignore the noise; Eq. 7 makes n^c move segment c."""
  config, method, _, state, batch = _train("crn,runlocal", 100, beta=beta)
  ctx = evaluators.Context(config, method, state, "", {k: np.asarray(v) for k, v in batch.items()}, samples=None)
  ctx.class_names = lambda: ("sky", "ground", "road", "building", "tree", "car")
  out = evaluators.run(["noise_linking"], ctx)
  assert set(out) >= {"noise_linking/sky", "noise_linking/road", "noise_linking/building", "noise_linking"}
  if linked:
    assert out["noise_linking_inside"] > 0.05 and out["noise_linking"] > 3.0, out
  else:
    assert out["noise_linking_inside"] < 0.02, out
  assert config.diversity.beta == beta


def test_sampling_draws_fresh_noise_and_gradation_sweeps_one_class():
  _, method, _, state, batch = _train("crn,runlocal", 1)
  x = batch["x"][:2]
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(1), 3))
  assert samples.shape == (2, 3, 32, 64, 3) and 0 <= samples.min() and samples.max() <= 1
  sweep = np.asarray(jax.jit(method.extras["gradation_2"], static_argnums=3)(state, x, jax.random.PRNGKey(1), 4))
  assert sweep.shape == (2, 4, 32, 64, 3) and np.abs(sweep[:, -1] - sweep[:, 0]).max() > 0
  again = np.asarray(jax.jit(method.extras["gradation_2"], static_argnums=3)(state, x, jax.random.PRNGKey(1), 4))
  np.testing.assert_array_equal(sweep, again)
  assert {f"gradation_{c}" for c in range(6)} <= set(method.extras)


def test_a_layout_without_labels_is_a_clear_error():
  config, _ = load_config(CONFIG, "runlocal")
  spec = {"x": jax.ShapeDtypeStruct((4, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((4, 32, 64, 3), jnp.float32)}
  with pytest.raises(ValueError, match="class ids"):
    methods_base.make_method(config, spec, {})


def test_without_the_noise_input_the_base_network_is_blind_to_n_and_has_no_sweeps():
  """`:no_noise_input` (the published base network): zeros in the noise channel, so n changes nothing.

  CRN has no dropout, so its samples must be bit-identical across noise draws;
  with the noise input (the same untrained network) they differ.
  """
  _, blind, _, blind_state, batch = _train("crn,no_noise_input,runlocal", 0)
  _, seeing, _, seeing_state, _ = _train("crn,no_diversity,runlocal", 0)
  x = batch["x"][:2]
  blind_samples = np.asarray(jax.jit(blind.sample, static_argnums=3)(blind_state, x, jax.random.PRNGKey(1), 3))
  np.testing.assert_array_equal(blind_samples[:, 0], blind_samples[:, 1])
  np.testing.assert_array_equal(blind_samples[:, 0], blind_samples[:, 2])
  seeing_samples = np.asarray(jax.jit(seeing.sample, static_argnums=3)(seeing_state, x, jax.random.PRNGKey(1), 3))
  assert np.abs(seeing_samples[:, 0] - seeing_samples[:, 1]).max() > 1e-4
  assert not any(k.startswith(methods_base.GRADATION_PREFIX) for k in blind.extras)
  assert {f"gradation_{c}" for c in range(6)} <= set(seeing.extras)
  assert "no noise input" in blind.description


def test_the_diversity_loss_without_the_noise_input_is_a_config_error():
  config, _ = load_config(CONFIG, "no_noise_input,runlocal")
  with config.unlocked():
    config.diversity.beta = 0.1
  with pytest.raises(ValueError, match=r"config.diversity.noise_input=False is invalid: the diversity loss"):
    methods_base.validate_method_config(config)


@pytest.mark.parametrize("arg,message", [
    ("segments,lighting", "segments, lighting are different toy_scenes data; pick one"),
    ("one_mode,segments", "segments, one_mode are different toy_scenes data; pick one"),
    ("lighting,facades", "`lighting` is a toy_scenes variant; drop it with facades/cityscapes"),
])
def test_toy_scenes_variants_exclude_each_other_and_the_paper_data(arg, message):
  assert load_config(CONFIG, "lighting")[0].data.builder_config == "lighting"
  with pytest.raises(ValueError, match=message):
    load_config(CONFIG, arg)


def test_a_run_recorded_before_noise_input_existed_still_loads_with_the_noise_input():
  """run_info.json of older diversity runs has no `diversity.noise_input`: evaluate/sample must rebuild them."""
  import ml_collections  # pylint: disable=g-import-not-at-top
  config, _ = load_config(CONFIG, "crn,runlocal")
  old = config.to_dict()
  del old["diversity"]["noise_input"]
  old = ml_collections.ConfigDict(old)
  old.lock()
  methods_base.validate_method_config(old)
  spec = {"x": jax.ShapeDtypeStruct((4, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((4, 32, 64, 3), jnp.float32),
          "label": jax.ShapeDtypeStruct((4, 32, 64), jnp.int32)}
  method = methods_base.make_method(old, spec, {})
  assert "gradation_0" in method.extras and "no noise input" not in method.description


def test_evaluate_summary_names_each_class_ratio_and_per_segment_modes():
  d = "mean_abs_pixel"
  m = {"psnr_best": 15.0, "psnr_mean": 14.0, "ssim_best": 0.4, "ssim_mean": 0.3, f"diversity_{d}": 0.04,
       **{metrics.fwv_key(d, s): 0.01 for s in metrics.FWV_SIGMAS},
       "mode_recall": 0.01, "mode_recall_nearest": 0.39, "mode_precision": 0.0,
       "noise_linking/sky": 9.08, "noise_linking/ground": 3.72, "noise_linking": 6.4, "noise_linking_inside": 0.117,
       "noise_linking_beyond_rim/sky": 14.4, "noise_linking_beyond_rim/ground": 8.44}
  result = {"method": "diversity", "dataset": "toy_scenes", "step": 2000, "num_inputs": 64, "num_samples": 16,
            "evals": list(config_lib.DEFAULT_EVALS), "num_modes": 12, "mode_samples": 64,
            "modes_per_segment": True, "metrics": m, "workdir": "/w"}
  text = evaluate.summary(result, 1.0)
  assert "    per class: sky 9.08, ground 3.72\n" in text
  assert "    outside taken beyond a 2-px rim of the segment: sky 14.4, ground 8.44" in text.splitlines()
  assert "modes (K=12 per segment, drawn independently, 1/K=0.083, 64 samples per input)" in text
  result["modes_per_segment"] = False
  assert "modes (K=12, 1/K=0.083" in evaluate.summary(result, 1.0)
  assert "rarer half" not in text
  m["mode_recall_rare"] = 0.328
  assert "precision 0.000; recall of the rarer half of the modes 0.328\n" in evaluate.summary(result, 1.0)


@pytest.mark.parametrize("arg", ["no_noise_input,runlocal", "runlocal"])
def test_sample_dropout_off_leaves_only_the_noise_input_to_vary_the_samples(arg):
  """Issue 38: without dropout at sampling, the published pix2pix (no noise input) repeats one image;
  with the noise input the samples still differ, and dropout on varies both."""
  config, _ = load_config(CONFIG, arg)
  spec = {"x": jax.ShapeDtypeStruct((2, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((2, 32, 64, 3), jnp.float32),
          "label": jax.ShapeDtypeStruct((2, 32, 64), jnp.int32)}
  label = np.zeros((2, 32, 64), np.int32)
  label[:, 16:] = 2
  x = jnp.asarray(np.eye(6, dtype=np.float32)[label])
  spread = {}
  for dropout in (True, False):
    with config.unlocked():
      config.diversity.sample_dropout = dropout
    method = methods_base.make_method(config, spec, {})
    state = jax.jit(method.init)(jax.random.PRNGKey(0))
    samples = np.asarray(method.sample(state, x, jax.random.PRNGKey(1), 3))
    spread[dropout] = np.abs(samples - samples[:, :1]).max()
  assert spread[True] > 1e-5
  if arg.startswith("no_noise_input"):
    assert spread[False] == 0.0
  else:
    assert spread[False] > 1e-5


def test_sample_dropout_override_reaches_a_run_recorded_before_the_key():
  from multimodal_jax import inference  # pylint: disable=g-import-not-at-top
  config, _ = load_config(CONFIG, "runlocal")
  recorded = config.to_dict()
  del recorded["diversity"]["sample_dropout"]
  import ml_collections  # pylint: disable=g-import-not-at-top
  old = ml_collections.ConfigDict(recorded)
  assert inference.apply_overrides(old, ["diversity.sample_dropout=false"]).diversity.sample_dropout is False
  assert inference.apply_overrides(config, ["diversity.sample_dropout=0"]).diversity.sample_dropout is False
  with pytest.raises(inference.OverrideError, match=r"diversity.sample_dropout is a bool; got 'maybe'\.$"):
    inference.apply_overrides(config, ["diversity.sample_dropout=maybe"])


def test_a_trained_run_restores_with_sample_dropout_overridden(data_dir, tmp_path):
  """The prepared state's fingerprint covers `config.diversity`: an override must not break the restore."""
  from multimodal_jax import inference  # pylint: disable=g-import-not-at-top
  from multimodal_jax import train  # pylint: disable=g-import-not-at-top
  config, _ = load_config(CONFIG, "no_noise_input,runlocal")
  with config.unlocked():
    config.data.data_dir = data_dir
    config.train.final_evals = ()
  workdir = str(tmp_path / "run")
  train.train_and_evaluate(config, workdir)
  overridden, method, state, batch_spec = inference.load_trained(workdir, overrides=["diversity.sample_dropout=false"])
  assert overridden.diversity.sample_dropout is False
  x = jnp.asarray(np.eye(batch_spec["x"].shape[-1], dtype=np.float32)[np.zeros((1,) + batch_spec["x"].shape[1:3], int)])
  samples = np.asarray(method.sample(state, x, jax.random.PRNGKey(0), 3))
  assert np.abs(samples - samples[:, :1]).max() == 0.0  # no noise input, no dropout: one image
