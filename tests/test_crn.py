"""CRN (cimle_semantic_layouts §3.3): shapes, noise inputs, k outputs, the registry, the paper's size."""

import functools
import importlib.util

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax.models import crn
from multimodal_jax.models import registry

B, CLASSES = 2, 5


def key(seed):
  # RBG keys: threefry's random bits compile ~5x slower on CPU, and init dominates these tests.
  return jax.random.key(seed, impl="rbg")


def label_map(rng, hw, classes=CLASSES, batch=B):
  return jax.nn.one_hot(jax.random.randint(rng, (batch, *hw), 0, classes), classes)


def init_apply(model, x, z=None, seed=0):
  variables = jax.jit(model.init)(key(seed), x, z)
  return variables, jax.jit(model.apply)(variables, x, z)


def crn_config(**overrides):
  cfg = ml_collections.ConfigDict(dict(
      name="crn", features=(8, 8, 4), base_height=4, base_width=8, noise_channels=2, noise_encoder=False,
      encoder_features=6, noise_encoder_input_channels=3, num_outputs=1))
  cfg.update(overrides)
  cfg.lock()
  return cfg


# ---------------------------------------------------------------- shapes and range


@pytest.mark.parametrize("features,base,out_hw", [
    ((8,), (4, 8), (4, 8)),
    ((8, 8), (4, 8), (8, 16)),
    ((8, 8, 4), (4, 8), (16, 32)),
    ((8, 4), (3, 3), (6, 6)),
    ((8, 8, 4), (5, 2), (20, 8)),
])
def test_output_is_an_image_in_the_unit_range_at_base_times_two_to_the_modules(features, base, out_hw):
  model = crn.CRN(out_channels=3, features=features, base_height=base[0], base_width=base[1])
  assert model.resolutions[-1] == out_hw
  _, y = init_apply(model, label_map(key(1), out_hw))
  assert y.shape == (B, *out_hw, 3)
  assert y.dtype == jnp.float32
  assert bool(jnp.all((y >= 0) & (y <= 1)))
  assert float(jnp.std(y)) > 1e-3  # not a constant image


def test_a_label_map_at_another_resolution_fails_clearly():
  model = crn.CRN(features=(8, 8), base_height=4, base_width=8)
  with pytest.raises(ValueError, match=r"2 modules from a 4x8 base outputs 8x16 .* label map is 16x32"):
    model.init(key(0), jnp.zeros((1, 16, 32, CLASSES)))
  with pytest.raises(ValueError, match="same size, but x is 16x32 and y is 8x16"):
    registry.make_model(crn_config(noise_channels=0), registry.ModelIO((16, 32, CLASSES), (8, 16, 3)))
  with pytest.raises(ValueError, match="outputs 16x32.*label map is 8x16"):
    registry.make_model(crn_config(noise_channels=0), registry.ModelIO((8, 16, CLASSES), (8, 16, 3)))


def test_bfloat16_computation_still_returns_float32_images_in_range():
  model = crn.CRN(features=(8, 4), dtype=jnp.bfloat16)
  _, y = init_apply(model, label_map(key(1), (8, 16)))
  assert y.dtype == jnp.float32 and y.shape == (B, 8, 16, 3)
  assert bool(jnp.all((y >= 0) & (y <= 1)))


def test_layer_norm_statistics_are_over_height_width_and_channels_per_example():
  module = crn.RefinementModule(features=6)
  h = jax.random.normal(key(0), (2, 4, 8, 3)) * jnp.arange(1.0, 9.0)[None, None, :, None]
  variables = jax.jit(module.init)(key(1), h)
  _, state = module.apply(variables, h, capture_intermediates=True)
  normed = state["intermediates"]["norm1"]["__call__"][0]  # scale 1, offset 0 at init
  np.testing.assert_allclose(jnp.mean(normed, axis=(1, 2, 3)), 0.0, atol=1e-5)
  np.testing.assert_allclose(jnp.var(normed, axis=(1, 2, 3)), 1.0, atol=1e-3)
  # Not normalised per pixel: pixels keep different means over their channels.
  assert float(jnp.std(jnp.mean(normed, axis=-1))) > 0.1
  assert variables["params"]["norm1"]["scale"].shape == (6,)


# ---------------------------------------------------------------- the label map reaches every module


