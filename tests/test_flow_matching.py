"""Conditional flow matching (methods/flow_matching.py, models/velocity_unet.py; issue 42)."""

import glob
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_jax import evaluate as evaluate_lib
from multimodal_jax import inference
from multimodal_jax import train
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import common
from multimodal_jax.methods import flow_matching
from multimodal_jax.models import registry
from multimodal_jax.models import velocity_unet
from conftest import REPO
from test_train import load_config

CONFIG = str(REPO / "configs" / "flow_matching.py")


@pytest.mark.parametrize("num_steps", [1, 4, 7])
def test_euler_and_heun_integrate_du_dt_equal_t_exactly_as_their_formulas(num_steps):
  """du/dt = t from u = 0: Euler's left sums give (N - 1) / 2N; Heun's trapezoids are exact up to 1 - dt,
  and its last step is Euler's: (1 - dt)^2 / 2 + dt (1 - dt)."""
  velocity = lambda u, t: jnp.full_like(u, t)
  u0 = jnp.zeros((2, 3))
  euler = flow_matching.integrate(velocity, u0, num_steps, "euler")
  heun = flow_matching.integrate(velocity, u0, num_steps, "heun")
  np.testing.assert_allclose(euler, (num_steps - 1) / (2 * num_steps), rtol=1e-6)
  dt = 1.0 / num_steps
  np.testing.assert_allclose(heun, (1 - dt) ** 2 / 2 + dt * (1 - dt), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("solver", ["euler", "heun"])
@pytest.mark.parametrize("num_steps", [1, 4, 64])
def test_a_clean_sample_field_lands_exactly_on_its_prediction(solver, num_steps):
  """v = (c - u) / (1 - t), unclipped as the sampler uses it: every path ends at c, whatever N (no noise left)."""
  c = jnp.array([0.3, -0.7])
  u1 = flow_matching.integrate(lambda u, t: (c - u) / (1.0 - t), jnp.array([2.0, 1.0]), num_steps, solver)
  np.testing.assert_allclose(u1, c, rtol=1e-5, atol=1e-6)


def test_integrate_keeps_the_iterates_at_the_asked_steps():
  velocity = lambda u, t: jnp.ones_like(u)  # u_k = k / N
  keep = flow_matching.trajectory_steps(8, points=3)
  assert keep == (0, 4, 8)
  u1, kept = flow_matching.integrate(velocity, jnp.zeros((2,)), 8, "euler", keep=keep)
  np.testing.assert_allclose(kept[:, 0], [0.0, 0.5, 1.0], rtol=1e-6)
  np.testing.assert_allclose(u1, 1.0, rtol=1e-6)
  assert flow_matching.trajectory_steps(3) == (0, 1, 2, 3)  # fewer steps than points: every step


def test_timestep_embedding_is_cos_then_sin_of_1000_t_over_geometric_periods():
  emb = velocity_unet.timestep_embedding(jnp.array([0.0, 0.25]), 6)
  freqs = np.exp(-np.log(10000.0) * np.arange(3) / 3)
  args = 1000.0 * np.array([0.0, 0.25])[:, None] * freqs
  np.testing.assert_allclose(emb, np.concatenate([np.cos(args), np.sin(args)], -1), rtol=1e-5, atol=1e-5)


def _method(arg="runlocal", x_shape=(4, 8, 16, 5), y_shape=(4, 8, 16, 3), **fm):
  config, _ = load_config(CONFIG, arg)
  with config.unlocked():
    for key, value in fm.items():
      config.flow_matching[key] = value
  spec = {"x": jax.ShapeDtypeStruct(x_shape, jnp.float32), "y": jax.ShapeDtypeStruct(y_shape, jnp.float32)}
  return config, methods_base.make_method(config, spec, {})


@pytest.mark.parametrize("prediction", ["velocity", "sample"])
def test_the_loss_is_the_l2_between_the_field_and_u1_minus_u0_on_the_straight_path(prediction):
  """An independent computation of one step's loss from the same named random streams."""
  config, method = _method(prediction=prediction)
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.random((4, 8, 16, 5)), jnp.float32),
           "y": jnp.asarray(rng.random((4, 8, 16, 3)), jnp.float32)}
  # Non-zero parameters, so the field is not the zero of its zero-initialised last layer.
  params = jax.tree.map(lambda p: p + 0.05 * jnp.ones_like(p), state.networks["velocity"].params)
  net = state.networks["velocity"].replace(params=params)
  state = state.replace(networks={"velocity": net})
  _, metrics = jax.jit(method.steps["train"])(state, batch)
  rngs = common.step_rngs(state.rng, state.step, "noise", "time")
  u1 = (batch["y"] - 0.5) * 2.0
  u0 = jax.random.normal(rngs["noise"], u1.shape)
  t = jax.random.uniform(rngs["time"], (4,))
  u_t = (1 - t)[:, None, None, None] * u0 + t[:, None, None, None] * u1
  model = velocity_unet.build(config.model, registry.ModelIO(x_shape=(8, 16, 5), y_shape=(8, 16, 3)))
  out = np.asarray(model.apply({"params": params}, batch["x"], u_t, t))
  if prediction == "sample":  # v = (u_hat - u_t) / max(1 - t, 0.05)
    out = (out - np.asarray(u_t)) / np.maximum(1 - np.asarray(t), 0.05)[:, None, None, None]
  np.testing.assert_allclose(metrics["loss"], np.mean((out - np.asarray(u1 - u0)) ** 2), rtol=1e-5)


