"""pix2pix's U-Net and PatchGAN (Isola et al., 2017): shapes, dropout, skips, norms, receptive field, registry."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from multimodal_jax.models import pix2pix
from multimodal_jax.models import registry

B, CLASSES = 2, 5


def key(seed):
  # RBG keys: threefry's random bits compile ~5x slower on CPU, and init dominates these tests.
  return jax.random.key(seed, impl="rbg")


def label_map(rng, hw, classes=CLASSES, batch=B):
  return jax.nn.one_hot(jax.random.randint(rng, (batch, *hw), 0, classes), classes)


def num_params(tree):
  return sum(int(np.prod(a.shape)) for a in jax.tree.leaves(tree))


def unet_config(**overrides):
  cfg = ml_collections.ConfigDict(dict(name="unet", features=4, num_downs=3, norm="instance", dropout_rate=0.5))
  cfg.update(overrides)
  cfg.lock()
  return cfg


def patchgan_config(**overrides):
  cfg = ml_collections.ConfigDict(dict(name="patchgan", features=4, num_layers=2, norm="instance"))
  cfg.update(overrides)
  cfg.lock()
  return cfg


# ---------------------------------------------------------------- U-Net shapes


def test_the_local_unet_maps_32x64_layouts_to_images_in_the_unit_range():
  model = pix2pix.UNet(out_channels=3, features=4, num_downs=5)
  x = label_map(key(1), (32, 64))
  variables = jax.jit(functools.partial(model.init, train=False))(key(0), x)
  y = jax.jit(functools.partial(model.apply, train=False))(variables, x)
  assert y.shape == (B, 32, 64, 3) and y.dtype == jnp.float32
  assert bool(jnp.all((y >= 0) & (y <= 1)))
  assert float(jnp.std(y)) > 1e-4  # not a constant image
  params = variables["params"]
  assert set(variables) == {"params"}  # no running statistics
  # Encoder widths ngf * min(2^i, 8); innermost decoder reads e4 alone, the others concat(d, skip).
  assert [params[f"down{i}"]["kernel"].shape[-1] for i in range(5)] == [4, 8, 16, 32, 32]
  assert params["down0"]["kernel"].shape == (4, 4, CLASSES, 4)
  assert params["up4"]["kernel"].shape == (4, 4, 32, 32)
  assert params["up3"]["kernel"].shape == (4, 4, 64, 16)
  assert params["up1"]["kernel"].shape == (4, 4, 16, 4)
  assert params["up0"]["kernel"].shape == (4, 4, 8, 3)
  # No norm on the first and the innermost encoder levels (they keep their bias), nor on the output.
  assert "bias" in params["down0"] and "bias" in params["down4"] and "bias" in params["up0"]
  assert "down0_norm" not in params and "down4_norm" not in params and "down3_norm" in params
  assert "bias" not in params["down3"] and "bias" not in params["up1"]


def test_the_paper_unet_256_has_the_reference_widths_and_parameter_count():
  """U-Net 256 (num_downs 8, ngf 64), RGB to RGB, shapes only (jax.eval_shape)."""
  model = pix2pix.UNet(out_channels=3, features=64, num_downs=8)
  x = jax.ShapeDtypeStruct((1, 256, 256, 3), jnp.float32)
  variables = jax.eval_shape(model.init, key(0), x)
  y = jax.eval_shape(functools.partial(model.apply, rngs={"dropout": key(1)}), variables, x)
  assert y.shape == (1, 256, 256, 3)
  params = variables["params"]
  assert [params[f"down{i}"]["kernel"].shape[-1] for i in range(8)] == [64, 128, 256, 512, 512, 512, 512, 512]
  assert [params[f"up{i}"]["kernel"].shape[2:] for i in range(7, -1, -1)] == [
      (512, 512), (1024, 512), (1024, 512), (1024, 512), (1024, 256), (512, 128), (256, 64), (128, 3)]
  # The reference (batch norm, which has a scale and an offset) by hand:
  convs = 16 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 4 * 512 * 512)  # encoder, no biases
  convs += 16 * (512 * 512 + 3 * 1024 * 512 + 1024 * 256 + 512 * 128 + 256 * 64 + 128 * 3) + 3  # decoder
  norms = 2 * (128 + 256 + 4 * 512) + 2 * (4 * 512 + 256 + 128 + 64)
  assert convs + norms == 54_413_955
  # We keep the biases of the first and the innermost encoder convs (no norm follows them).
  assert num_params(params) == 54_413_955 + 64 + 512


@pytest.mark.parametrize("hw", [(24, 64), (32, 40), (30, 30)])
def test_sizes_not_divisible_by_two_to_the_num_downs_fail_clearly(hw):
  model = pix2pix.UNet(features=4, num_downs=4)
  with pytest.raises(ValueError, match=rf"divisible by 16, but the input is {hw[0]}x{hw[1]}"):
    model.init(key(0), jnp.zeros((1, *hw, CLASSES)), train=False)
  with pytest.raises(ValueError, match=rf"divisible by 16, but the input is {hw[0]}x{hw[1]}"):
    registry.make_model(unet_config(num_downs=4), registry.ModelIO((*hw, CLASSES), (*hw, 3)))


def test_a_code_is_concatenated_to_the_input_channels():
  model = pix2pix.UNet(features=4, num_downs=3, dropout_rate=0.0)
  x = label_map(key(1), (8, 16))
  z = jax.random.normal(key(2), (B, 8, 16, 1))
  variables = jax.jit(model.init)(key(0), x, z)
  assert variables["params"]["down0"]["kernel"].shape == (4, 4, CLASSES + 1, 4)
  apply = jax.jit(model.apply)
  y = apply(variables, x, z)
  assert float(jnp.max(jnp.abs(apply(variables, x, 2 * z) - y))) > 1e-6
  np.testing.assert_array_equal(y, apply(variables, jnp.concatenate([x, z], -1)))
  v = jax.random.normal(key(3), (B, 1))
  np.testing.assert_allclose(apply(variables, x, v), apply(variables, x, jnp.broadcast_to(v[:, None, None], z.shape)),
                             atol=1e-6)


# ---------------------------------------------------------------- dropout, pix2pix's noise


def test_dropout_is_on_in_train_mode_and_off_otherwise():
  model = pix2pix.UNet(features=4, num_downs=3)
  x = label_map(key(1), (8, 16))
  variables = jax.jit(functools.partial(model.init, train=False))(key(0), x)
  sample = jax.jit(lambda v, x, rng: model.apply(v, x, rngs={"dropout": rng}))  # train=True by default
  y1, y2, y1_again = sample(variables, x, key(5)), sample(variables, x, key(6)), sample(variables, x, key(5))
  assert float(jnp.max(jnp.abs(y1 - y2))) > 1e-5
  np.testing.assert_array_equal(y1, y1_again)
  deterministic = jax.jit(functools.partial(model.apply, train=False))
  np.testing.assert_array_equal(deterministic(variables, x), deterministic(variables, x))  # no rng needed
  assert float(jnp.max(jnp.abs(deterministic(variables, x) - y1))) > 1e-5
  with pytest.raises(Exception, match="dropout"):  # train mode draws from the 'dropout' rng
    model.apply(variables, x)
  no_dropout = pix2pix.UNet(features=4, num_downs=3, dropout_rate=0.0)
  np.testing.assert_allclose(no_dropout.apply(variables, x), deterministic(variables, x), atol=1e-6)


def test_dropout_sits_in_the_three_decoder_levels_nearest_the_bottleneck():
  """Paper appendix (CD512-CD1024-CD1024) and its Torch code: decoder levels n-1, n-2, n-3."""
  num_downs, levels = 5, [4, 3, 2]
  model = pix2pix.UNet(features=4, num_downs=num_downs)
  x = label_map(key(1), (2**num_downs, 2**num_downs))
  variables = jax.jit(functools.partial(model.init, train=False))(key(0), x)
  apply = jax.jit(functools.partial(model.apply, capture_intermediates=lambda m, _: isinstance(m, nn.Dropout)))
  _, state = apply(variables, x, rngs={"dropout": key(2)})
  dropped = sorted(int(name[len("Dropout_"):]) for name in state["intermediates"] if name.startswith("Dropout"))
  assert len(dropped) == len(levels)
  for level, name in zip(levels, [f"Dropout_{i}" for i in dropped]):
    out = state["intermediates"][name]["__call__"][0]
    assert out.shape[1] == 2**(num_downs - level) and out.shape[-1] == 4 * min(2**(level - 1), 8)
    assert float(jnp.mean(out == 0)) > 0.3  # half the units dropped


# ---------------------------------------------------------------- skip connections


def test_the_first_skip_alone_carries_the_input_to_the_output_locally():
  """Cut up0's weights on the decoder path: what is left is x -> down0 -> (skip) -> up0, which is local."""
  model = pix2pix.UNet(features=4, num_downs=3, dropout_rate=0.0)
  x = label_map(key(1), (16, 16))
  variables = jax.jit(model.init)(key(0), x)
  params = jax.tree.map(lambda a: a, variables["params"])
  # up0 reads concat(decoder level 1's output, skip from down0): 4 + 4 channels.
  assert params["up0"]["kernel"].shape == (4, 4, 8, 3)
  params["up0"]["kernel"] = params["up0"]["kernel"].at[:, :, :4].set(0.0)
  apply = jax.jit(model.apply)
  y = apply({"params": params}, x)
  x_other = x.at[:, 8, 8].set(jnp.roll(x[:, 8, 8], 1, axis=-1))
  changed = jnp.max(jnp.abs(apply({"params": params}, x_other) - y), axis=(0, 3)) > 0
  assert bool(changed[8, 8])
  rows, cols = np.nonzero(np.asarray(changed))
  assert rows.min() >= 5 and rows.max() <= 11 and cols.min() >= 5 and cols.max() <= 11  # 4x4 conv, 4x4 up
  # Cutting the skip half instead leaves an output that still depends on the input (through the bottleneck).
  params["up0"]["kernel"] = variables["params"]["up0"]["kernel"].at[:, :, 4:].set(0.0)
  assert float(jnp.max(jnp.abs(apply({"params": params}, x_other) - apply({"params": params}, x)))) > 0


