"""Conditional IMLE (IJCV Alg. 1): the selection kernel, the method, SRIM's RRDB and data."""

import importlib.util
import os
import subprocess
import sys
import textwrap

import chex
import jax
import jax.numpy as jnp
import flax.linen as nn
import ml_collections
import numpy as np
import pytest
from scipy import stats as scipy_stats
import tensorflow_datasets as tfds

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax import validation
from multimodal_jax.data import pipeline
from multimodal_jax.losses import imle_selection
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import imle
from multimodal_jax.models import registry as models_registry
from multimodal_jax.models import rrdb
from multimodal_jax.models import vgg as vgg_lib

SRIM = str(REPO / "configs" / "srim.py")


def load_config(path, arg=None):
  spec = importlib.util.spec_from_file_location("cfg", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


# ---------------------------------------------------------------- the selection kernel

LATENT = (2, 2, 1)


def toy_generate(x_Bx2x2x3, z_Bx2x2x1):
  """A cheap conditional 'generator': [B, 2, 2, 3] -> [B, 4, 4, 3] in [0, 1]."""
  h = x_Bx2x2x3 + jnp.tanh(z_Bx2x2x1) * jnp.array([1.0, -0.5, 0.25])
  return jax.nn.sigmoid(jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2))


def pixel_l2():
  return perceptual.make_distance(config_lib.default_distance_config("pixel", pixel_norm="l2"))


def random_vgg_distance():
  """Pixels + VGG-19 relu1_2 with random weights: exercises features-once / from_features."""
  return perceptual.Distance(name="vgg", pixel_norm="l1", pixel_weight=0.5, layers=("relu1_2",),
                             layer_weights=(2.0,), feature_norm="l1", trunk="vgg19",
                             input_norm="torchvision", weights_source="random (test)",
                             params=vgg_lib.init_vgg_params("vgg19"))


def toy_batch(b=4, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(b, 2, 2, 3)).astype(np.float32)
  y = rng.uniform(size=(b, 4, 4, 3)).astype(np.float32)
  mask = rng.uniform(size=(b, 4, 4, 1)).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y), jnp.asarray(mask)


@jax.jit
def _one_distance(distance, x, z, y, mask):
  return distance(toy_generate(x, z), y, mask)


def per_sample_loop(distance, x, y, mask, rng, num_samples):
  """The plain loop of Alg. 1 l. 4-8: one T and one L call per (i, j), same codes."""
  rng_codes, _ = jax.random.split(rng)
  best = []
  for i in range(x.shape[0]):
    zs = [jax.random.normal(jax.random.fold_in(jax.random.fold_in(rng_codes, i), j), LATENT)
          for j in range(num_samples)]
    ds = [float(_one_distance(distance, x[i:i + 1], z[None], y[i:i + 1],
                              None if mask is None else mask[i:i + 1])[0]) for z in zs]
    j = int(np.argmin(ds))
    best.append((j, ds[j], zs[j], np.mean(ds)))
  return best


def select(distance, x, y, mask, rng, num_samples, chunk_size=None, perturbation=0.0, example_blocks=1):
  fn = jax.jit(lambda d, x, y, m, r: imle_selection.select_nearest_latents(
      toy_generate, d, x, y, r, num_samples=num_samples, latent_shape=LATENT, chunk_size=chunk_size,
      perturbation=perturbation, example_blocks=example_blocks, mask=m))
  return fn(distance, x, y, mask, rng)