def test_the_ema_warms_up_so_the_initial_parameters_are_forgotten():
  decays = [float(flow_matching.ema_decay_at(0.999, jnp.asarray(s))) for s in (0, 10, 100000)]
  np.testing.assert_allclose(decays, [0.1, 11 / 20, 0.999], rtol=1e-6)
  # After 2400 updates the initial parameters weigh prod(decays) ~ 1e-5, not 0.999^2400 = 0.09.
  weight = np.prod([float(flow_matching.ema_decay_at(0.999, jnp.asarray(s))) for s in range(2400)])
  assert weight < 1e-4 < 0.999 ** 2400


@pytest.mark.parametrize("prediction", ["velocity", "sample"])
def test_sr_flows_carry_the_bicubic_residual(prediction):
  """skip 'auto' on x8 RGB: u = (y - bicubic(x)) * scale. A fresh network outputs 0: as a clean-sample
  prediction every sample is bicubic(x) exactly; as a velocity the noise stays, std 1 / scale around it."""
  assert flow_matching.resolve_skip("auto", (8, 8, 3), (64, 64, 3)) == "bicubic"
  assert flow_matching.resolve_skip("auto", (32, 64, 8), (32, 64, 3)) == "none"
  _, method = _method("sr,runlocal", x_shape=(2, 4, 4, 3), y_shape=(2, 32, 32, 3), prediction=prediction)
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  x = jnp.asarray(np.random.default_rng(1).uniform(0.2, 0.8, (2, 4, 4, 3)), jnp.float32)
  samples = np.asarray(method.sample(state, x, jax.random.PRNGKey(3), 2))
  residual = samples - np.clip(np.asarray(registry.upsample_reference(x, 8)), 0, 1)[:, None]
  if prediction == "sample":
    np.testing.assert_allclose(residual, 0.0, atol=1e-5)
  else:
    assert abs(residual.mean()) < 0.02 and 0.15 < residual.std() < 0.3


def _two_mode_batch(n=64):
  """Constant input; y is one of two flat images (0.2 or 0.8 everywhere), half each."""
  x = np.ones((n, 8, 8, 1), np.float32)
  y = np.where(np.arange(n)[:, None, None, None] % 2 == 0, 0.2, 0.8) * np.ones((n, 8, 8, 3), np.float32)
  return {"x": jnp.asarray(x), "y": jnp.asarray(y)}


def test_flow_matching_samples_both_modes_where_the_l2_regression_averages_them():
  """The method's point: a trained flow lands on either mode; the regression's l2 optimum is their mean 0.5."""
  config, _ = load_config(CONFIG, "runlocal")
  with config.unlocked():
    config.model.features = (16, 16)
    config.flow_matching.sample_steps = 8
    config.flow_matching.ema_decay = 0.0
    config.optimizer.learning_rate = 3e-3
    config.optimizer.schedule = "constant"
    config.optimizer.warmup_steps = 0
    config.train.num_steps = 300
  batch = _two_mode_batch()
  spec = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
  method = methods_base.make_method(config, spec, {})
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  step = jax.jit(method.steps["train"])
  for _ in range(config.train.num_steps):
    state, _ = step(state, batch)
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, batch["x"][:2], jax.random.PRNGKey(1), 32))
  means = samples.mean(axis=(2, 3, 4)).ravel()  # one grey level per sample
  near_low, near_high = np.mean(np.abs(means - 0.2) < 0.08), np.mean(np.abs(means - 0.8) < 0.08)
  assert near_low > 0.1 and near_high > 0.1 and near_low + near_high > 0.9, means  # both modes, nothing between
  regression_optimum = batch["y"].mean(axis=0)  # what an l2 regression converges to for this constant input
  assert not (np.abs(float(regression_optimum.mean()) - np.array([0.2, 0.8])) < 0.08).any()


