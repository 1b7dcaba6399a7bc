"""cGML (cgml_iclr2021): the three steps of Alg. 1 and its persistent codes, the sphere, Eq. 4 and the
"w/o rho" ablation, the networks, the tasks, a run and its resume."""

import functools
import glob
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import inference
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax import validation
from multimodal_jax import workdir as workdir_lib
from multimodal_jax.data import toy3d
from multimodal_jax.evaluation.evaluators import latent_displacement
from multimodal_jax.losses import colour
from multimodal_jax.losses import latent_geometry
from multimodal_jax.methods import cgml
from multimodal_jax.methods import cgml_tasks
from multimodal_jax.models import cgml_nets
from multimodal_jax.models import registry as models

CONFIG = str(REPO / "configs" / "cgml.py")


def config_module():
  import importlib.util  # pylint: disable=g-import-not-at-top
  spec = importlib.util.spec_from_file_location("cgml_cfg", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(arg=None):
  return config_module().get_config(arg)


# (config arg, x shape, y shape) with tiny shapes, batch 2.
SETUPS = {
    "toy3d": ("toy3d,runlocal", (2, 1, 1, 1), (2, 1, 1, 3)),
    "completion": ("completion,runlocal", (2, 8, 8, 2), (2, 8, 8, 1)),
    "colorization": ("colorization,runlocal", (2, 8, 16, 1), (2, 8, 16, 3)),
}


@functools.lru_cache(maxsize=None)
def make(setup):
  """(config, method, state, batch), built once per session (compiling is the slow part)."""
  arg, x_shape, y_shape = SETUPS[setup]
  config = load_config(arg)
  config.unlock()
  config.model.num_levels = 1  # The smallest U-Net: compiling dominates these tests.
  config.lock()
  rng = np.random.default_rng(0)
  batch = {"x": jnp.asarray(rng.random(x_shape, dtype=np.float32)),
           "y": jnp.asarray(rng.random(y_shape, dtype=np.float32))}
  if setup == "completion":  # x = [masked image, mask]
    mask = np.zeros(x_shape[:3] + (1,), np.float32)
    mask[:, :4] = 1.0
    batch["x"] = jnp.concatenate([batch["y"] * (1 - mask), mask], axis=-1)
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  method = cgml.make_method(config, spec)
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  return config, method, state, batch


@functools.lru_cache(maxsize=None)
def jitted(setup, name):
  """The jitted step `name` (or 'sample' / 'trajectory') of `make(setup)`'s method."""
  _, method, _, _ = make(setup)
  if name == "sample":
    return jax.jit(method.sample, static_argnums=3)
  if name == "trajectory":
    return jax.jit(method.extras["trajectory"], static_argnums=3)
  return jax.jit(method.steps[name])


def assert_trees_identical(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def assert_trees_differ(a, b):
  assert any(not np.array_equal(np.asarray(x), np.asarray(y))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


# ---------------------------------------------------------------- the sphere and Eq. 4


def test_projection_and_sampling_keep_unit_norm():
  z = jax.random.normal(jax.random.PRNGKey(0), (5, 7)) * 3.0
  np.testing.assert_allclose(np.linalg.norm(latent_geometry.project_to_sphere(z), axis=-1), 1.0, rtol=1e-6)
  s = latent_geometry.sample_sphere(jax.random.PRNGKey(1), (4, 3, 16))
  np.testing.assert_allclose(np.linalg.norm(s, axis=-1), 1.0, rtol=1e-6)


def test_move_cosine_compares_z_s_direction_with_the_training_move():
  z_t = jnp.array([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
  z_next = jnp.array([[1.0, 0.0], [2.0, 1.0], [0.0, 3.0], [1.0, 1.0]])
  # Per row: the same direction (scaled), the opposite one, orthogonal, no predicted move.
  z_hat = jnp.array([[5.0, 0.0], [0.0, 1.0], [2.0, 0.0], [0.0, 0.0]])
  np.testing.assert_allclose(latent_geometry.move_cosine(z_t[:1], z_hat[:1], z_next[:1]), 1.0, rtol=1e-6)
  np.testing.assert_allclose(latent_geometry.move_cosine(z_t[1:2], z_hat[1:2], z_next[1:2]), -1.0, rtol=1e-6)
  np.testing.assert_allclose(latent_geometry.move_cosine(z_t, z_hat, z_next), (1.0 - 1.0 + 0.0 + 0.0) / 4, atol=1e-7)
  z_hat = z_hat.at[3].set([3.0, 4.0])  # cos((3, 4), (1, 1)) = 7 / (5 sqrt 2)
  np.testing.assert_allclose(latent_geometry.move_cosine(z_t[3:], z_hat[3:], z_next[3:]), 7 / (5 * np.sqrt(2)),
                             rtol=1e-6)


def test_step_gain_is_the_least_squares_fit_of_eq4_s_steps_to_the_training_moves():
  z_t = jnp.zeros((2, 2))
  z_next = jnp.array([[3.0, 4.0], [0.0, 2.0]])  # the training moves m: ||m||^2 = 25, 4
  z_hat = jnp.array([[1.0, 0.0], [0.0, -7.0]])  # u = (1, 0) and (0, -1)
  rho_hat = jnp.array([2.0, 1.0])  # s = (2, 0): s . m = 6; s = (0, -1): -2
  stats_3 = latent_geometry.step_against_move(z_t, z_hat, rho_hat, z_next)
  np.testing.assert_allclose(stats_3, [(6.0 - 2.0) / 2, (4.0 + 1.0) / 2, (25.0 + 4.0) / 2], rtol=1e-6)
  # Moving averages at iteration t only, weight 1 - decay on the new value.
  stats_3xL = latent_geometry.update_step_gain(jnp.array([[0.0, 0.2], [0.0, 0.4], [0.0, 1.0]]), 1, stats_3, 0.9)
  np.testing.assert_allclose(stats_3xL, [[0.0, 0.9 * 0.2 + 0.1 * 2.0], [0.0, 0.9 * 0.4 + 0.1 * 2.5],
                                         [0.0, 0.9 * 1.0 + 0.1 * 14.5]], rtol=1e-6)
  # The ratio, clipped to [0, 1]; 0 where nothing was measured yet.
  np.testing.assert_allclose(latent_geometry.step_gains(stats_3xL), [0.0, 0.38 / 0.61], rtol=1e-6)
  stats_3x3 = jnp.array([[-0.1, 0.5, 0.3], [1.0, 0.25, 0.6], [1.0, 1.0, 1.0]])
  np.testing.assert_allclose(latent_geometry.step_gains(stats_3x3), [0.0, 1.0, 0.5], rtol=1e-6)
  # Steps equal to the moves: gain 1 (Eq. 4 as the paper writes it), all of the moves explained.
  rho_exact = jnp.linalg.norm(z_next, axis=-1)
  exact_3 = latent_geometry.step_against_move(z_t, 2 * z_next, rho_exact, z_next)
  np.testing.assert_allclose(exact_3[0] / exact_3[1], 1.0, rtol=1e-6)
  np.testing.assert_allclose(latent_geometry.explained_move(exact_3[:, None]), [1.0], rtol=1e-6)
  # The gain minimises E||g s - m||^2, and the share explained is the error it removes.
  num, den, move = np.asarray(stats_3)
  s_BxD = np.asarray(rho_hat)[:, None] * np.array([[1.0, 0.0], [0.0, -1.0]])
  errors = [np.mean(np.sum((g * s_BxD - np.asarray(z_next))**2, -1)) for g in (num / den - 0.01, num / den,
                                                                               num / den + 0.01, 0.0)]
  assert errors[1] < errors[0] and errors[1] < errors[2], errors
  np.testing.assert_allclose(latent_geometry.explained_move(stats_3[:, None]), [1 - errors[1] / errors[3]], rtol=1e-5)
  np.testing.assert_allclose(latent_geometry.explained_move(stats_3[:, None]), [4.0 / (2.5 * 14.5)], rtol=1e-6)


def test_a_step_that_explains_too_little_of_the_moves_gets_no_gain():
  """min_explained_move: the least-squares gain is kept only where its step explains enough of the moves."""
  # Columns: explained 4 / (2.5 * 14.5) = 0.110; 0.01^2 / (1 * 1) = 1e-4 (a gain of 0.01, |cos| ~0.01);
  # a step pointing away from the moves; nothing measured.
  stats_3xL = jnp.array([[2.0, 0.01, -0.5, 0.0], [2.5, 1.0, 1.0, 0.0], [14.5, 1.0, 1.0, 0.0]])
  np.testing.assert_allclose(latent_geometry.explained_move(stats_3xL), [4.0 / 36.25, 1e-4, 0.0, 0.0], rtol=1e-5)
  np.testing.assert_allclose(latent_geometry.step_gains(stats_3xL, 0.0), [0.8, 0.01, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(latent_geometry.step_gains(stats_3xL, 0.01), [0.8, 0.0, 0.0, 0.0], rtol=1e-6)
  np.testing.assert_allclose(latent_geometry.step_gains(stats_3xL, 0.2), [0.0, 0.0, 0.0, 0.0])


def test_momentum_update_is_eq4_exactly():
  z = jnp.array([[1.0, 0.0]])
  z_hat = jnp.array([[1.0, 2.0]])
  rho = jnp.array([0.5])
  # z + 0.5 * (0, 2) / 2 = (1, 0.5), projected.
  np.testing.assert_allclose(latent_geometry.momentum_update(z, z_hat, rho), [[1 / np.sqrt(1.25), 0.5 / np.sqrt(1.25)]],
                             rtol=1e-6)
  # Without momentum: z_hat, projected.
  np.testing.assert_allclose(latent_geometry.momentum_update(z, z_hat, rho, use_momentum=False),
                             [[1 / np.sqrt(5), 2 / np.sqrt(5)]], rtol=1e-6)


def test_one_inference_iteration_equals_eq4_by_hand():
  config, method, state, batch = make("toy3d")
  h = jax.random.normal(jax.random.PRNGKey(2), (2, config.model.h_dim))
  z = latent_geometry.sample_sphere(jax.random.PRNGKey(3), (2, config.cgml.z_dim))
  znet = cgml_nets.ZNetwork(hidden=config.model.znet_hidden, num_layers=config.model.znet_layers,
                            power_iterations=config.model.power_iterations,
                            lipschitz_scale=config.model.znet_lipschitz_scale,
                            iteration_input=config.model.znet_iteration_input)
  znet_params = state.networks["znet"].params
  t = 1  # Z sees t / l: the second iteration of the round.
  z_hat, rho_hat = (np.asarray(a, np.float64)
                    for a in znet.apply({"params": znet_params}, z, h, jnp.full((2,), t / config.cgml.inner_steps)))
  z_np = np.asarray(z, np.float64)
  step = z_hat - z_np
  expected = z_np + rho_hat[:, None] * step / np.linalg.norm(step, axis=-1, keepdims=True)
  expected /= np.linalg.norm(expected, axis=-1, keepdims=True)
  got = method.extras["inference_update"](znet_params, h, z, t)
  np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- the three steps


@pytest.mark.parametrize("setup", sorted(SETUPS))
def test_each_step_changes_only_what_it_should(setup):
  config, method, state, batch = make(setup)

  # z step: H, G, Z (and their optimiser states) frozen; z moves on the sphere.
  after_z, metrics = jitted(setup, "z")(state, batch)
  for field in ("networks", "step"):
    assert_trees_identical(getattr(state, field), getattr(after_z, field))
  assert not np.array_equal(after_z.z_BxD, after_z.z_prev_BxD)
  np.testing.assert_allclose(np.linalg.norm(after_z.z_BxD, axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(after_z.z_prev_BxD, axis=-1), 1.0, rtol=1e-5)
  assert set(metrics) == {"energy", "grad_norm", "move"}

  # Z step: H, G and z frozen; only the Z-network moves.
  after_znet, metrics = jitted(setup, "znet")(after_z, batch)
  for field in ("z_BxD", "z_prev_BxD", "step"):
    assert_trees_identical(getattr(after_z, field), getattr(after_znet, field))
  for name in ("encoder", "generator"):
    assert_trees_identical(after_z.networks[name], after_znet.networks[name])
  assert_trees_differ(after_z.networks["znet"].params, after_znet.networks["znet"].params)
  assert {"loss", "z_l1", "rho_l1", "rho_target", "rho_pred", "move_cosine", "step_gain",
          "explained_move"} <= set(metrics)
  assert -1.0 <= float(metrics["move_cosine"]) <= 1.0
  # The gain's averages move at this iteration (t = 0) only.
  assert np.all(after_znet.gain_stats_3xL[1:, 0] > 0) and not np.any(after_znet.gain_stats_3xL[:, 1:])
  np.testing.assert_array_equal(after_z.gain_stats_3xL, state.gain_stats_3xL)

  # G/H step: Z and z frozen; H and G move, the update counter advances.
  after_gen, metrics = jitted(setup, "gen")(after_znet, batch)
  for field in ("z_BxD", "z_prev_BxD", "gain_stats_3xL"):
    assert_trees_identical(getattr(after_znet, field), getattr(after_gen, field))
  assert_trees_identical(after_znet.networks["znet"], after_gen.networks["znet"])
  assert_trees_differ(after_znet.networks["encoder"].params, after_gen.networks["encoder"].params)
  assert_trees_differ(after_znet.networks["generator"].params, after_gen.networks["generator"].params)
  assert int(after_gen.step) == int(after_znet.step) + 1
  assert set(metrics) == {"energy", "grad_norm"}


def test_z_step_draws_fresh_codes_per_batch_then_continues_them():
  config, method, state, batch = make("toy3d")
  z_step = jitted("toy3d", "z")
  # First inner iteration (step % l == 0): z_t ~ U(S^n), whatever the state holds.
  a, _ = z_step(state, batch)
  b, _ = z_step(state.replace(z_BxD=-state.z_BxD), batch)
  np.testing.assert_array_equal(a.z_prev_BxD, b.z_prev_BxD)
  # Later inner iterations continue from the state's z.
  mid = state.replace(step=jnp.int32(1), z_BxD=a.z_BxD)
  c, _ = z_step(mid, batch)
  np.testing.assert_array_equal(c.z_prev_BxD, a.z_BxD)
  assert config.cgml.inner_steps == 2 and method.steps_per_round == 2


def test_z_step_is_a_projected_gradient_step_on_the_per_example_energy():
  config, method, state, batch = make("toy3d")
  after, _ = jitted("toy3d", "z")(state, batch)
  z_t = after.z_prev_BxD
  params = state.params
  nets = cgml_nets.build_mlp(config.model, models.ModelIO(x_shape=(1, 1, 1), y_shape=(1, 1, 3)))
  encoder, generator = nets["encoder"], nets["generator"]

  def energy_of_first(z_D):  # Example 0 alone: its gradient must not depend on example 1.
    h, skips = encoder.apply({"params": params["encoder"]}, batch["x"][:1])
    g = generator.apply({"params": params["generator"]}, h, skips, z_D[None])
    return jnp.mean(jnp.abs(g - batch["y"][:1]))

  grad = jax.grad(energy_of_first)(z_t[0])
  expected = latent_geometry.project_to_sphere(z_t[0] - config.cgml.z_step_size * grad)
  np.testing.assert_allclose(after.z_BxD[0], expected, rtol=1e-5, atol=1e-6)


def test_each_compiled_step_traces_once():
  config, method, state, batch = make("toy3d")
  traced = {name: chex.assert_max_traces(fn, n=1) for name, fn in method.steps.items()}
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  compiled = train.CompiledSteps(traced, replicated, sharded)
  state = jax.device_put(jax.tree.map(jnp.copy, state), replicated)  # The loop donates it.
  for _ in range(3):
    state = method.run_round(compiled, state, jax.device_put(batch, sharded))
  scalars, first_bad = compiled.flush()
  assert first_bad is None
  assert int(state.step) == 3 * config.cgml.inner_steps
  assert {"z/energy", "znet/loss", "znet/rho_pred", "gen/energy"} <= set(scalars)


# ---------------------------------------------------------------- inference


def test_sample_and_trajectory_shapes_and_agreement():
  config, method, state, batch = make("toy3d")
  rng = jax.random.PRNGKey(7)
  samples = jitted("toy3d", "sample")(state, batch["x"], rng, 3)
  out_shape = batch["y"].shape[1:]
  assert samples.shape == (2, 3) + out_shape
  assert float(samples.min()) >= 0.0 and float(samples.max()) <= 1.0
  traj = jitted("toy3d", "trajectory")(state, batch["x"], rng, 3)
  assert traj.shape == (2, 3, config.cgml.inference_steps + 1) + out_shape
  np.testing.assert_allclose(traj[:, :, -1], samples, atol=1e-5)
  # Different starting codes give different outputs.
  assert float(jnp.std(samples, axis=1).max()) > 0
  codes = method.extras["latents"](state, batch["x"], rng, 3)
  np.testing.assert_allclose(np.linalg.norm(codes, axis=-1), 1.0, rtol=1e-5)


def test_colorization_outputs_rgb_from_the_input_lightness_and_predicted_ab():
  config = load_config("colorization,runlocal")
  task = cgml_tasks.make_task(config.cgml, (1, 2, 2, 1), (1, 2, 2, 3))
  rgb = jnp.array([[[[0.8, 0.2, 0.1], [0.1, 0.6, 0.3]], [[0.2, 0.3, 0.9], [0.5, 0.5, 0.5]]]])
  lab = colour.rgb_to_lab(rgb)
  ab01 = (lab[..., 1:] + colour.AB_RANGE) / (2 * colour.AB_RANGE)
  grey_like = colour.lab_to_rgb(jnp.concatenate([lab[..., :1], jnp.zeros_like(lab[..., 1:])], -1))[..., :1]
  # With the exact lightness and (a, b), the image is recovered.
  np.testing.assert_allclose(task.to_image(grey_like, ab01), rgb, atol=2e-3)
  # The energy at the ground truth is the KL term alone.
  energy = task.energy(grey_like, ab01, rgb)
  kl = sum(colour.kl_to_uniform(colour.soft_histogram(ab01[..., i].reshape(1, -1), 32)) for i in range(2))
  np.testing.assert_allclose(energy, config.cgml.kl_weight * kl, rtol=1e-5)


# ---------------------------------------------------------------- inference keeps the modes

# 8 equiprobable modes per input: y = the corners of a cube (side 0.5), tilted by x.
CUBE_CORNERS_KxP = np.array([[(k >> i) & 1 for i in range(3)] for k in range(8)], np.float32)


def cube_modes(x_B, k_B):
  return 0.25 + 0.5 * CUBE_CORNERS_KxP[k_B] + 0.2 * (x_B[:, None] - 0.5) * (1 - 2 * CUBE_CORNERS_KxP[k_B])


def cube_recall(samples_BxNx1x1x3, x_B, tolerance=0.1):
  """Share of the 8 modes of each input hit by a sample within `tolerance` (max-abs)."""
  modes_BxKxP = np.stack([cube_modes(x_B, np.full(len(x_B), k)) for k in range(8)], axis=1)
  samples_BxNxP = np.asarray(samples_BxNx1x1x3).reshape(len(x_B), -1, 3)
  errors_BxNxK = np.abs(samples_BxNxP[:, :, None] - modes_BxKxP[:, None]).max(-1)
  hit_BxK = np.zeros((len(x_B), 8), bool)
  for b in range(len(x_B)):
    precise = errors_BxNxK[b].min(-1) < tolerance
    hit_BxK[b, errors_BxNxK[b].argmin(-1)[precise]] = True
  return float(hit_BxK.mean())


def train_on_cube_modes(config, num_rounds, batch_size=32, seed=0):
  """cGML's three steps on the 8-mode cube task, without the data pipeline: (method, state)."""
  spec = {"x": jax.ShapeDtypeStruct((batch_size, 1, 1, 1), jnp.float32),
          "y": jax.ShapeDtypeStruct((batch_size, 1, 1, 3), jnp.float32)}
  method = cgml.make_method(config, spec)
  state = jax.jit(method.init)(jax.random.PRNGKey(seed))
  steps = {name: jax.jit(fn) for name, fn in method.steps.items()}
  rng = np.random.default_rng(seed)
  for _ in range(num_rounds):
    x_B = rng.random(batch_size, dtype=np.float32)
    y_B = cube_modes(x_B, rng.integers(8, size=batch_size))
    batch = {"x": jnp.asarray(x_B.reshape(-1, 1, 1, 1)), "y": jnp.asarray(y_B.reshape(-1, 1, 1, 3))}
    for _ in range(config.cgml.inner_steps):
      for name in cgml.STEP_NAMES:
        state, _ = steps[name](state, batch)
  return method, state


def test_inference_recalls_at_least_the_modes_of_decoding_z0():
  """T iterations of Eq. 4 must not lose modes that G(H(x), z_0) already reaches (issue #14).

  Before the fix (every round from one z_0 ~ U(S^n), a Z blind to t, alpha = 6,
  T = 20 > l = 10) inference pulled samples towards a few modes: recall fell
  from 0.84 at t = 0 to 0.71 at t = T on this task.
  """
  config = load_config("toy3d")
  num_rounds = 150
  config.unlock()
  config.train.num_steps = num_rounds * config.cgml.inner_steps  # The learning-rate schedule's length.
  config.lock()
  method, state = train_on_cube_modes(config, num_rounds)
  x_B = np.linspace(0.0, 1.0, 32, dtype=np.float32)
  x = jnp.asarray(x_B.reshape(-1, 1, 1, 1))
  rng = jax.random.PRNGKey(1)
  recall_t0 = cube_recall(method.extras["initial_sample"](state, x, rng, 32), x_B)
  recall_tT = cube_recall(jax.jit(method.sample, static_argnums=3)(state, x, rng, 32), x_B)
  assert recall_t0 > 0.3, recall_t0  # G reaches the modes, so the comparison means something.
  assert recall_tT >= recall_t0, (recall_t0, recall_tT)


# ---------------------------------------------------------------- networks and tasks


def test_spectral_normalisation_gives_unit_spectral_norm():
  kernel = jax.random.normal(jax.random.PRNGKey(0), (12, 7)) * 5.0
  normalised = cgml_nets.spectral_normalize(kernel, power_iterations=50)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(normalised), ord=2), 1.0, rtol=1e-4)
  conv_kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 4, 6))
  normalised = cgml_nets.spectral_normalize(conv_kernel, power_iterations=50)
  assert normalised.shape == conv_kernel.shape
  np.testing.assert_allclose(np.linalg.norm(np.asarray(normalised).reshape(36, 6), ord=2), 1.0,
                             rtol=1e-4)


def test_generator_is_lipschitz_in_z():
  config, method, state, batch = make("toy3d")
  nets = cgml_nets.build_mlp(config.model, models.ModelIO(x_shape=(1, 1, 1), y_shape=(1, 1, 3)))
  encoder, generator = nets["encoder"], nets["generator"]
  params = state.params
  h, skips = encoder.apply({"params": params["encoder"]}, batch["x"])
  z1 = latent_geometry.sample_sphere(jax.random.PRNGKey(1), (2, config.cgml.z_dim))
  z2 = latent_geometry.sample_sphere(jax.random.PRNGKey(2), (2, config.cgml.z_dim))
  g1 = generator.apply({"params": params["generator"]}, h, skips, z1).reshape(2, -1)
  g2 = generator.apply({"params": params["generator"]}, h, skips, z2).reshape(2, -1)
  ratio = np.linalg.norm(g1 - g2, axis=-1) / np.linalg.norm(z1 - z2, axis=-1)
  assert np.all(ratio <= 1.0 + 1e-3), ratio


def test_lab_conversion_known_values_and_round_trip():
  lab = np.asarray(colour.rgb_to_lab(jnp.array([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])))
  np.testing.assert_allclose(lab[0], [100.0, 0.0, 0.0], atol=0.05)
  np.testing.assert_allclose(lab[1], [53.24, 80.09, 67.20], atol=0.1)
  np.testing.assert_allclose(lab[2], [0.0, 0.0, 0.0], atol=0.05)
  rgb = jax.random.uniform(jax.random.PRNGKey(0), (64, 3))
  np.testing.assert_allclose(colour.lab_to_rgb(colour.rgb_to_lab(rgb)), rgb, atol=1e-4)
  grey = jnp.linspace(0, 1, 5)[:, None]
  np.testing.assert_allclose(colour.grey_to_lightness(grey)[:, 0],
                             colour.rgb_to_lab(jnp.repeat(grey, 3, axis=-1))[:, 0], atol=1e-3)


def test_soft_histogram_and_kl_to_uniform():
  values = jnp.array([[0.1, 0.1, 0.1, 0.1], [0.125, 0.375, 0.625, 0.875]])
  hist = colour.soft_histogram(values, num_bins=4)
  np.testing.assert_allclose(hist.sum(-1), 1.0, rtol=1e-6)
  kl = colour.kl_to_uniform(hist)
  assert float(kl[0]) > float(kl[1]) > 0.0  # Peaked >> spread out.
  np.testing.assert_allclose(colour.kl_to_uniform(jnp.full((1, 8), 1 / 8)), [0.0], atol=1e-6)
  grad = jax.grad(lambda v: colour.kl_to_uniform(colour.soft_histogram(v, 4)).sum())(values)
  assert np.all(np.isfinite(grad)) and float(jnp.abs(grad[0]).sum()) > 0


def test_completion_pastes_the_output_into_the_hole_only():
  config = load_config("completion,runlocal")
  task = cgml_tasks.make_task(config.cgml, (1, 4, 4, 2), (1, 4, 4, 1))
  y = jnp.arange(16, dtype=jnp.float32).reshape(1, 4, 4, 1) / 16
  mask = jnp.zeros((1, 4, 4, 1)).at[:, :2].set(1.0)
  x = jnp.concatenate([y * (1 - mask), mask], axis=-1)
  image = task.to_image(x, jnp.full((1, 4, 4, 1), 0.5))
  np.testing.assert_array_equal(image[:, 2:], y[:, 2:])
  np.testing.assert_array_equal(image[:, :2], 0.5)
  np.testing.assert_allclose(task.energy(x, y, y), [0.0])


def test_validate_names_bad_cgml_keys():
  config = load_config("toy3d")
  config.cgml.task = "inpainting"
  with pytest.raises(ValueError, match=r"cgml.task='inpainting' is invalid: valid: \['direct'"):
    validation.validate(config)
  config = load_config("toy3d")
  config.train.num_steps = config.cgml.inner_steps * 3 + 1
  with pytest.raises(ValueError, match="multiple of cgml.inner_steps"):
    validation.validate(config)


# ---------------------------------------------------------------- toy3d data


def test_toy3d_branches_and_errors():
  np.testing.assert_allclose(toy3d.branch_points(np.float32(0.5)), [[2.0, 1.0, 0.5], [-2.0, -1.0, -0.5]])
  err = toy3d.branch_errors(np.float32(0.5), np.array([2.0, 1.0, 0.9]))
  np.testing.assert_allclose(err, [0.4 / 8, 4.0 / 8], rtol=1e-6)
  np.testing.assert_allclose(toy3d.denormalize(toy3d.normalize(np.array([-4.0, 0.0, 4.0]))),
                             [-4.0, 0.0, 4.0])
  example = toy3d.make_example(0, 0, 3)
  assert toy3d.branch_errors(example["x"], example["y"]).min() == 0.0


# ---------------------------------------------------------------- the loop


def test_toy3d_runlocal_trains_through_the_loop(tmp_path, data_dir):
  config = load_config("toy3d,runlocal")
  config.data.data_dir = data_dir
  config.data.builder_config = "tiny"
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.train.num_steps
  from tensorflow.python.summary.summary_iterator import summary_iterator  # pylint: disable=g-import-not-at-top
  tags = set()
  for path in glob.glob(os.path.join(tmp_path, "events.out.tfevents.*")):
    for event in summary_iterator(path):
      tags.update(value.tag for value in event.summary.value)
  for tag in ("z/energy", "z/move", "znet/loss", "znet/rho_target", "gen/energy", "samples",
              "learning_rate/generator", "learning_rate/znet", "learning_rate/encoder"):
    assert tag in tags, (tag, sorted(tags))
  assert sorted(os.listdir(tmp_path / "checkpoints"))[-1] == str(config.train.num_steps)


# ---------------------------------------------------------------- two-mode digits (§5.1, Fig. 5)


def test_digits_box_masks_always_hide_the_box():
  from multimodal_jax.data import digits_box  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  top, bottom, left, right = digits_box.BOX
  for _ in range(50):
    mask = digits_box.sample_mask_covering_box(rng)
    assert mask[top:bottom, left:right].min() == 1.0 and mask[16:].max() == 0.0
  image = np.zeros((32, 32, 1), np.uint8)
  transform = digits_box.BoxAndMask(box_rate=1.0)
  example = transform.random_map({"image": image}, rng)
  assert example["has_box"] == 1 and digits_box.box_present(example["y"][None])[0]
  np.testing.assert_array_equal(example["x"][..., 0], 0.0)  # The box is under the mask.
  clean = digits_box.FixedMaskBothModes().map({"image": image})
  assert not digits_box.box_present(clean["y"][None])[0]
  assert digits_box.box_present(clean["y_box"][None])[0]


def test_paper_colorization_transform_crops_resizes_and_greys():
  from multimodal_jax.data import colorization_photos  # pylint: disable=g-import-not-at-top
  image = np.zeros((40, 60, 3), np.uint8)
  image[..., 0] = 255  # Pure red.
  example = colorization_photos.PhotoToGreyAndColour(16).map({"image": image})
  assert example["x"].shape == (16, 16, 1) and example["y"].shape == (16, 16, 3)
  np.testing.assert_allclose(example["y"][..., 0], 1.0)
  np.testing.assert_allclose(example["x"], round(0.299 * 255) / 255, atol=1e-6)


def test_a_z_network_that_learned_no_moves_leaves_the_samples_at_z0():
  """An uninformative Z must not random-walk samples off the modes G reaches (issue #14, toy_scenes).

  Z's learning rate ~0 keeps it at its random initialisation: its direction has
  nothing to do with the training moves. The paper's Eq. 4 (gain 1) then
  spends rho_hat along that direction at every step and loses modes. The
  least-squares gain alone is small but not 0 (on toy_scenes its small steps
  still carried a few samples near a boundary across it); with
  min_explained_move the step explains too little of the moves, every gain is
  0, and the samples are G(z_0)'s exactly.
  """
  config = load_config("toy3d")
  num_rounds = 150
  config.unlock()
  config.train.num_steps = num_rounds * config.cgml.inner_steps
  config.cgml.znet_optimizer.learning_rate = 1e-12
  config.lock()
  assert config.cgml.min_explained_move > 0  # The default under test.
  method, state = train_on_cube_modes(config, num_rounds)
  x_B = np.linspace(0.0, 1.0, 32, dtype=np.float32)
  x = jnp.asarray(x_B.reshape(-1, 1, 1, 1))
  rng = jax.random.PRNGKey(1)

  def sample_with(**cgml_overrides):
    variant = config.copy_and_resolve_references()
    variant.unlock()
    variant.cgml.update(cgml_overrides)
    variant.lock()
    variant_method = cgml.make_method(variant, {"x": jax.ShapeDtypeStruct((32, 1, 1, 1), jnp.float32),
                                                "y": jax.ShapeDtypeStruct((32, 1, 1, 3), jnp.float32)})
    return np.asarray(jax.jit(variant_method.sample, static_argnums=3)(state, x, rng, 32))

  gains = np.asarray(latent_geometry.step_gains(state.gain_stats_3xL))
  assert 0 < gains.max() < 0.2, gains
  assert np.all(np.asarray(latent_geometry.explained_move(state.gain_stats_3xL)) < config.cgml.min_explained_move)
  np.testing.assert_array_equal(latent_geometry.step_gains(state.gain_stats_3xL, config.cgml.min_explained_move), 0.0)
  samples_t0 = np.asarray(method.extras["initial_sample"](state, x, rng, 32))
  samples_tT = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, rng, 32))
  recall_t0 = cube_recall(samples_t0, x_B)
  assert recall_t0 > 0.3, recall_t0
  np.testing.assert_allclose(samples_tT, samples_t0, atol=1e-6)  # z_T = z_0.
  recall_paper = cube_recall(sample_with(calibrate_step=False), x_B)
  assert recall_paper < recall_t0, (recall_t0, recall_paper)  # what the gain prevents


def test_evaluating_a_run_recorded_before_a_config_key_existed_is_one_line(tmp_path):
  """A run_info.json without `cgml.min_explained_move` (runs before it): one line naming the key, no traceback."""
  config = load_config("toy3d,runlocal")
  config.unlock()
  del config.cgml["min_explained_move"]
  spec = {"x": np.zeros((2, 1, 1, 1), np.float32), "y": np.zeros((2, 1, 1, 3), np.float32)}
  workdir_lib.write_run_info(str(tmp_path), config, spec, imports=())
  with pytest.raises(inference.RunPredatesCodeError,
                     match=r"run_info\.json has no config key 'min_explained_move', which method 'cgml' reads "
                           r"now: the run was trained by an older version .*; retrain it\.$"):
    inference.load_trained(str(tmp_path))
  assert issubclass(inference.RunPredatesCodeError, workdir_lib.WorkdirError)  # evaluate/sample: one line



# ---------------------------------------------------------------- the "w/o rho" ablation (issue 38)


def test_the_no_rho_ablation_differs_from_its_reference_in_rho_only():
  """`:X,no_momentum` is `:X` with `cgml.use_momentum` off, every other key equal."""
  variants = config_module().VARIANTS
  pairs = [(v, ",".join(f for f in v.split(",") if f != "no_momentum")) for v in variants
           if "no_momentum" in v.split(",")]
  assert {"no_momentum", "toy3d,no_momentum", "toy3d,paper,no_momentum"} <= {a for a, _ in pairs}
  for ablation, reference in pairs:
    a, b = (config_lib.flatten(load_config(arg or None)) for arg in (ablation, reference))
    assert a.keys() == b.keys(), (ablation, reference)
    assert {k for k in a if a[k] != b[k]} == {"cgml.use_momentum"}, (ablation, reference)
    assert b["cgml.use_momentum"] and not a["cgml.use_momentum"]


def test_without_rho_inference_steps_by_z_s_move_times_the_same_gain():
  """The ablation's step is z_hat - z (z_hat at gain 1), scaled by the gain Eq. 4's step gets.

  It used to ignore the gain (z <- z_hat), so where every gain is 0 and the default
  keeps z_0, the ablation still moved z for T steps: it was not the default without rho.
  """
  z, z_hat, rho = jnp.array([[1.0, 0.0]]), jnp.array([[1.0, 2.0]]), jnp.array([0.5])
  # z + 0.25 (z_hat - z) = (1, 0.5), projected.
  np.testing.assert_allclose(latent_geometry.momentum_update(z, z_hat, rho, use_momentum=False, gain=0.25),
                             [[1 / np.sqrt(1.25), 0.5 / np.sqrt(1.25)]], rtol=1e-6)
  np.testing.assert_allclose(latent_geometry.momentum_update(z, z_hat, rho, use_momentum=False, gain=0.0), z)
  # The gain is fitted to the step the ablation takes: s = z_hat - z = (0, 2) against m = (0, 1).
  np.testing.assert_allclose(latent_geometry.step_against_move(z, z_hat, rho, jnp.array([[1.0, 1.0]]),
                                                               use_momentum=False), [2.0, 4.0, 1.0], rtol=1e-6)
  # A fresh state has measured nothing: every calibrated gain is 0, and both configs decode z_0.
  config, method, state, batch = make("toy3d")
  ablation = config.copy_and_resolve_references()
  ablation.unlock()
  ablation.cgml.use_momentum = False
  ablation.lock()
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  for cfg in (config, ablation):
    along = cgml.make_method(cfg, spec).extras["codes_along_inference"]
    codes = jax.jit(along, static_argnums=3)(state, batch["x"], jax.random.PRNGKey(1), 3)
    assert latent_displacement.displacement_metrics(codes)["latent_displacement"] < 1e-6, cfg.cgml.use_momentum


# ---------------------------------------------------------------- persistent codes (Alg. 1, issue 38)


def make_persistent(num_codes=5, index=(3, 1)):
  """(config, method, state, batch) of `:toy3d,runlocal,paper` (persistent codes) with N = num_codes."""
  config = load_config("toy3d,runlocal,paper")
  batch = dict(make("toy3d")[3], index=jnp.asarray(index, jnp.int32))
  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), batch)
  method = cgml.make_method(config, spec, {cgml.NUM_TRAIN_EXAMPLES: np.asarray(num_codes)})
  return config, method, jax.jit(method.init)(jax.random.PRNGKey(0)), batch