@pytest.mark.parametrize("which", ["pixel_l2", "vgg_masked"])
def test_selection_equals_a_plain_per_sample_loop(which):
  distance = pixel_l2() if which == "pixel_l2" else random_vgg_distance()
  x, y, mask = toy_batch()
  mask = mask if which == "vgg_masked" else None
  rng = jax.random.PRNGKey(7)
  got = select(distance, x, y, mask, rng, num_samples=6, chunk_size=4)  # 2 chunks, the last overhangs
  want = per_sample_loop(distance, x, y, mask, rng, 6)
  np.testing.assert_array_equal(np.asarray(got.indices), [w[0] for w in want])
  np.testing.assert_allclose(got.distances, [w[1] for w in want], rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(got.latents, np.stack([w[2] for w in want]), rtol=0, atol=0)
  np.testing.assert_allclose(got.mean_distances, [w[3] for w in want], rtol=1e-5)
  assert len(set(np.asarray(got.indices).tolist())) > 1  # not trivially the same j everywhere


def test_chunking_and_blocks_do_not_change_the_result():
  distance = pixel_l2()
  x, y, _ = toy_batch(b=6, seed=1)
  rng = jax.random.PRNGKey(3)
  ref = select(distance, x, y, None, rng, num_samples=10)
  for chunk, blocks in [(1, 1), (3, 1), (4, 2), (10, 3), (7, 6)]:
    got = select(distance, x, y, None, rng, num_samples=10, chunk_size=chunk, example_blocks=blocks)
    np.testing.assert_array_equal(got.indices, ref.indices, err_msg=f"chunk {chunk}, blocks {blocks}")
    np.testing.assert_allclose(got.distances, ref.distances, rtol=1e-6)
    np.testing.assert_array_equal(got.latents, ref.latents)


def test_selection_is_deterministic_given_the_rng_and_perturbs_the_chosen_code():
  distance = pixel_l2()
  x, y, _ = toy_batch(b=64, seed=2)
  a = select(distance, x, y, None, jax.random.PRNGKey(0), num_samples=8, chunk_size=4)
  b = select(distance, x, y, None, jax.random.PRNGKey(0), num_samples=8, chunk_size=4)
  c = select(distance, x, y, None, jax.random.PRNGKey(1), num_samples=8, chunk_size=4)
  np.testing.assert_array_equal(a.latents, b.latents)
  assert not np.array_equal(np.asarray(a.latents), np.asarray(c.latents))
  # Nearest of 8 beats the average sample.
  assert np.all(np.asarray(a.distances) <= np.asarray(a.mean_distances))
  p = select(distance, x, y, None, jax.random.PRNGKey(0), num_samples=8, chunk_size=4, perturbation=0.1)
  np.testing.assert_array_equal(p.indices, a.indices)
  np.testing.assert_array_equal(p.distances, a.distances)
  noise = np.asarray(p.latents - a.latents)
  assert abs(noise.std() - 0.1) < 0.01 and abs(noise.mean()) < 0.01


def test_code_lattice_spreads_its_points_on_the_torus():
  g = imle_selection.code_lattice(16, 2)
  # The Korobov generator h = 3: points (j, 3j) / 16, nearest pair sqrt(1 + 3^2) / 16 apart on the
  # torus, against sqrt(2) / 16 for the diagonal h = 1.
  np.testing.assert_array_equal(g * 16, np.stack([np.arange(16), 3 * np.arange(16) % 16], axis=1))
  np.testing.assert_array_equal(imle_selection.code_lattice(5, 1)[:, 0], np.arange(5) / 5)
  for m, d in [(16, 2), (10, 3), (50, 20)]:
    g = imle_selection.code_lattice(m, d)
    assert g.shape == (m, d) and g.min() >= 0 and g.max() < 1
    assert len({tuple(p) for p in g.tolist()}) == m


def test_stratified_codes_are_normal_and_one_per_stratum():
  """Each code is N(0, I) (a uniformly shifted lattice through the normal quantile); in 1-D the m
  codes of an input fall one in each of the m equal-probability strata."""
  m, ids = 8, np.arange(400)
  lattice = jnp.asarray(imle_selection.code_lattice(m, 1), jnp.float32)
  z = np.asarray(imle_selection.draw_latents(jax.random.PRNGKey(0), ids, np.arange(m), (1,), lattice))
  strata = np.floor(scipy_stats.norm.cdf(z[..., 0]) * m).astype(int)
  np.testing.assert_array_equal(np.sort(strata, axis=1), np.tile(np.arange(m), (len(ids), 1)))
  assert scipy_stats.kstest(z[:, 3, 0], "norm").pvalue > 0.01  # one sample index across inputs
  assert scipy_stats.kstest(z.ravel(), "norm").pvalue > 0.01
  # 2-D: the codes of input b are the lattice shifted by u_b (mod 1) in quantile space.
  lattice = imle_selection.code_lattice(m, 2)
  z = np.asarray(imle_selection.draw_latents(jax.random.PRNGKey(1), ids[:5], np.arange(m), (2,),
                                             jnp.asarray(lattice, jnp.float32)))
  u = scipy_stats.norm.cdf(z.astype(np.float64))
  np.testing.assert_allclose(np.mod(u - u[:, :1] + 1e-6, 1.0) - 1e-6, np.broadcast_to(lattice, u.shape),
                             atol=1e-5)


def test_stratified_codes_leave_fewer_regions_of_the_code_plane_unsampled():
  """12 wedges of equal probability around the origin (the cells of layout_imle's 2-number code):
  16 independent codes miss a given wedge (11/12)^16 = 25% of the time, a shifted lattice rarely."""
  ids, m = np.arange(500), 16
  missed = {}
  for name, lattice in [("iid", None), ("lattice", jnp.asarray(imle_selection.code_lattice(m, 2)))]:
    z = np.asarray(imle_selection.draw_latents(jax.random.PRNGKey(0), ids, np.arange(m), (2,), lattice))
    wedge = np.floor((np.arctan2(z[..., 1], z[..., 0]) + np.pi) / (2 * np.pi / 12)).astype(int) % 12
    hit = np.zeros((len(ids), 12), bool)
    np.put_along_axis(hit, wedge, True, axis=1)
    missed[name] = 1.0 - hit.mean()
  assert abs(missed["iid"] - (11 / 12) ** 16) < 0.02, missed
  assert missed["lattice"] < 0.1, missed


def test_stratified_selection_does_not_depend_on_chunking():
  distance = pixel_l2()
  x, y, _ = toy_batch(b=6, seed=1)
  run = lambda chunk, blocks: jax.jit(lambda x, y: imle_selection.select_nearest_latents(
      toy_generate, distance, x, y, jax.random.PRNGKey(3), num_samples=10, latent_shape=LATENT,
      chunk_size=chunk, example_blocks=blocks, stratified=True))(x, y)
  ref = run(10, 1)
  iid = select(distance, x, y, None, jax.random.PRNGKey(3), num_samples=10)
  assert not np.array_equal(np.asarray(ref.latents), np.asarray(iid.latents))
  for chunk, blocks in [(3, 1), (4, 2), (7, 6)]:
    got = run(chunk, blocks)
    np.testing.assert_array_equal(got.indices, ref.indices, err_msg=f"chunk {chunk}, blocks {blocks}")
    np.testing.assert_array_equal(got.latents, ref.latents)


def test_selection_sharded_over_four_devices_matches_one_and_communicates_nothing(tmp_path):
  script = textwrap.dedent("""
      import jax, jax.numpy as jnp, numpy as np, sys
      sys.path.insert(0, %r)
      from test_imle import toy_generate, toy_batch, pixel_l2, LATENT
      from multimodal_jax.losses import imle_selection
      assert jax.device_count() == 4
      from multimodal_jax import sharding
      mesh = sharding.make_mesh()  # the loop's mesh (Auto axis)
      shard = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
      x, y, _ = toy_batch(b=8, seed=4)
      d = pixel_l2()
      fn = lambda x, y, r, blocks: imle_selection.select_nearest_latents(
          toy_generate, d, x, y, r, num_samples=6, latent_shape=LATENT, chunk_size=4,
          example_blocks=blocks, num_shards=4)
      rng = jax.random.PRNGKey(5)
      one = jax.devices()[0]
      ref = jax.jit(fn, static_argnums=3)(jax.device_put(x, one), jax.device_put(y, one), rng, 1)
      for blocks in (1, 2):
        f = jax.jit(fn, static_argnums=3)
        xs, ys = jax.device_put(x, shard), jax.device_put(y, shard)
        hlo = f.lower(xs, ys, rng, blocks).compile().as_text()
        for op in ("all-gather", "all-reduce", "all-to-all", "collective-permute"):
          assert op not in hlo, (blocks, op)
        got = f(xs, ys, rng, blocks)
        np.testing.assert_array_equal(got.indices, ref.indices)
        np.testing.assert_allclose(got.distances, ref.distances, rtol=1e-6)
        np.testing.assert_array_equal(got.latents, ref.latents)
      print("OK")
      """ % str(REPO / "tests"))
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300,
                        cwd=REPO)
  assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-5000:]