# ---------------------------------------------------------------- normalisation


def test_instance_norm_keeps_examples_independent_and_batch_norm_does_not():
  x = label_map(key(1), (8, 16), batch=3)
  for norm, independent in [("instance", True), ("batch", False)]:
    model = pix2pix.UNet(features=4, num_downs=3, norm=norm, dropout_rate=0.0)
    variables = jax.jit(model.init)(key(0), x)
    assert set(variables) == {"params"}
    apply = jax.jit(model.apply)
    y = apply(variables, x)
    alone = apply(variables, x[:1])
    assert np.allclose(y[:1], alone, atol=1e-5) == independent, norm
  with pytest.raises(ValueError, match=r"Unknown pix2pix norm 'layer'; valid: \['instance', 'batch', 'none'\]"):
    pix2pix.UNet(norm="layer", num_downs=3).init(key(0), x, train=False)


def test_normalize_uses_the_current_statistics_over_the_chosen_axes():
  h = jax.random.normal(key(0), (2, 4, 8, 3)) * jnp.arange(1.0, 3.0)[:, None, None, None] + 5.0
  for kind, axes in [("instance", (1, 2)), ("batch", (0, 1, 2))]:
    module = pix2pix.Normalize(kind)
    variables = module.init(key(1), h)
    out = module.apply(variables, h)
    np.testing.assert_allclose(jnp.mean(out, axis=axes), 0.0, atol=1e-5)
    np.testing.assert_allclose(jnp.var(out, axis=axes), 1.0, atol=1e-3)
    assert jax.tree.map(jnp.shape, variables) == {"params": {"norm": {"scale": (3,), "bias": (3,)}}}