def test_persistent_codes_are_alg1_s_z_read_and_written_by_the_example_index():
  config, method, state, batch = make_persistent()
  assert config.cgml.z_start == "persistent" and config.cgml.inner_steps == 2
  codes0 = np.asarray(state.train_codes_NxD)
  assert codes0.shape == (5, config.cgml.z_dim)
  np.testing.assert_allclose(np.linalg.norm(codes0, axis=-1), 1.0, rtol=1e-6)
  steps = {name: jax.jit(fn) for name, fn in method.steps.items()}
  # Line 5 starts from examples 3 and 1's codes and writes z_{t+1} back into their rows only.
  a, _ = steps["z"](state, batch)
  np.testing.assert_array_equal(a.z_prev_BxD, codes0[[3, 1]])
  codes_a = np.asarray(a.train_codes_NxD)
  np.testing.assert_array_equal(codes_a[[3, 1]], a.z_BxD)
  np.testing.assert_array_equal(codes_a[[0, 2, 4]], codes0[[0, 2, 4]])
  assert not np.array_equal(a.z_BxD, a.z_prev_BxD)
  for name in ("znet", "gen"):  # Lines 6-7 leave the codes alone.
    b, _ = steps[name](a, batch)
    np.testing.assert_array_equal(b.train_codes_NxD, codes_a)
    a = b
  # The next inner step continues from the stored codes.
  b, _ = steps["z"](a, batch)
  np.testing.assert_array_equal(b.z_prev_BxD, codes_a[[3, 1]])
  # A later round (another batch, the next epoch): example 1 starts where its last visit ended,
  # example 4 from its initial code; no fresh draw.
  later = dict(batch, index=jnp.asarray([1, 4], jnp.int32))
  c, _ = steps["z"](b.replace(step=jnp.int32(2 * config.cgml.inner_steps)), later)
  np.testing.assert_array_equal(c.z_prev_BxD, np.stack([b.train_codes_NxD[1], codes0[4]]))
  # The best-of-M start keeps no codes (an unused row), and persistent codes need N.
  assert make("toy3d")[2].train_codes_NxD.shape == (1, config.cgml.z_dim)
  spec = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), batch)
  with pytest.raises(ValueError, match="num_train_examples"):
    cgml.make_method(config, spec)