# ---------------------------------------------------------------- SRIM's RRDB network


def numpy_params(module, *inputs, scale=0.1, seed=0):
  """Random parameters in `module`'s layout without compiling its (threefry-heavy) init."""
  shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype), shapes)


def test_rrdb_shapes_range_and_split_equals_concat():
  kw = dict(out_channels=3, features=8, num_blocks=2, growth=4, upsample_factor=8)
  split, concat = rrdb.RRDBNet(**kw, dense_conv_style="split"), rrdb.RRDBNet(**kw, dense_conv_style="concat")
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 4, 4, 3))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 4, 4, 5))
  params = numpy_params(split, x, z, scale=0.15)["params"]  # large enough for the trunk to matter
  run = jax.jit(lambda module, p, z, bilinear: module.apply({"params": p}, x, z, bilinear), static_argnums=0)
  y = run(split, params, z, True)
  assert y.shape == (2, 32, 32, 3) and float(y.min()) >= 0.0 and float(y.max()) <= 1.0
  # The same weights in the concatenate-then-convolve layout give the same function.
  stacked = params["rrdbs"]["rrdb"]
  cparams = dict(params, rrdbs={"rrdb": {rdb: jax.vmap(lambda p: rrdb.concat_kernel(p, 8, 4))(stacked[rdb])
                                         for rdb in stacked}})
  np.testing.assert_allclose(run(concat, cparams, z, True), y, atol=1e-4)
  # The upsampling switch: a traced flag picks the same branch as a Python one, and the two differ.
  np.testing.assert_allclose(run(split, params, z, jnp.bool_(True)), y, atol=1e-5)
  y_nearest = jax.jit(lambda p: split.apply({"params": p}, x, z, False))(params)
  np.testing.assert_allclose(run(split, params, z, jnp.bool_(False)), y_nearest, atol=1e-5)
  assert float(jnp.abs(y - y_nearest).max()) > 1e-3
  # The code is an input: different z, different output.
  assert float(jnp.abs(run(split, params, -z, True) - y).max()) > 1e-4


