"""Accelerator settings (issue #13): the compute dtype, the IMLE chunk size from the device, profiling.

bfloat16 runs on CPU too (slowly), so everything here is checked on CPU; what
is asserted is where the dtype goes (networks compute in it; parameters,
outputs, distances and the argmin stay float32) and how close bfloat16 comes
to float32, not speed.
"""

import importlib.util
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import train
from multimodal_jax import validation
from multimodal_jax.losses import imle_selection
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import imle
from multimodal_jax.models import registry

BF16 = jnp.dtype(jnp.bfloat16)


def load_config(name, arg=None):
  spec = importlib.util.spec_from_file_location("cfg", str(REPO / "configs" / name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def matmul_flops_by_dtype(fn, *args) -> dict:
  """{dtype name: FLOPs} of the convolutions and matrix products in fn's jaxpr, by operand dtype."""
  out = {}

  def walk(jaxpr, times):
    for eqn in jaxpr.eqns:
      if eqn.primitive.name in ("conv_general_dilated", "dot_general"):
        size = np.prod(eqn.outvars[0].aval.shape) * np.prod(eqn.invars[1].aval.shape)
        name = eqn.invars[0].aval.dtype.name
        out[name] = out.get(name, 0) + times * size
      for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
          sub = getattr(item, "jaxpr", item)
          if hasattr(sub, "eqns"):
            walk(sub, times * (eqn.params["length"] if eqn.primitive.name == "scan" else 1))

  walk(jax.make_jaxpr(fn)(*args).jaxpr, 1)
  return out


def _vgg_block1_params() -> dict:
  """Random He-normal parameters of VGG-19's first block: all that a relu1_2 distance runs."""
  rng = np.random.default_rng(0)
  he = lambda cin, cout: jnp.asarray(rng.standard_normal((3, 3, cin, cout)) * np.sqrt(2 / (9 * cin)), jnp.float32)
  return {"conv1_1": {"kernel": he(3, 64), "bias": jnp.zeros(64)},
          "conv1_2": {"kernel": he(64, 64), "bias": jnp.zeros(64)}}


# ---------------------------------------------------------------- the switch


def test_auto_is_float32_on_cpu_and_the_names_resolve():
  config = config_lib.base_config()
  assert config.compute_dtype == "auto"
  assert jax.default_backend() == "cpu"
  assert config_lib.resolve_compute_dtype(config) == jnp.float32
  config.compute_dtype = "bfloat16"
  assert config_lib.resolve_compute_dtype(config) == BF16
  config.compute_dtype = "float16"
  with pytest.raises(ValueError, match=r"config.compute_dtype='float16' is invalid: valid: \['auto'"):
    validation.validate(config)


def test_a_config_recorded_before_the_key_existed_computes_in_float32():
  old = ml_collections.ConfigDict({"method": "regression"})
  assert config_lib.resolve_compute_dtype(old) == jnp.float32


# ---------------------------------------------------------------- every generator


def _generator_case(module_cfg, io, z_shape):
  init = lambda m, rng, x, z: m.init({"params": rng, "dropout": rng}, x, z)
  apply = lambda m, v, x, z, rng: m.apply(v, x, z, rngs={"dropout": rng})
  return module_cfg, io, z_shape, init, apply


def _cgml_case(module_cfg, io):
  # The Z-network may also see the iteration's place in the round (methods/cgml.py).
  t = lambda nets, z: [jnp.zeros(z.shape[:1])] if nets["znet"].iteration_input else []

  def init(nets, rng, x, z):
    encoder = nets["encoder"].init(rng, x)
    h, skips = nets["encoder"].apply(encoder, x)
    return {"encoder": encoder, "generator": nets["generator"].init(rng, h, skips, z),
            "znet": nets["znet"].init(rng, z, h, *t(nets, z))}

  def apply(nets, variables, x, z, rng):
    del rng
    h, skips = nets["encoder"].apply(variables["encoder"], x)
    return (nets["generator"].apply(variables["generator"], h, skips, z),
            nets["znet"].apply(variables["znet"], z, h, *t(nets, z)))

  return module_cfg, io, io.code_shape, init, apply


def _models():
  """name -> (model config, ModelIO, code shape, init, apply) for every registered model.

  The model sections are the configs' :runlocal ones.
  """
  layouts = registry.ModelIO((32, 64, 6), (32, 64, 3))
  sr = registry.ModelIO((4, 4, 3), (32, 32, 3), (4, 4, 5))
  diversity = load_config("diversity.py", "runlocal")
  z_dim = load_config("cgml.py", "runlocal").cgml.z_dim
  crn = load_config("layout_imle.py", "runlocal")
  crn_code = registry.code_shape(crn.model, (32, 64, 6))  # whatever code the config's CRN takes
  return {
      "conv_generator": _generator_case(load_config("regression.py", "runlocal").model, sr, (4, 4, 5)),
      "rrdb": _generator_case(load_config("srim.py", "runlocal").model, sr, (4, 4, 5)),
      "crn": _generator_case(crn.model, registry.ModelIO((32, 64, 6), (32, 64, 3), crn_code), crn_code),
      "dropout_crn": _generator_case(load_config("latent_codes.py", "runlocal").model,
                                     registry.ModelIO((32, 64, 6), (32, 64, 3), (8,)), (3, 8)),
      "unet": _generator_case(diversity.model, layouts, None),
      "patchgan": (diversity.discriminator, layouts, None, lambda m, rng, x, z: m.init(rng, x, x[..., :3]),
                   lambda m, v, x, z, rng: m.apply(v, x, x[..., :3])),
      "cgml_unet": _cgml_case(load_config("cgml.py", "runlocal").model,
                              registry.ModelIO((32, 32, 1), (32, 32, 1), (z_dim,))),
      "cgml_mlp": _cgml_case(load_config("cgml.py", "toy3d,runlocal").model,
                             registry.ModelIO((1, 1, 1), (1, 1, 3), (z_dim,))),
      # x (the input) and y_t (the flow's state) at once: z stands in for y_t here.
      "velocity_unet": (load_config("flow_matching.py", "runlocal").model, registry.ModelIO((32, 64, 6), (32, 64, 3)),
                        (32, 64, 3), lambda m, rng, x, z: m.init(rng, x, z, jnp.zeros(x.shape[:1])),
                        lambda m, v, x, z, rng: m.apply(v, x, z, jnp.full(x.shape[:1], 0.5))),
  }


def test_every_registered_model_computes_in_bfloat16_with_float32_params_and_outputs():
  cases = _models()
  assert sorted(cases) == registry.model_names()  # a new model must be added here
  rng = jax.random.PRNGKey(0)
  for name, (cfg, io, z_shape, init, apply) in cases.items():
    batch = 32 if name == "cgml_mlp" else 2  # dense layers of batch 32 outweigh cGML's float32 sigma
    x = jax.ShapeDtypeStruct((batch,) + io.x_shape, jnp.float32)
    z = None if z_shape is None else jax.ShapeDtypeStruct((batch,) + tuple(z_shape), jnp.float32)
    with registry.compute_dtype_scope(jnp.bfloat16):
      built = registry.make_model(cfg, io)
    # Shapes and dtypes only (eval_shape, make_jaxpr): nothing is computed.
    variables = jax.eval_shape(lambda x, z: init(built, rng, x, z), x, z)
    dtypes = {leaf.dtype for leaf in jax.tree.leaves(variables)}
    assert dtypes == {jnp.dtype(jnp.float32)}, (name, dtypes)
    outputs = jax.eval_shape(lambda v, x, z: apply(built, v, x, z, rng), variables, x, z)
    assert {o.dtype for o in jax.tree.leaves(outputs)} == {jnp.dtype(jnp.float32)}, name
    flops = matmul_flops_by_dtype(lambda v, x, z: apply(built, v, x, z, rng), variables, x, z)
    assert flops.get("bfloat16", 0) > 0.5 * sum(flops.values()), (name, flops)
    # Outside any scope (and in float32 runs) nothing changes: no bfloat16 product at all.
    plain = registry.make_model(cfg, io)
    assert "bfloat16" not in matmul_flops_by_dtype(lambda v, x, z: apply(plain, v, x, z, rng), variables, x, z)


def test_make_method_builds_its_networks_in_the_configs_dtype():
  config = load_config("regression.py", "runlocal")
  config.compute_dtype = "bfloat16"
  spec = {"x": jax.ShapeDtypeStruct((2, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((2, 32, 64, 3),
                                                                                              jnp.float32)}
  method = methods_base.make_method(config, spec)
  state = jax.eval_shape(method.init, jax.random.PRNGKey(0))
  assert {leaf.dtype for leaf in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
  assert {leaf.dtype for leaf in jax.tree.leaves(state.networks["generator"].opt_state)
          if jnp.issubdtype(leaf.dtype, jnp.floating)} == {jnp.dtype(jnp.float32)}
  batch = {k: jnp.zeros(v.shape, v.dtype) for k, v in spec.items()}
  flops = matmul_flops_by_dtype(method.steps["train"], state, batch)
  assert set(flops) == {"bfloat16"}, flops
  assert registry.current_compute_dtype() == jnp.float32  # the scope ended with make_method


def test_a_bfloat16_vgg_distance_gives_float32_features_and_distances():
  params = _vgg_block1_params()
  make = lambda dtype: perceptual.Distance(
      name="vgg", pixel_norm="l1", pixel_weight=0.5, layers=("relu1_2",), layer_weights=(1.0,),
      feature_norm="l1", trunk="vgg19", input_norm="torchvision", weights_source="random (test)", dtype=dtype,
      params=params)
  a, b = jax.random.uniform(jax.random.PRNGKey(1), (2, 2, 16, 16, 3))
  d32, d16 = make("float32"), make("bfloat16")
  assert "computing in bfloat16" in d16.describe() and "computing in" not in d32.describe()
  assert d16.features(a)["relu1_2"].dtype == jnp.float32
  flops = matmul_flops_by_dtype(lambda x: d16.features(x), a)
  assert set(flops) == {"bfloat16"}
  got, want = jax.jit(lambda d: d(a, b))(d16), jax.jit(lambda d: d(a, b))(d32)
  assert got.dtype == jnp.float32
  assert not np.array_equal(got, want)  # the trunk did compute in bfloat16
  np.testing.assert_allclose(got, want, rtol=0.02)


# ---------------------------------------------------------------- selection and training in bfloat16


def test_bfloat16_selection_picks_codes_within_one_percent_of_the_float32_choice():
  """On a fixed small net: the float32 distance of the code bfloat16 selects vs that of float32's choice.

  Targets are the net's own outputs for other codes (as late in IMLE training),
  so the m candidates' distances differ by far more than 1%.
  """
  cfg = ml_collections.ConfigDict({"name": "conv_generator", "features": 16, "num_blocks": 1,
                                   "global_skip": "none"})
  io = registry.ModelIO((4, 4, 3), (16, 16, 3), (4, 4, 4))
  nets = {dtype: registry.make_model(cfg, io, dtype) for dtype in ("float32", "bfloat16")}
  b, m, latent = 4, 16, (4, 4, 4)
  x = jax.random.uniform(jax.random.PRNGKey(0), (b,) + io.x_shape)
  params = nets["float32"].init(jax.random.PRNGKey(2), x, jnp.zeros((b,) + latent))["params"]
  y = nets["float32"].apply({"params": params}, x, jax.random.normal(jax.random.PRNGKey(1), (b,) + latent))
  distance = perceptual.Distance(name="vgg", pixel_norm="l1", pixel_weight=1.0, layers=("relu1_2",),
                                 layer_weights=(0.5,), feature_norm="l1", trunk="vgg19", input_norm="torchvision",
                                 weights_source="random (test)", params=_vgg_block1_params())

  @jax.jit  # everything an argument: closed-over arrays would be constant-folded through VGG
  def select(params, distance, x, y, rng):
    out = {}
    for dtype, net in nets.items():
      out[dtype] = imle_selection.select_nearest_latents(
          lambda x_, z_, net=net: net.apply({"params": params}, x_, z_), distance.replace(dtype=dtype), x, y, rng,
          num_samples=m, latent_shape=latent, chunk_size=8)
    # Every code's float32 distance, to judge both choices by the same measure.
    z = imle_selection.draw_latents(jax.random.split(rng)[0], jnp.arange(b), jnp.arange(m), latent)
    y_hat = jax.vmap(lambda z_: nets["float32"].apply({"params": params}, x, z_), in_axes=1, out_axes=1)(z)
    return out, distance(y_hat, y[:, None])

  selections, all_d = select(params, distance, x, y, jax.random.PRNGKey(3))
  s32, s16 = selections["float32"], selections["bfloat16"]
  assert s16.distances.dtype == s16.latents.dtype == jnp.float32
  spread = (all_d.max(axis=1) - all_d.min(axis=1)) / all_d.min(axis=1)
  assert np.all(spread > 0.1), spread  # codes matter far more than the 1% tolerance
  np.testing.assert_allclose(np.take_along_axis(all_d, s32.indices[:, None], 1)[:, 0], s32.distances, rtol=1e-5)
  assert not np.array_equal(s16.distances, s32.distances)  # bfloat16 did compute differently
  chosen_by_bf16 = np.take_along_axis(all_d, s16.indices[:, None], 1)[:, 0]
  assert np.all(chosen_by_bf16 <= 1.01 * s32.distances), (chosen_by_bf16, s32.distances)


def _train_regression(dtype: str, steps: int = 40) -> np.ndarray:
  config = load_config("regression.py", "runlocal")
  config.compute_dtype = dtype
  config.optimizer.learning_rate = 1e-2
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(8, 8, 8, 3)), jnp.float32)
  y = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)[:, :8, :8] ** 2  # a smooth function of x
  batch = {"x": x, "y": y}
  method = methods_base.make_method(config, {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()})
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  step = jax.jit(method.steps["train"])
  losses = []
  for _ in range(steps):
    state, metrics = step(state, batch)
    losses.append(metrics["loss"])
  return np.asarray(losses)


def test_a_short_bfloat16_regression_run_tracks_the_float32_run():
  """40 Adam steps of conv_generator regression: the losses stay within 5% of each other.

  (Measured on CPU: at most 1.2% apart over these steps, 1.8% by step 54.)
  """
  f32, bf16 = _train_regression("float32"), _train_regression("bfloat16")
  assert f32[-1] < 0.8 * f32[0] and bf16[-1] < 0.8 * bf16[0]  # both learned
  assert not np.array_equal(f32, bf16)  # and bfloat16 did compute differently
  np.testing.assert_allclose(bf16[::5], f32[::5], rtol=0.05)
  np.testing.assert_allclose(bf16[-1], f32[-1], rtol=0.05)


# ---------------------------------------------------------------- imle.chunk_size = 'auto'


def test_largest_fitting_chunk_searches_the_divisors_of_m():
  calls = []

  def memory_at(chunk):
    calls.append(chunk)
    return 1000 + 100 * chunk

  assert imle_selection.chunk_candidates(100) == [1, 2, 4, 5, 10, 20, 25, 50, 100]
  assert imle_selection.largest_fitting_chunk(memory_at, 100, budget_bytes=3600) == 25
  assert len(calls) <= 4  # a binary search, not every divisor
  assert imle_selection.largest_fitting_chunk(memory_at, 100, budget_bytes=1e9) == 100
  assert imle_selection.largest_fitting_chunk(memory_at, 100, budget_bytes=10) == 1  # nothing fits: the least
  assert imle_selection.largest_fitting_chunk(lambda c: None, 100, budget_bytes=1e9) is None


def _imle_config(chunk_size):
  """SRIM's default config (chunk_size 'auto'), shrunk: m = 4, a 1-block conv generator, 4x4 -> 16x16."""
  config = load_config("srim.py")
  assert config.imle.chunk_size == "auto"
  config.imle.chunk_size = chunk_size
  config.imle.num_samples = 4
  config.imle.bilinear_from_step = -1
  config.model.name, config.model.features, config.model.num_blocks = "conv_generator", 4, 1
  config.model.global_skip = "none"
  imle.validate_config(config)
  spec = {"x": jax.ShapeDtypeStruct((4, 4, 4, 3), jnp.float32), "y": jax.ShapeDtypeStruct((4, 16, 16, 3),
                                                                                            jnp.float32)}
  return config, spec


def test_auto_chunk_on_cpu_is_the_cpu_tuned_25_capped_at_m_without_compiling(monkeypatch):
  config, spec = _imle_config("auto")
  monkeypatch.setattr(imle_selection, "largest_fitting_chunk", lambda *a: pytest.fail("compiled on CPU"))
  method = imle.make_method(config, spec)
  assert "chunks of 4, auto: the CPU-tuned 25 capped at m (cpu reports no memory size)" in method.description


def test_auto_chunk_with_a_device_memory_size_keeps_the_largest_chunk_that_fits(monkeypatch):
  config, spec = _imle_config("auto")
  seen = {}
  real = imle_selection.largest_fitting_chunk

  def spy(memory_at, num_samples, budget_bytes):
    seen["budget"] = budget_bytes
    seen.setdefault("bytes", {})
    return real(lambda c: seen["bytes"].setdefault(c, memory_at(c)), num_samples, budget_bytes)

  monkeypatch.setattr(imle_selection, "largest_fitting_chunk", spy)
  monkeypatch.setattr(imle_selection, "device_memory_bytes", lambda: 2**40)
  assert "chunks of 4, auto: the largest divisor of m" in imle.make_method(config, spec).description
  full = seen["bytes"][4]  # measured by CPU memory_analysis of the compiled selection
  limit = int((full - 1) / imle_selection.AUTO_CHUNK_MEMORY_SHARE)
  monkeypatch.setattr(imle_selection, "device_memory_bytes", lambda: limit)
  seen.clear()
  description = imle.make_method(config, spec).description
  chosen = int(description.split("chunks of ")[1].split(",")[0])
  assert seen["budget"] == imle_selection.AUTO_CHUNK_MEMORY_SHARE * limit
  assert chosen < 4 and seen["bytes"][chosen] <= seen["budget"]
  assert all(b > seen["budget"] for c, b in seen["bytes"].items() if c > chosen)
  assert seen["bytes"][chosen] < full  # memory grows with the chunk


@pytest.mark.parametrize("value", ["big", 0, 9])
def test_validate_rejects_a_bad_chunk_size(value):
  config, _ = _imle_config("auto")
  config.imle.chunk_size = value
  with pytest.raises(ValueError, match="imle.chunk_size"):
    imle.validate_config(config)


# ---------------------------------------------------------------- --profile_steps


def test_profile_steps_leaves_a_trace_under_workdir_profile(tmp_path, data_dir):
  config = load_config("regression.py", "runlocal")
  config.data.data_dir = data_dir
  train.train_and_evaluate(config, str(tmp_path), profile_steps=2)
  traces = [f for _, _, files in os.walk(tmp_path / "profile") for f in files if f.endswith(".xplane.pb")]
  assert traces, sorted(os.walk(tmp_path))