def test_every_module_reads_the_label_map_and_noise_plus_the_previous_features():
  features, d = (8, 6, 4), 2
  model = crn.CRN(features=features, noise_channels=d)
  x = label_map(key(1), (16, 32))
  z = jax.random.normal(key(2), (B, 16, 32, d))
  variables, y = init_apply(model, x, z)
  params = variables["params"]
  assert params["M0"]["conv1"]["kernel"].shape == (3, 3, CLASSES + d, 8)
  assert params["M1"]["conv1"]["kernel"].shape == (3, 3, CLASSES + d + 8, 6)
  assert params["M2"]["conv1"]["kernel"].shape == (3, 3, CLASSES + d + 6, 4)
  assert params["M2"]["conv2"]["kernel"].shape == (3, 3, 4, 4)
  assert params["to_image"]["kernel"].shape == (1, 1, 4, 3)
  # Changing the label map alone (same z) changes the image.
  other = jax.jit(model.apply)(variables, jnp.roll(x, 1, axis=-1), z)
  assert float(jnp.max(jnp.abs(other - y))) > 1e-3


def test_every_module_uses_its_label_map_input():
  """Zeroing M_i's weights on its label-map input channels (the first C) changes the output, for every i."""
  model = crn.CRN(features=(8, 6, 4))
  x = label_map(key(1), (16, 32))
  variables, y = init_apply(model, x)
  apply = jax.jit(model.apply)
  for i in range(3):
    params = jax.tree.map(lambda a: a, variables["params"])
    kernel = params[f"M{i}"]["conv1"]["kernel"]
    params[f"M{i}"]["conv1"]["kernel"] = kernel.at[:, :, :CLASSES].set(0.0)
    y_cut = apply({"params": params}, x)
    assert float(jnp.max(jnp.abs(y_cut - y))) > 1e-4, f"M{i}"


# ---------------------------------------------------------------- noise (§3.3.2)


def test_noise_channels_make_the_output_depend_on_the_code():
  model = crn.CRN(features=(8, 8), noise_channels=3)
  x = label_map(key(1), (8, 16))
  assert model.code_shape(x.shape[1:]) == (8, 16, 3)
  z1, z2 = jax.random.normal(key(2), (2, B, 8, 16, 3))
  variables, y1 = init_apply(model, x, z1)
  apply = jax.jit(model.apply)
  y2 = apply(variables, x, z2)
  assert y1.shape == y2.shape == (B, 8, 16, 3)
  assert float(jnp.max(jnp.abs(y1 - y2))) > 1e-3
  # A vector code is broadcast over space (registry.concat_code).
  v = jax.random.normal(key(3), (B, 3))
  np.testing.assert_allclose(apply(variables, x, v),
                             apply(variables, x, jnp.broadcast_to(v[:, None, None], (B, 8, 16, 3))),
                             atol=1e-6)
  with pytest.raises(ValueError, match=r"takes a code z of shape \[B, 8, 16, 3\].*got none"):
    model.apply(variables, x)
  with pytest.raises(ValueError, match=r"\[B, 8, 16, 3\].*got \[4, 8, 3\]"):
    model.apply(variables, x, z1[:, :4, :8])


def test_without_noise_channels_the_code_is_ignored():
  model = crn.CRN(features=(8, 8), noise_channels=0)
  x = label_map(key(1), (8, 16))
  assert model.code_shape(x.shape[1:]) == ()
  variables, y = init_apply(model, x)
  z = jax.random.normal(key(2), (B, 8, 16, 3))
  np.testing.assert_array_equal(jax.jit(model.apply)(variables, x, z), y)
  assert variables["params"]["M0"]["conv1"]["kernel"].shape[2] == CLASSES