def test_upsampling_matches_jax_image_resize_and_unrolling_keeps_the_function():
  h = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 4))
  for bilinear, method in ((False, "nearest"), (True, "bilinear")):
    want = jax.image.resize(h, (2, 6, 10, 4), method)
    np.testing.assert_allclose(rrdb.upsample2x(h, bilinear), want, atol=1e-6)
    np.testing.assert_allclose(rrdb.upsample2x(h, jnp.bool_(bilinear)), want, atol=1e-6)
  x, z = jnp.ones((1, 4, 4, 3)) * 0.3, jnp.ones((1, 4, 4, 2))
  rolled = rrdb.RRDBNet(features=4, num_blocks=3, growth=4, upsample_factor=2, unroll=1)
  params = numpy_params(rolled, x, z)
  unrolled = rolled.clone(unroll=0)
  assert jax.tree.map(jnp.shape, params) == jax.tree.map(
      jnp.shape, jax.eval_shape(unrolled.init, jax.random.PRNGKey(0), x, z))
  np.testing.assert_allclose(jax.jit(rolled.apply)(params, x, z), jax.jit(unrolled.apply)(params, x, z),
                             atol=1e-6)


def test_rrdb_paper_flops():
  # 64 features, 24 RRDBs, growth 128, 3 + 5 input channels at 8x8 -> 64x64: 14.65 GFLOP.
  assert rrdb.flops_per_sample(64, 24, 128, 8, (8, 8)) == pytest.approx(14.65e9, rel=0.01)


# ---------------------------------------------------------------- the method, driven directly


class TinyMLP(nn.Module):
  """T(x, z) for the 1-D test: x, y are [B, 1, 1, 1] 'images', z is [B, 1, 1, D]."""

  @nn.compact
  def __call__(self, x, z, bilinear=False):
    del bilinear
    h = jnp.concatenate([x.reshape(x.shape[0], -1), z.reshape(z.shape[0], -1)], axis=-1)
    h = nn.relu(nn.Dense(64)(h))
    h = nn.relu(nn.Dense(64)(h))
    return nn.Dense(1)(h).reshape(x.shape)