# ---------------------------------------------------------------- PatchGAN


def test_the_paper_patchgan_has_the_reference_widths_output_and_parameter_count():
  model = pix2pix.PatchGAN()  # ndf 64, 3 layers: the 70 x 70 PatchGAN
  assert [f for f, _, _ in model.layers] == [64, 128, 256, 512, 1]
  assert [s for _, s, _ in model.layers] == [2, 2, 2, 1, 1]
  xy = jax.ShapeDtypeStruct((1, 256, 256, 6), jnp.float32)
  variables = jax.eval_shape(model.init, key(0), xy)
  assert jax.eval_shape(model.apply, variables, xy).shape == (1, 30, 30, 1)
  expected = 16 * (6 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 1) + 64 + 1 + 2 * (128 + 256 + 512)
  assert num_params(variables) == expected == 2_768_705


@pytest.mark.parametrize("num_layers,hw,out_hw", [(1, (32, 64), (14, 30)), (2, (32, 64), (6, 14)),
                                                  (3, (32, 64), (2, 6)), (3, (36, 36), (2, 2))])
def test_patchgan_outputs_one_logit_per_patch(num_layers, hw, out_hw):
  model = pix2pix.PatchGAN(features=4, num_layers=num_layers)
  x = jax.ShapeDtypeStruct((B, *hw, CLASSES), jnp.float32)
  y = jax.ShapeDtypeStruct((B, *hw, 3), jnp.float32)
  variables = jax.eval_shape(model.init, key(0), x, y)
  logits = jax.eval_shape(model.apply, variables, x, y)
  assert logits.shape == (B, *out_hw, 1) and logits.dtype == jnp.float32
  assert (model.output_size(hw[0]), model.output_size(hw[1])) == out_hw
  assert variables["params"]["conv0"]["kernel"].shape == (4, 4, CLASSES + 3, 4)


