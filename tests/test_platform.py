"""The method platform: networks and state, named rngs, the model registry, prepared state."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import inference
from multimodal_jax import prepared as prepared_lib
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import common
from multimodal_jax.methods import imle
from multimodal_jax.models import registry as models
from test_train import load_config

SRIM = str(REPO / "configs" / "srim.py")


# ---------------------------------------------------------------- networks, state, rngs


class BatchNormDropoutNet(nn.Module):
  """Dense -> BatchNorm -> Dropout(0.5) -> Dense: both kinds of state a GAN generator has."""

  @nn.compact
  def __call__(self, x, train: bool):
    h = nn.Dense(16)(x)
    h = nn.BatchNorm(use_running_average=not train, momentum=0.5)(h)
    h = nn.Dropout(0.5, deterministic=not train)(h)
    return nn.Dense(1)(h)


def _bn_method_parts():
  net = BatchNormDropoutNet()
  x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 4)), jnp.float32)
  variables = net.init(jax.random.PRNGKey(0), x, train=False)
  tx = common.make_optimizer(load_config(SRIM)[0].optimizer, 10)
  state = common.create_state(rng=jax.random.PRNGKey(1), networks={"g": common.Network.create(variables, tx)})

  def step(state, batch):
    rngs = common.step_rngs(state.rng, state.step, "dropout")

    def loss_fn(params):
      y, stats = common.apply_network(net, state.networks["g"], batch["x"], params=params, train=True,
                                      update_batch_stats=True, rngs=rngs)
      return jnp.mean(y**2), (stats, y)

    (loss, (stats, y)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.networks["g"].params)
    return state.apply_gradients("g", grads, batch_stats=stats), {"loss": loss, "y": y}

  return net, state, step, {"x": x}


def test_a_step_updates_batch_stats_and_draws_dropout_from_the_step_rng():
  _, state, step, batch = _bn_method_parts()
  step = jax.jit(step)
  assert set(state.networks["g"].variables()) == {"params", "batch_stats"}
  after, metrics = step(state, batch)
  assert int(after.step) == 1
  before_mean = state.networks["g"].batch_stats["BatchNorm_0"]["mean"]
  after_mean = after.networks["g"].batch_stats["BatchNorm_0"]["mean"]
  assert not np.allclose(before_mean, after_mean), "BatchNorm statistics were not updated"
  assert not np.allclose(state.networks["g"].params["Dense_0"]["kernel"],
                         after.networks["g"].params["Dense_0"]["kernel"])
  # Dropout: the same (seed, step) -> the same mask; the next step -> another one.
  again, metrics_again = step(state, batch)
  np.testing.assert_array_equal(metrics["y"], metrics_again["y"])
  _, metrics_next = step(after.replace(networks=state.networks), batch)
  assert not np.allclose(metrics["y"], metrics_next["y"])


def test_apply_network_in_eval_mode_uses_running_statistics_and_no_dropout():
  net, state, _, batch = _bn_method_parts()
  y1, stats = common.apply_network(net, state.networks["g"], batch["x"], train=False)
  y2, _ = common.apply_network(net, state.networks["g"], batch["x"], train=False)
  np.testing.assert_array_equal(y1, y2)
  assert stats is state.networks["g"].batch_stats


def test_network_create_rejects_other_collections_and_counts_steps_only_when_asked():
  with pytest.raises(ValueError, match=r"'params' and 'batch_stats' only; got also \['cache'\]"):
    common.Network.create({"params": {}, "cache": {}}, common.make_optimizer(load_config(SRIM)[0].optimizer, 1))
  _, state, _, _ = _bn_method_parts()
  grads = jax.tree.map(jnp.ones_like, state.networks["g"].params)
  assert int(state.apply_gradients("g", grads, count_step=False).step) == 0
  assert int(state.apply_gradients("g", grads).step) == 1
  assert set(state.params) == {"g"}


def test_named_rng_streams_do_not_depend_on_the_other_names():
  base = jax.random.PRNGKey(3)
  alone = common.step_rngs(base, jnp.int32(5), "codes")["codes"]
  with_others = common.step_rngs(base, jnp.int32(5), "dropout", "codes", "noise")
  np.testing.assert_array_equal(jax.random.key_data(alone), jax.random.key_data(with_others["codes"]))
  assert common.stream_id("codes") == common.stream_id("codes") != common.stream_id("noise")
  assert 0 <= common.stream_id("codes") < 2**31


# ---------------------------------------------------------------- model registry


def test_model_registry_builds_by_name_and_lists_the_valid_names():
  io = models.ModelIO(x_shape=(8, 8, 3), y_shape=(32, 32, 3), code_shape=(8, 8, 2))
  assert io.upsample_factor == 4
  cfg = load_config(SRIM, "runlocal")[0].model
  generator = models.make_model(cfg, io)
  x, z = jnp.zeros((2, 8, 8, 3)), jnp.ones((2, 8, 8, 2))
  params = generator.init(jax.random.PRNGKey(0), x, z)
  assert generator.apply(params, x, z, bilinear=True).shape == (2, 32, 32, 3)
  with pytest.raises(ValueError, match=r"Unknown model name 'resnet'; valid: \['cgml_mlp', 'cgml_unet', "
                     r"'conv_generator', 'crn', 'dropout_crn', 'patchgan', 'rrdb', 'unet', 'velocity_unet'\]"):
    cfg.unlock()
    cfg.name = "resnet"
    models.make_model(cfg, io)
  with pytest.raises(ValueError, match="not an integer multiple"):
    _ = models.ModelIO(x_shape=(8, 8, 3), y_shape=(12, 12, 3)).upsample_factor


def test_a_vector_code_is_broadcast_and_concatenated_to_the_input():
  x = jnp.zeros((2, 4, 5, 3))
  z = jnp.arange(4.0).reshape(2, 2)
  xz = models.concat_code(x, z)
  assert xz.shape == (2, 4, 5, 5)
  np.testing.assert_array_equal(xz[1, 3, 4, 3:], [2.0, 3.0])
  assert models.concat_code(x, None) is x


# ---------------------------------------------------------------- prepared state


def test_fingerprint_follows_data_and_the_method_section_not_where_data_live():
  config, _ = load_config(SRIM, "runlocal")
  fp = prepared_lib.fingerprint(config)
  assert prepared_lib.depends_on(config) == ("imle", "distance")
  for key, value in (("data.data_dir", "/elsewhere"), ("data.batch_size", 16), ("data.num_workers", 2),
                     ("train.num_steps", 99)):
    changed = config.copy_and_resolve_references()
    section, field = key.split(".")
    changed[section][field] = value
    assert prepared_lib.fingerprint(changed) == fp, key
  for key, value in (("data.builder_config", "x8_64"), ("imle.calibration_examples", 3)):
    changed = config.copy_and_resolve_references()
    section, field = key.split(".")
    changed[section][field] = value
    assert prepared_lib.fingerprint(changed) != fp, key


def test_imle_calibrates_on_the_train_split_once_and_inference_restores_it(tmp_path, data_dir, random_vgg_dir,
                                                                        capsys):
  config, module = load_config(SRIM, "runlocal")
  config.data.data_dir = data_dir
  config.distance = module.srim_distance(weights_path=random_vgg_dir)  # layer_weights=(): calibrate
  config.imle.calibration_examples = 4
  workdir = str(tmp_path)
  arrays = prepared_lib.prepare_or_restore(config, workdir)
  assert set(arrays) == {"loss_distance/layer_weights", "loss_distance/pixel_weight"}  # selection: pixels

  # The same weights as calibrating by hand on the first 4 *training* targets.
  source = pipeline.PrepareSource(config)
  y = jnp.asarray(np.stack([source[i]["y"] for i in range(4)]))
  expected = perceptual.make_distance(config.distance).calibrate(*perceptual.calibration_pairs(y))
  np.testing.assert_allclose(arrays["loss_distance/layer_weights"], expected.layer_weights, rtol=1e-6)
  np.testing.assert_allclose(arrays["loss_distance/pixel_weight"], expected.pixel_weight, rtol=1e-6)

  # Restored, not recomputed, for the same settings; recomputed for others.
  def fail(_):
    raise AssertionError("recomputed")
  again = prepared_lib.prepare_or_restore(config, workdir, compute_fn=fail)
  np.testing.assert_array_equal(again["loss_distance/layer_weights"], arrays["loss_distance/layer_weights"])
  changed = config.copy_and_resolve_references()
  changed.imle.calibration_examples = 3
  assert not np.array_equal(prepared_lib.prepare_or_restore(changed, workdir)["loss_distance/layer_weights"],
                            arrays["loss_distance/layer_weights"])
  assert "recomputing it" in capsys.readouterr().out
  with pytest.raises(ValueError, match="does not match the run's config"):
    prepared_lib.for_inference(config, workdir)

  # The method takes its weights from the prepared state, and says so without it.
  spec = {"x": jax.ShapeDtypeStruct((8, 8, 8, 3), jnp.float32), "y": jax.ShapeDtypeStruct((8, 64, 64, 3),
                                                                                           jnp.float32)}
  method = imle.make_method(config, spec, arrays)
  assert "NOT YET CALIBRATED" not in method.description and "prepared state" in method.description
  with pytest.raises(ValueError, match="prepared state has no 'loss_distance/layer_weights'"):
    imle.make_method(config, spec, {})


def test_inference_needs_no_dataset_when_the_prepared_state_is_in_the_workdir(tmp_path, data_dir,
                                                                             random_vgg_dir, monkeypatch):
  config, module = load_config(SRIM, "runlocal")
  config.data.data_dir = data_dir
  config.distance = module.srim_distance(weights_path=random_vgg_dir)
  config.imle.calibration_examples = 2
  config.train.num_steps = 2
  config.train.sample_every = config.train.eval_every = 0
  train.train_and_evaluate(config, str(tmp_path))
  # `sample --input photo.png`: the dataset is gone; the run still loads.
  monkeypatch.setattr(pipeline, "PrepareSource", None)
  monkeypatch.setattr(pipeline, "get_builder", None)
  _, method, state, batch_spec = inference.load_trained(str(tmp_path))
  x = jnp.zeros((1,) + tuple(batch_spec["x"].shape[1:]))
  samples = jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(0), 2)  # eager: op by op
  assert samples.shape == (1, 2) + tuple(batch_spec["y"].shape[1:])


def test_methods_can_be_registered_from_outside_once():
  methods_base.register_method("regression", "multimodal_jax.methods.regression")  # same: fine
  with pytest.raises(ValueError, match="registered twice"):
    methods_base.register_method("regression", "my_pkg.other")