def test_the_noise_encoder_maps_a_small_code_to_d_channels_at_the_layout_resolution():
  d, e = 3, 2
  model = crn.CRN(features=(8, 8, 4), noise_channels=d, noise_encoder=True, encoder_features=6,
                  noise_encoder_input_channels=e)
  x = label_map(key(1), (16, 32))
  assert model.code_shape(x.shape[1:]) == (4, 8, e)
  z1, z2 = jax.random.normal(key(2), (2, B, 4, 8, e))
  variables = jax.jit(model.init)(key(0), x, z1)
  apply_sown = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))
  y1, state = apply_sown(variables, x, z1)
  (z_hat,) = state["intermediates"]["noise_encoder_output"]
  assert z_hat.shape == (B, 16, 32, d)
  assert float(jnp.std(z_hat)) > 1e-3
  enc = variables["params"]["noise_encoder"]
  assert enc["conv1"]["kernel"].shape == (3, 3, CLASSES + e, 6)
  assert enc["conv2"]["kernel"].shape == (3, 3, 6, 6)
  assert enc["conv3"]["kernel"].shape == (3, 3, 6, d)
  # The modules see concat(L, z_hat): d extra channels, as with plain noise channels.
  assert variables["params"]["M1"]["conv1"]["kernel"].shape == (3, 3, CLASSES + d + 8, 8)
  y2 = jax.jit(model.apply)(variables, x, z2)
  assert y1.shape == (B, 16, 32, 3)
  assert float(jnp.max(jnp.abs(y1 - y2))) > 1e-3
  # The encoder's output also depends on the label map (it reads L^, not z alone).
  _, state_other = apply_sown(variables, jnp.roll(x, 1, axis=-1), z1)
  assert float(jnp.max(jnp.abs(state_other["intermediates"]["noise_encoder_output"][0] - z_hat))) > 1e-4
  with pytest.raises(ValueError, match=r"\[B, 4, 8, 2\].*got \[16, 32, 3\]"):
    model.apply(variables, x, jnp.zeros((B, 16, 32, d)))


def test_a_vector_code_is_one_draw_for_the_whole_image():
  """noise_encoder_code='vector' (the layouts default): z is [B, e], the same e numbers at every cell of M_0's grid.

  It equals the spatial network fed that vector at every cell, and changing any
  one of its e entries moves pixels far apart (one global appearance).
  """
  d, e = 3, 2
  vector = crn.CRN(features=(8, 8), noise_channels=d, noise_encoder=True, encoder_features=6,
                   noise_encoder_input_channels=e, noise_encoder_code="vector")
  spatial = vector.clone(noise_encoder_code="spatial")
  x = label_map(key(1), (8, 16))
  assert vector.code_shape(x.shape[1:]) == (e,)
  z = jax.random.normal(key(2), (B, e))
  variables, y = init_apply(vector, x, z)
  tiled = jnp.broadcast_to(z[:, None, None, :], (B, 4, 8, e))
  np.testing.assert_array_equal(jax.jit(spatial.apply)(variables, x, tiled), y)
  y_moved = jax.jit(vector.apply)(variables, x, z.at[:, 0].add(1.0))
  change = jnp.abs(y_moved - y).mean(axis=-1)
  assert float(change[:, :2, :4].min()) > 0 and float(change[:, -2:, -4:].min()) > 0  # opposite corners


def test_a_full_resolution_code_reaches_each_pixel():
  """noise_encoder_code='full' (cimle_srim_ijcv §5.2.5): z is [B, H, W, e] and the encoder runs at (H, W).

  On a label map of one class and a zero code, the encoded noise is the same at
  two interior pixels p and q; setting the code at p alone makes them differ,
  and changes z_hat only within the 7 x 7 receptive field of the encoder's three
  3x3 convs around p. p and q lie 5 pixels apart in one 8 x 8 cell of M_0's
  4 x 8 grid: a code pooled to M_0's resolution ('spatial') would move q too.
  """
  d, e, hw = 3, 2, (32, 64)
  model = crn.CRN(features=(8, 8, 8, 8), noise_channels=d, noise_encoder=True, encoder_features=6,
                  noise_encoder_input_channels=e, noise_encoder_code="full")
  x = jax.nn.one_hot(jnp.zeros((B, *hw), jnp.int32), CLASSES)  # every pixel class 0
  assert model.code_shape(x.shape[1:]) == (*hw, e)
  assert crn.code_shape(crn_config(noise_encoder=True, noise_encoder_code="full"), (16, 32, CLASSES)) == (16, 32, 3)
  z0 = jnp.zeros((B, *hw, e))
  p, q = (9, 9), (14, 14)  # one M_0 cell: rows and columns 8..15
  z1 = z0.at[:, p[0], p[1], :].set(1.0)
  variables = jax.jit(model.init)(key(0), x, z0)
  assert variables["params"]["noise_encoder"]["conv1"]["kernel"].shape == (3, 3, CLASSES + e, 6)
  apply_sown = jax.jit(functools.partial(model.apply, mutable=["intermediates"]))
  y0, state0 = apply_sown(variables, x, z0)
  y1, state1 = apply_sown(variables, x, z1)
  assert y0.shape == y1.shape == (B, *hw, 3)
  assert float(jnp.max(jnp.abs(y1 - y0))) > 1e-4
  (z_hat0,) = state0["intermediates"]["noise_encoder_output"]
  (z_hat1,) = state1["intermediates"]["noise_encoder_output"]
  assert z_hat0.shape == (B, *hw, d)
  changed = np.asarray(jnp.any(z_hat1 != z_hat0, axis=(0, 3)))
  assert changed[p] and not changed[q]
  window = np.zeros(hw, bool)
  window[p[0] - 3:p[0] + 4, p[1] - 3:p[1] + 4] = True
  assert not np.any(changed & ~window)
  np.testing.assert_allclose(z_hat0[:, p[0], p[1]], z_hat0[:, q[0], q[1]], atol=1e-6)
  assert float(jnp.min(jnp.max(jnp.abs(z_hat1[:, p[0], p[1]] - z_hat1[:, q[0], q[1]]), axis=-1))) > 1e-3


