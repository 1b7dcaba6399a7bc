"""Frozen networks in the method state (common.split_frozen / bind) and shared equal-contribution calibration."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import inference
from multimodal_jax import prepared as prepared_lib
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import calibration
from multimodal_jax.methods import common
from multimodal_jax.models import vgg as vgg_lib
from test_train import load_config

REGRESSION = str(REPO / "configs" / "regression.py")


def random_vgg(source="random (test)"):
  return perceptual.Distance(name="vgg", pixel_weight=0.5, layers=("relu1_2",), layer_weights=(2.0,),
                             trunk="vgg19", input_norm="torchvision", weights_source=source,
                             params=vgg_lib.init_vgg_params("vgg19"))


def pixel_l1():
  return perceptual.make_distance(config_lib.default_distance_config("pixel"))


def test_split_frozen_keeps_one_copy_per_network_and_bind_restores_the_distance():
  vgg = random_vgg()
  templates, frozen = common.split_frozen({"loss": vgg, "selection": vgg.replace(layer_weights=(3.0,)),
                                           "pixels": pixel_l1()})
  assert list(frozen) == ["vgg"] and frozen["vgg"]["heads"] is None
  assert frozen["vgg"]["params"] is vgg.params
  assert templates["loss"].template.params is None and templates["loss"].key == "vgg"
  assert templates["pixels"].key is None
  bound = common.bind(templates["selection"], frozen)
  assert bound.params is vgg.params and bound.layer_weights == (3.0,)
  assert common.bind(templates["pixels"], frozen) == pixel_l1()
  # The same network from another file gets its own entry; pixels alone add nothing.
  _, two = common.split_frozen({"loss": vgg, "selection": random_vgg("another file")})
  assert sorted(two) == ["vgg", "vgg_selection"]
  assert common.split_frozen({"loss": pixel_l1()})[1] == {}


class _NoExamples:
  """A train source whose examples must not be read."""

  def __len__(self):
    return 4

  def __getitem__(self, index):
    raise AssertionError("read an example")


def test_a_distance_with_explicit_weights_prepares_nothing_and_reads_no_example():
  configs = {"loss": config_lib.default_distance_config("pixel")}
  assert calibration.calibration_arrays(configs, _NoExamples()) == {}
  assert calibration.calibrated(pixel_l1(), "loss", {}, "regression") == pixel_l1()


def calibrated_regression_config(data_dir, weights_dir):
  config, _ = load_config(REGRESSION, "runlocal")
  config.data.data_dir = data_dir
  # layer_weights=(): equal contribution, from the prepared state.
  config.distance = config_lib.default_distance_config("vgg", pixel_weight=1.0, layers=("relu1_2", "relu2_2"),
                                                       weights_path=weights_dir)
  return config


def test_regression_with_a_calibrated_vgg_distance_prepares_and_uses_the_weights(tmp_path, data_dir,
                                                                                  random_vgg_dir):
  config = calibrated_regression_config(data_dir, random_vgg_dir)
  assert prepared_lib.depends_on(config) == ("distance",)
  arrays = prepared_lib.prepare_or_restore(config, str(tmp_path))
  assert set(arrays) == {"loss_distance/layer_weights", "loss_distance/pixel_weight"}
  # The weights of calibrating by hand on the first training targets.
  source = pipeline.PrepareSource(config)
  n = min(calibration.CALIBRATION_EXAMPLES, len(source))
  y = jnp.asarray(np.stack([source[i]["y"] for i in range(n)]))
  expected = perceptual.make_distance(config.distance).calibrate(*perceptual.calibration_pairs(y))
  np.testing.assert_allclose(arrays["loss_distance/layer_weights"], expected.layer_weights, rtol=1e-6)
  np.testing.assert_allclose(arrays["loss_distance/pixel_weight"], expected.pixel_weight, rtol=1e-6)

  batch = {k: jnp.asarray(np.stack([source[i][k] for i in range(2)])) for k in ("x", "y")}
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  with pytest.raises(ValueError, match="prepared state has no 'loss_distance/layer_weights'"):
    methods_base.make_method(config, spec, {})
  method = methods_base.make_method(config, spec, arrays)
  assert "prepared state" in method.description and "NOT YET CALIBRATED" not in method.description

  # The VGG weights are state (not a trained network), and the step's loss uses the calibrated weights.
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  assert list(state.networks) == ["generator"] and list(state.frozen) == ["vgg"]
  jax.tree.map(np.testing.assert_array_equal, state.frozen["vgg"]["params"], expected.params)
  new_state, metrics = jax.jit(method.steps["train"])(state, batch)
  y_hat = jax.jit(method.sample, static_argnums=3)(state, batch["x"], jax.random.PRNGKey(1), 1)[:, 0]
  want = jnp.mean(jax.jit(lambda d, a, b: d(a, b))(expected, y_hat, batch["y"]))
  np.testing.assert_allclose(float(metrics["loss"]), float(want), rtol=1e-5)
  jax.tree.map(np.testing.assert_array_equal, new_state.frozen, state.frozen)


def test_regression_with_a_calibrated_vgg_distance_trains_and_restores_through_the_loop(tmp_path, data_dir,
                                                                                        random_vgg_dir):
  config = calibrated_regression_config(data_dir, random_vgg_dir)
  config.train.num_steps = 2
  config.train.sample_every = config.train.eval_every = 0
  state = train.train_and_evaluate(config, str(tmp_path))
  assert "loss_distance/layer_weights" in prepared_lib.load(str(tmp_path))[0]
  _, _, restored, _ = inference.load_trained(str(tmp_path))
  assert int(restored.step) == 2
  jax.tree.map(np.testing.assert_array_equal, restored.frozen, state.frozen)