def test_a_bad_flow_matching_setting_is_a_config_error_naming_the_key():
  config, _ = load_config(CONFIG, "runlocal")
  with config.unlocked():
    config.flow_matching.solver = "rk4"
  with pytest.raises(ValueError, match=r"config.flow_matching.solver='rk4' is invalid: valid: \['euler', 'heun'\]"):
    methods_base.validate_method_config(config)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("fm") / "run")
  config, _ = load_config(CONFIG, "runlocal")
  with config.unlocked():
    config.data.data_dir = data_dir
  train.train_and_evaluate(config, workdir)
  return workdir


def test_evaluate_override_changes_the_sampler_steps_and_records_them(trained, tmp_path):
  config, method, _, _ = inference.load_trained(trained, overrides=["flow_matching.sample_steps=2",
                                                                    "flow_matching.solver=heun"])
  assert config.flow_matching.sample_steps == 2 and config.flow_matching.solver == "heun"
  assert "heun x 2 steps (3 evaluations per sample)" in method.description
  out = tmp_path / "e.json"
  evaluate_lib.evaluate(trained, num_inputs=2, num_samples=2, mode_samples=2, evals="diversity", out=str(out),
                        overrides=["flow_matching.sample_steps=2"])
  assert json.loads(out.read_text())["overrides"] == ["flow_matching.sample_steps=2"]
  # Neither --out nor --override touches the run's own evaluation: its TensorBoard eval/* scalars (they were
  # written at the run's step, as if the run's own) and its eval.json / eval_<step>.json.
  events = lambda: sorted(glob.glob(os.path.join(trained, "**", "*tfevents*"), recursive=True))
  own = sorted(glob.glob(os.path.join(trained, "eval*.json")))
  before = {path: (os.path.getsize(path), os.path.getmtime(path)) for path in events() + own}
  for kwargs in ({"out": str(tmp_path / "f.json")}, {"overrides": ["flow_matching.sample_steps=2"]}):
    evaluate_lib.evaluate(trained, num_inputs=2, num_samples=2, mode_samples=2, evals="diversity", **kwargs)
  assert {path: (os.path.getsize(path), os.path.getmtime(path)) for path in events() + own} == before
  written = json.loads((pathlib.Path(trained) / "eval_override.json").read_text())
  assert written["overrides"] == ["flow_matching.sample_steps=2"]


@pytest.mark.parametrize("item,message", [
    ("model.features=3", r"^--override 'model.features=3': expected KEY=VALUE with KEY one of the run's "
                         r"inference-time settings \(flow_matching.sample_steps, flow_matching.solver\)\.$"),
    ("flow_matching.sample_steps=two", r"^--override 'flow_matching.sample_steps=two': "
                                       r"flow_matching.sample_steps is an int; got 'two'\.$"),
    ("flow_matching.sample_steps=0", r"^--override: config.flow_matching.sample_steps=0 is invalid"),
])
def test_a_bad_override_is_one_line(trained, item, message):
  with pytest.raises(inference.OverrideError, match=message):
    inference.load_trained(trained, overrides=[item])


def test_the_trajectory_extra_ends_at_the_samples_and_starts_at_noise(trained):
  config, method, state, batch_spec = inference.load_trained(trained)
  # A field far from its zero-initialised last layer (6 steps barely move it), so the path is visible.
  state = state.replace(ema_params=jax.tree.map(lambda p: p + 0.05, state.ema_params))
  x = jnp.asarray(np.random.default_rng(0).random((2,) + batch_spec["x"].shape[1:]), jnp.float32)
  rng = jax.random.PRNGKey(5)
  traj = np.asarray(method.extras["trajectory"](state, x, rng, 3))
  samples = np.asarray(method.sample(state, x, rng, 3))
  assert traj.shape[:3] == (2, 3, len(flow_matching.trajectory_steps(config.flow_matching.sample_steps)))
  np.testing.assert_allclose(traj[:, :, -1], samples, atol=1e-6)
  assert np.abs(traj[:, :, 0] - samples).mean() > 0.05  # t = 0 is the noise, not the sample