def test_the_noise_encoder_resizes_nothing_at_the_label_maps_resolution():
  """A full-resolution code: the encoded noise is conv3's output itself, not a resize of it."""
  encoder = crn.NoiseEncoder(features=4, out_channels=2)
  x = label_map(key(1), (8, 16))
  z = jax.random.normal(key(2), (B, 8, 16, 3))
  variables = jax.jit(encoder.init)(key(0), x, z)
  z_hat, state = encoder.apply(variables, x, z, capture_intermediates=True)
  np.testing.assert_array_equal(z_hat, state["intermediates"]["conv3"]["__call__"][0])
  assert crn._resize(x, (8, 16)) is x  # pylint: disable=protected-access
  # And jax.image.resize to the same size would be the identity anyway (it skips unscaled dimensions).
  np.testing.assert_array_equal(jax.image.resize(z, z.shape, "bilinear"), z)


def test_a_full_code_of_another_shape_fails_naming_the_expected_shape():
  model = crn.CRN(features=(8, 8), noise_channels=3, noise_encoder=True, encoder_features=6,
                  noise_encoder_input_channels=2, noise_encoder_code="full")
  x = label_map(key(1), (8, 16))
  with pytest.raises(ValueError, match=r"noise_encoder_code='full' takes a code z of shape \[B, 8, 16, 2\].*"
                                       r"got \[4, 8, 2\]"):
    model.init(key(0), x, jnp.zeros((B, 4, 8, 2)))  # a code at M_0's resolution ('spatial')
  with pytest.raises(ValueError, match=r"\[B, 8, 16, 2\].*got \[2\]"):
    model.init(key(0), x, jnp.zeros((B, 2)))  # a vector
  cfg = crn_config(noise_encoder=True, noise_encoder_code="full")
  with pytest.raises(ValueError, match=r"\[B, 16, 32, 3\].*got \[4, 8, 3\]"):
    registry.make_model(cfg, registry.ModelIO((16, 32, CLASSES), (16, 32, 3), code_shape=(4, 8, 3)))
  with pytest.raises(ValueError, match=r"noise_encoder_code must be one of 'full', 'spatial', 'vector', got 'ful'"):
    model.clone(noise_encoder_code="ful").code_shape(x.shape[1:])


def test_the_noise_encoder_is_linear_in_its_last_layer_and_upsamples_bilinearly():
  encoder = crn.NoiseEncoder(features=4, out_channels=2)
  x = label_map(key(1), (8, 16))
  z = jax.random.normal(key(2), (B, 4, 8, 3))
  variables = jax.jit(encoder.init)(key(0), x, z)
  z_hat = encoder.apply(variables, x, z)
  _, state = encoder.apply(variables, x, z, capture_intermediates=True)
  low = state["intermediates"]["conv3"]["__call__"][0]
  assert low.shape == (B, 4, 8, 2) and float(jnp.min(low)) < 0  # no activation after conv3
  np.testing.assert_allclose(z_hat, jax.image.resize(low, (B, 8, 16, 2), "bilinear"), atol=1e-6)