def test_a_too_small_input_for_the_patchgan_fails_clearly():
  with pytest.raises(ValueError, match=r"num_layers=3 outputs a 0x2 map for 16x32 inputs"):
    pix2pix.PatchGAN(features=4).init(key(0), jnp.zeros((1, 16, 32, 4)))
  with pytest.raises(ValueError, match="num_layers >= 1"):
    pix2pix.receptive_field(0)


def receptive_field_of(layers):
  """(receptive field, offset) of one output of a stack of 4x4 convs with padding 1, from the last layer back.

  Output i of the stack reads input rows i * prod(strides) - offset + [0, receptive field): the recursion
  r <- s r + k - s, offset <- s offset + padding.
  """
  r, offset = 1, 0
  for _, stride, _ in reversed(layers):
    r, offset = stride * r + 4 - stride, stride * offset + 1
  return r, offset


@pytest.mark.parametrize("num_layers,expected", [(1, 16), (2, 34), (3, 70), (4, 142), (5, 286)])
def test_receptive_field_from_the_layer_list(num_layers, expected):
  """The Torch code's table (16, 34, 70, 142, 286 for 1..5 layers)."""
  assert pix2pix.receptive_field(num_layers) == expected
  assert receptive_field_of(pix2pix.PatchGAN(num_layers=num_layers).layers)[0] == expected