class _Interrupted(Exception):
  pass


def test_a_resumed_run_continues_with_bit_identical_persistent_codes(tmp_path, data_dir, monkeypatch, capsys):
  """Train through an epoch boundary straight, and again with a crash after a checkpoint, then resume."""
  config = load_config("toy3d,runlocal,paper")
  config.data.data_dir = data_dir
  # 64 tiny training examples, 8 a batch, l = 2: 9 rounds visit 72 examples, so some codes twice.
  config.train.num_steps, config.train.checkpoint_every, config.train.sample_every = 18, 8, 0
  straight = train.train_and_evaluate(config, str(tmp_path / "straight"))
  save = train.save_checkpoint

  def save_then_crash(manager, step, state, data_iter):
    save(manager, step, state, data_iter)
    manager.wait_until_finished()
    raise _Interrupted(step)

  monkeypatch.setattr(train, "save_checkpoint", save_then_crash)
  with pytest.raises(_Interrupted):
    train.train_and_evaluate(config, str(tmp_path / "resumed"))
  monkeypatch.setattr(train, "save_checkpoint", save)
  capsys.readouterr()
  resumed = train.train_and_evaluate(config, str(tmp_path / "resumed"))
  assert "Resuming from the checkpoint at step 8." in capsys.readouterr().out
  assert int(resumed.step) == int(straight.step) == 18
  codes = np.asarray(straight.train_codes_NxD)
  assert codes.shape == (64, config.cgml.z_dim)
  np.testing.assert_array_equal(np.asarray(resumed.train_codes_NxD), codes)
  initial = np.asarray(jax.jit(train.build_method(config, str(tmp_path / "straight"))[0].init)(
      jax.random.PRNGKey(config.seed)).train_codes_NxD)
  assert np.all(np.any(codes != initial, axis=-1)), "every example's code was updated"