def test_an_output_gain_squashes_the_encoded_noise_by_tanh():
  """noise_encoder_output_gain g > 0: z_hat = tanh(g * the linear output), bounded, same parameters."""
  linear = crn.NoiseEncoder(features=4, out_channels=2)
  x = label_map(key(1), (8, 16))
  z = 3.0 * jax.random.normal(key(2), (B, 4, 8, 3))
  variables = jax.jit(linear.init)(key(0), x, z)
  squashed = crn.NoiseEncoder(features=4, out_channels=2, output_gain=4.0)
  z_lin, z_sq = linear.apply(variables, x, z), squashed.apply(variables, x, z)
  assert float(jnp.max(jnp.abs(z_lin))) > 1.0  # the linear output is unbounded
  assert float(jnp.max(jnp.abs(z_sq))) <= 1.0
  # tanh runs at M_0's resolution, before the bilinear upsampling.
  low = linear.apply(variables, x, z, capture_intermediates=True)[1]["intermediates"]["conv3"]["__call__"][0]
  np.testing.assert_allclose(z_sq, jax.image.resize(jnp.tanh(4.0 * low), (B, 8, 16, 2), "bilinear"), atol=1e-6)
  # Far out along a ray, the squashed output stops changing; the linear one keeps growing with |z|.
  far = lambda enc, r: enc.apply(variables, x, r * z)
  assert float(jnp.abs(far(squashed, 40.0) - far(squashed, 20.0)).mean()) < 0.05
  assert float(jnp.abs(far(linear, 40.0) - far(linear, 20.0)).mean()) > 1.0
  # The config key reaches the model (configs/layout_imle.py sets 4).
  built = registry.make_model(crn_config(noise_encoder=True, noise_encoder_output_gain=4.0),
                              registry.ModelIO((16, 32, CLASSES), (16, 32, 3), code_shape=(4, 8, 3)))
  assert built.noise_encoder_output_gain == 4.0
  with pytest.raises(ValueError, match="noise_encoder_output_gain must be >= 0"):
    model = crn.CRN(features=(8,), noise_channels=2, noise_encoder=True, noise_encoder_output_gain=-1.0)
    model.init(key(0), label_map(key(1), (4, 8)), jnp.zeros((B, 4, 8, 4)))


# ---------------------------------------------------------------- k outputs (Chen & Koltun's baseline)


def test_k_outputs_are_k_different_images():
  model = crn.CRN(features=(8, 8), num_outputs=4)
  x = label_map(key(1), (8, 16))
  variables, y = init_apply(model, x)
  assert y.shape == (B, 4, 8, 16, 3)
  assert bool(jnp.all((y >= 0) & (y <= 1)))
  assert variables["params"]["to_image"]["kernel"].shape == (1, 1, 8, 12)
  for a in range(4):
    for b in range(a + 1, 4):
      assert float(jnp.max(jnp.abs(y[:, a] - y[:, b]))) > 1e-3, (a, b)
  # Output j is channels [3j, 3j + 3) of the 1x1 conv.
  single = crn.CRN(features=(8, 8), num_outputs=1)
  params = jax.tree.map(lambda a: a, variables["params"])
  params["to_image"] = {"kernel": params["to_image"]["kernel"][..., 6:9], "bias": params["to_image"]["bias"][6:9]}
  np.testing.assert_allclose(jax.jit(single.apply)({"params": params}, x), y[:, 2], atol=1e-6)


# ---------------------------------------------------------------- registry