@pytest.mark.parametrize("num_layers", [1, 2, 3])
def test_one_logit_depends_on_exactly_a_receptive_field_square_of_the_input(num_layers):
  """Without normalisation (whose statistics span the whole map), the gradient of one interior logit."""
  model = pix2pix.PatchGAN(features=4, num_layers=num_layers, norm="none")
  size, rf = 96, pix2pix.receptive_field(num_layers)
  _, offset = receptive_field_of(model.layers)
  stride = 2**num_layers
  xy = jax.random.normal(key(1), (1, size, size, 2))
  variables = jax.jit(model.init)(key(0), xy)
  out = model.output_size(size)
  centre = out // 2
  grad = jax.jit(jax.grad(lambda xy: model.apply(variables, xy)[0, centre, centre, 0]))(xy)
  support = np.asarray(jnp.max(jnp.abs(grad[0]), axis=-1) > 0)
  rows, cols = np.nonzero(support)
  assert rows.max() - rows.min() + 1 == rf and cols.max() - cols.min() + 1 == rf
  assert rows.min() == cols.min() == centre * stride - offset
  assert rows.min() > 0 and rows.max() < size - 1  # interior: not clipped by the border
  assert support[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
  # Perturbing one input pixel changes exactly the logits whose square holds it.
  logits = jax.jit(model.apply)(variables, xy)
  p = size // 2
  changed = np.asarray(jnp.abs(jax.jit(model.apply)(variables, xy.at[0, p, p].add(100.0)) - logits)[0, :, :, 0] > 0)
  holds = [i * stride - offset <= p < i * stride - offset + rf for i in range(out)]
  np.testing.assert_array_equal(changed, np.outer(holds, holds))


# ---------------------------------------------------------------- registry


def test_the_registry_builds_both_by_name():
  assert "unet" in registry.model_names(registry.GENERATOR)
  assert "patchgan" in registry.model_names(registry.DISCRIMINATOR)
  assert "patchgan" not in registry.model_names(registry.GENERATOR)
  io = registry.ModelIO((32, 64, CLASSES), (32, 64, 3), code_shape=(32, 64, 1))  # the diversity loss's noise
  unet = registry.make_model(unet_config(num_downs=5, dropout_rate=0.25, norm="batch"), io)
  assert isinstance(unet, pix2pix.UNet)
  assert (unet.out_channels, unet.features, unet.num_downs, unet.norm, unet.dropout_rate) == (3, 4, 5, "batch", 0.25)
  assert registry.code_shape(unet_config(), (32, 64, CLASSES)) is None  # the method chooses the code
  x = label_map(key(1), (32, 64))
  z = jnp.zeros((B, 32, 64, 1))
  variables = jax.jit(unet.init)(key(0), x, z)
  assert jax.jit(unet.apply)(variables, x, z, rngs={"dropout": key(2)}).shape == (B, 32, 64, 3)

  patchgan = registry.make_model(patchgan_config(), io)
  assert isinstance(patchgan, pix2pix.PatchGAN)
  assert (patchgan.features, patchgan.num_layers, patchgan.norm) == (4, 2, "instance")
  y = jax.random.uniform(key(3), (B, 32, 64, 3))
  variables = jax.jit(patchgan.init)(key(0), x, y)
  logits = jax.jit(patchgan.apply)(variables, x, y)  # D(x, y), or D on the concatenation
  assert logits.shape == (B, 6, 14, 1) and float(jnp.std(logits)) > 0
  np.testing.assert_allclose(jax.jit(patchgan.apply)(variables, jnp.concatenate([x, y], -1)), logits, atol=1e-6)

  with pytest.raises(ValueError, match="same size, but x is 32x64 and y is 64x128"):
    registry.make_model(unet_config(), registry.ModelIO((32, 64, CLASSES), (64, 128, 3)))
  with pytest.raises(ValueError, match=r"code z of shape \[B, D\] or \[B, 32, 64, c\].*\[8, 8, 1\]"):
    registry.make_model(unet_config(), registry.ModelIO((32, 64, CLASSES), (32, 64, 3), code_shape=(8, 8, 1)))
  with pytest.raises(ValueError, match="Unknown pix2pix norm 'batchnorm'"):
    registry.make_model(unet_config(norm="batchnorm"), io)
  with pytest.raises(ValueError, match="Unknown pix2pix norm 'batchnorm'"):
    registry.make_model(patchgan_config(norm="batchnorm"), io)
  with pytest.raises(ValueError, match="outputs a 0x0 map for 16x16 inputs"):
    registry.make_model(patchgan_config(num_layers=3), registry.ModelIO((16, 16, CLASSES), (16, 16, 3)))