SPREAD = 0.2  # y = x +- SPREAD


def mixture_batch(rng, n):
  x = rng.uniform(0.3, 0.7, size=(n, 1, 1, 1)).astype(np.float32)
  y = x + SPREAD * rng.choice([-1.0, 1.0], size=x.shape).astype(np.float32)
  return {"x": x, "y": y}


def mixture_config(**imle_overrides):
  config = load_config(SRIM, "runlocal")
  config.data.batch_size = 64  # |S|
  config.distance = config_lib.default_distance_config("pixel", pixel_norm="l2")
  config.imle.selection_distance = config_lib.default_distance_config("pixel", pixel_norm="l2")
  config.imle.num_samples = 16
  config.imle.chunk_size = 8
  config.imle.updates_per_selection = 20
  config.imle.minibatch_size = 16
  config.imle.code_channels = 2
  config.imle.zero_code_steps = 0
  config.imle.bilinear_from_step = -1
  config.optimizer.learning_rate = 3e-3
  config.train.num_steps = 1200
  for k, v in imle_overrides.items():
    config.imle[k] = v
  return config


def train_rounds(method, config, num_rounds, seed=0):
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  chex.clear_trace_counter()  # each call compiles afresh; within it, each step traces once
  steps = {k: chex.assert_max_traces(fn, n=1) for k, fn in method.steps.items()}
  compiled = train.CompiledSteps(steps, replicated, sharded, timed=method.timed_steps)  # imle.time_steps
  state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(seed))
  rng = np.random.default_rng(seed)
  history = []
  for r in range(num_rounds):
    batch = jax.device_put(mixture_batch(rng, config.data.batch_size), sharded)
    state = method.run_round(compiled, state, batch)
    if r % 10 == 9:
      history.append(compiled.flush()[0])
  return state, history


def branch_coverage(samples_BxN, x_B):
  """Shares of samples within SPREAD / 2 of the upper and of the lower branch."""
  up = np.abs(samples_BxN - (x_B[:, None] + SPREAD)) < SPREAD / 2
  down = np.abs(samples_BxN - (x_B[:, None] - SPREAD)) < SPREAD / 2
  return up.mean(), down.mean()