def test_the_registry_builds_crn_by_name_and_checks_the_code_shape():
  assert "crn" in registry.model_names(registry.GENERATOR)
  x_shape, y_shape = (16, 32, CLASSES), (16, 32, 3)
  cfg = crn_config()
  model = registry.make_model(cfg, registry.ModelIO(x_shape, y_shape, code_shape=(16, 32, 2)))
  assert isinstance(model, crn.CRN)
  assert (model.features, model.out_channels, model.noise_channels, model.num_outputs) == ((8, 8, 4), 3, 2, 1)
  assert crn.code_shape(cfg, x_shape) == (16, 32, 2)
  x = label_map(key(1), (16, 32))
  _, y = init_apply(model, x, jnp.zeros((B, 16, 32, 2)))
  assert y.shape == (B, 16, 32, 3)

  enc_cfg = crn_config(noise_encoder=True)
  assert crn.code_shape(enc_cfg, x_shape) == (4, 8, 3)
  model = registry.make_model(enc_cfg, registry.ModelIO(x_shape, y_shape, code_shape=(4, 8, 3)))
  assert model.noise_encoder and model.encoder_features == 6 and model.noise_encoder_input_channels == 3
  with pytest.raises(ValueError, match=r"takes a code z of shape \[B, 4, 8, 3\].*got \[16, 32, 2\]"):
    registry.make_model(enc_cfg, registry.ModelIO(x_shape, y_shape, code_shape=(16, 32, 2)))
  with pytest.raises(ValueError, match=r"\[B, 16, 32, 2\].*got none"):
    registry.make_model(cfg, registry.ModelIO(x_shape, y_shape))
  with pytest.raises(ValueError, match="noise_channels=0 takes no code"):
    registry.make_model(crn_config(noise_channels=0), registry.ModelIO(x_shape, y_shape, code_shape=(16, 32, 2)))
  plain = registry.make_model(crn_config(noise_channels=0, num_outputs=9), registry.ModelIO(x_shape, y_shape))
  assert plain.num_outputs == 9 and crn.code_shape(crn_config(noise_channels=0), x_shape) == ()


# ---------------------------------------------------------------- the paper's network


def test_parameter_count_of_the_paper_network_at_256x512():
  """§3.3.1 widths (M0..M6 for 256 x 512), 20 classes + 10 noise channels (§4.2), RGB out."""
  classes, d, features = 20, 10, crn.PAPER_FEATURES[:7]
  assert features == (1024, 1024, 1024, 1024, 1024, 512, 512)
  model = crn.CRN(out_channels=3, features=features, noise_channels=d)
  x = jax.ShapeDtypeStruct((1, 256, 512, classes), jnp.float32)
  z = jax.ShapeDtypeStruct((1, 256, 512, d), jnp.float32)
  shapes = jax.eval_shape(model.init, key(0), x, z)["params"]
  count = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(shapes))

  def module(c_in, c_out):  # two 3x3 convs (kernel + bias), two layer norms (scale + offset)
    return (9 * c_in * c_out + c_out) + 2 * c_out + (9 * c_out * c_out + c_out) + 2 * c_out

  label = classes + d
  expected = module(label, 1024) + sum(module(label + f_prev, f) for f_prev, f in zip(features, features[1:]))
  expected += 512 * 3 + 3  # the 1x1 conv to RGB
  # By hand: M0 9,719,808; M1..M4 4 x 19,156,992; M5 7,219,200; M6 4,859,904; 1x1 conv 1,539.
  assert expected == 9_719_808 + 4 * 19_156_992 + 7_219_200 + 4_859_904 + 1_539 == 98_428_419
  assert count == expected
  assert shapes["M5"]["conv1"]["kernel"].shape == (3, 3, label + 1024, 512)


def test_the_gta5_and_cityscapes_configs_use_the_ijcv_noise_encoder():
  """configs/layout_imle.py:gta5 (and :cityscapes): cimle_srim_ijcv §5.2.5's 256x512x10 code, d = 10, width 100."""
  spec = importlib.util.spec_from_file_location("layout_imle_config", REPO / "configs" / "layout_imle.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  x_shape, classes = (256, 512, 20), 20  # data/street_layouts.py: 19 classes + void
  for variant in ("gta5", "cityscapes"):
    m = module.get_config(variant).model
    assert (m.noise_encoder, m.noise_encoder_code, m.noise_encoder_input_channels, m.noise_channels,
            m.encoder_features, m.noise_encoder_output_gain) == (True, "full", 10, 10, 100, 0.0), variant
    assert crn.code_shape(m, x_shape) == (256, 512, 10)
  model = registry.make_model(m, registry.ModelIO(x_shape, (256, 512, 3), code_shape=(256, 512, 10)))
  shapes = jax.eval_shape(model.init, key(0), jax.ShapeDtypeStruct((1, *x_shape), jnp.float32),
                          jax.ShapeDtypeStruct((1, 256, 512, 10), jnp.float32))["params"]
  encoder = shapes["noise_encoder"]
  assert encoder["conv1"]["kernel"].shape == (3, 3, classes + 10, 100)
  assert encoder["conv2"]["kernel"].shape == (3, 3, 100, 100)
  assert encoder["conv3"]["kernel"].shape == (3, 3, 100, 10)
  assert shapes["M0"]["conv1"]["kernel"].shape == (3, 3, classes + 10, 1024)