def test_imle_covers_both_modes_where_regression_collapses_to_the_mean():
  x_test = np.linspace(0.32, 0.68, 16).astype(np.float32)
  x_img = jnp.asarray(x_test.reshape(-1, 1, 1, 1))

  config = mixture_config()
  spec = {"x": jax.ShapeDtypeStruct((64, 1, 1, 1), jnp.float32),
          "y": jax.ShapeDtypeStruct((64, 1, 1, 1), jnp.float32)}
  method = imle.make_method(config, spec, generator=TinyMLP())
  state, history = train_rounds(method, config, num_rounds=60)
  assert int(state.step) == 60 * config.imle.updates_per_selection
  first, last = history[0], history[-1]
  assert last["select/selected_distance"] < 0.5 * first["select/selected_distance"], history
  assert last["select/selected_distance"] < last["select/mean_sample_distance"]
  for key in ("select/seconds", "update/seconds", "update/loss", "select/selected_distance_change"):
    assert np.isfinite(last[key]), key
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x_img, jax.random.PRNGKey(9), 200))
  up, down = branch_coverage(samples.reshape(16, 200), x_test)
  assert up >= 0.3 and down >= 0.3, (up, down)

  # The deterministic L1 regression baseline (methods/regression.py) on the same data.
  reg_config = load_config(str(REPO / "configs" / "regression.py"), "runlocal")
  reg_config.model.features, reg_config.model.num_blocks = 32, 2
  reg_config.optimizer.learning_rate = 3e-3
  reg = methods_base.make_method(reg_config, spec)
  mesh = sharding.make_mesh()
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  compiled = train.CompiledSteps(reg.steps, replicated, sharded)
  reg_state = jax.jit(reg.init, out_shardings=replicated)(jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  for _ in range(600):
    reg_state = reg.run_round(compiled, reg_state, jax.device_put(mixture_batch(rng, 64), sharded))
  reg_samples = np.asarray(jax.jit(reg.sample, static_argnums=3)(reg_state, x_img, jax.random.PRNGKey(9), 200))
  reg_samples = reg_samples.reshape(16, 200)
  assert np.all(np.ptp(reg_samples, axis=1) == 0.0)  # one output per input
  up, down = branch_coverage(reg_samples, x_test)
  assert min(up, down) < 0.3
  # ... a blend strictly between the two modes (for L1, any point between them is optimal;
  # it settles near the marginal mean 0.5).
  assert np.all(np.abs(reg_samples[:, 0] - x_test) < SPREAD)


def test_conv_generator_vector_code_is_broadcast_over_space_and_imle_draws_it():
  """`model.code_dim`: IMLE draws a vector code, and G(x, z) equals G on z broadcast to a constant map."""
  config = mixture_config()
  config.model = ml_collections.ConfigDict({"name": "conv_generator", "features": 8, "num_blocks": 1,
                                            "global_skip": "none", "code_dim": 3})
  x_spec = jax.ShapeDtypeStruct((64, 6, 6, 1), jnp.float32)
  assert models_registry.code_shape(config.model, x_spec.shape[1:]) == (3,)
  method = imle.make_method(config, {"x": x_spec, "y": x_spec})
  assert "code (3,)" in method.description
  config.model.code_dim = 0
  assert models_registry.code_shape(config.model, x_spec.shape[1:]) is None
  assert "code (6, 6, 2)" in imle.make_method(config, {"x": x_spec, "y": x_spec}).description

  config.model.code_dim = 3
  io = models_registry.ModelIO(x_shape=(6, 6, 1), y_shape=(6, 6, 1), code_shape=(3,))
  net = models_registry.make_model(config.model, io)
  x = jax.random.uniform(jax.random.PRNGKey(0), (2, 6, 6, 1))
  z = jax.random.normal(jax.random.PRNGKey(1), (2, 3))
  params = net.init(jax.random.PRNGKey(2), x, z)
  z_map = jnp.broadcast_to(z[:, None, None, :], (2, 6, 6, 3))
  np.testing.assert_array_equal(net.apply(params, x, z), net.apply(params, x, z_map))
  samples = method.sample(method.init(jax.random.PRNGKey(0)), x, jax.random.PRNGKey(3), 4)
  assert samples.shape == (2, 4, 6, 6, 1)


def test_zero_code_phase_sampling_and_interpolation():
  config = mixture_config(zero_code_steps=20, updates_per_selection=10)
  spec = {"x": jax.ShapeDtypeStruct((64, 1, 1, 1), jnp.float32),
          "y": jax.ShapeDtypeStruct((64, 1, 1, 1), jnp.float32)}
  method = imle.make_method(config, spec, generator=TinyMLP())
  assert method.steps_per_round == 10
  state, _ = train_rounds(method, config, num_rounds=2)
  assert int(state.step) == 20
  np.testing.assert_array_equal(state.pool_latents, 0.0)  # still z = 0 at selection time
  x = jnp.full((3, 1, 1, 1), 0.5)
  sample = jax.jit(method.sample, static_argnums=3)
  interpolate = jax.jit(method.extras["interpolate"], static_argnums=3)
  # In the z = 0 phase (step < 20) every sample is T(x, 0).
  early = sample(state.replace(step=jnp.int32(19)), x, jax.random.PRNGKey(0), 4)
  assert early.shape == (3, 4, 1, 1, 1) and float(jnp.ptp(early, axis=1).max()) == 0.0
  late = sample(state, x, jax.random.PRNGKey(0), 4)
  assert float(jnp.ptp(late, axis=1).max()) > 0.0
  line = interpolate(state, x, jax.random.PRNGKey(1), 5)
  assert line.shape == (3, 5, 1, 1, 1)
  # The midpoint code is the mean of the end codes: with a fixed pair of ends, the path is continuous.
  assert float(jnp.abs(jnp.diff(line, axis=1)).max()) < float(jnp.abs(line[:, -1] - line[:, 0]).max()) + 1e-6
  # After the z = 0 phase the selection searches: codes are non-zero.
  state, _ = train_rounds(method, config, num_rounds=3)
  assert float(jnp.abs(state.pool_latents).max()) > 0.0


# ---------------------------------------------------------------- configs and the loop


def test_validate_rejects_inconsistent_imle_settings():
  for key, value, message in [("imle.minibatch_size", 64, "must be <= |S|"),
                              ("imle.zero_code_steps", 3, "multiple of imle.updates_per_selection"),
                              ("imle.chunk_size", 9, "must be <= imle.num_samples")]:
    config = load_config(SRIM, "runlocal")
    section, _, field = key.rpartition(".")
    config[section][field] = value
    with pytest.raises(ValueError, match=message):
      validation.validate(config)
  config = load_config(SRIM, "runlocal")
  with config.unlocked():
    del config.imle["stratified_codes"]  # a config written before the key existed
  with pytest.raises(ValueError, match=r"config.imle.stratified_codes is missing: True draws"):
    validation.validate(config)
  with config.unlocked():
    config.imle.stratified_codes = 1  # not a bool
  with pytest.raises(ValueError, match=r"config.imle.stratified_codes=1 is invalid: True draws"):
    validation.validate(config)


def test_srim_runlocal_trains_through_the_loop(tmp_path, data_dir):
  config = load_config(SRIM, "runlocal")
  config.data.data_dir = data_dir
  state = train.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.train.num_steps
  assert float(jnp.abs(state.pool_latents).max()) > 0.0  # past the z = 0 phase: searched codes
  from tensorflow.python.summary.summary_iterator import summary_iterator  # pylint: disable=g-import-not-at-top
  tags = set()
  for name in os.listdir(tmp_path):
    if name.startswith("events.out.tfevents"):
      tags |= {v.tag for e in summary_iterator(str(tmp_path / name)) for v in e.summary.value}
  for tag in ("select/selected_distance", "select/selected_distance_change", "select/seconds",
              "update/loss", "update/seconds", "samples"):
    assert tag in tags, sorted(tags)


# ---------------------------------------------------------------- paper data under mock_data


def _div2k_pairs(builder, split, **kwargs):
  del builder, split, kwargs
  rng = np.random.default_rng(0)
  pairs = []
  for h, w in [(40, 36), (33, 48), (32, 32)]:
    hr = rng.integers(0, 256, size=(8 * h, 8 * w, 3), dtype=np.uint8)
    pairs.append({"hr": hr, "lr": hr[::8, ::8].copy()})
  return pairs


@pytest.mark.parametrize("variant", ["imagenet", "div2k"])
def test_paper_sr_datasets_under_mock_data(variant, tmp_path):
  config = load_config(SRIM, variant)
  config.data.data_dir = str(tmp_path)
  config.data.batch_size = 2
  config.data.num_workers = 0
  config.data.options.augment = False  # flips would break the exact LR / HR alignment checks below
  mock = dict(as_data_source_fn=_div2k_pairs) if variant == "div2k" else {}
  with tfds.testing.mock_data(num_examples=4, **mock):
    batch = next(pipeline.create_train_iterator(config))
    evals = pipeline.load_eval_examples(config, 2)
  for b in (batch, evals):
    assert b["x"].shape == (2, 32, 32, 3) and b["y"].shape == (2, 256, 256, 3)
    assert b["x"].dtype == np.float32 and 0.0 <= b["x"].min() and b["y"].max() <= 1.0
  if variant == "div2k":
    # The LR crop is the same place of the image as the HR crop.
    np.testing.assert_array_equal(evals["x"], evals["y"][:, ::8, ::8])
    np.testing.assert_array_equal(batch["x"], batch["y"][:, ::8, ::8])
  else:
    # LR is the bicubic downsampling of HR.
    from multimodal_jax.data import local_photos_sr  # pylint: disable=g-import-not-at-top
    hr = np.round(evals["y"][0] * 255).astype(np.uint8)
    np.testing.assert_allclose(evals["x"][0], local_photos_sr.bicubic_downsample(hr, 8) / 255.0, atol=1e-6)
