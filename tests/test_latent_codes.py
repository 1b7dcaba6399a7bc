"""Latent drop-out codes (He, Schiele, Fritz, ECCV 2018): Eq. 2 dropout, the §3.2 assignment, neighbours, the method."""

import re

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import config_lib
from multimodal_jax import validation
from multimodal_jax.losses import neighbours
from multimodal_jax.losses import multiple_choice
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import latent_codes
from multimodal_jax.models import dropout_codes
from multimodal_jax.models import registry
from test_train import load_config

CONFIG = str(REPO / "configs" / "latent_codes.py")


def test_channel_dropout_is_eq_2():
  f = jnp.arange(2 * 2 * 3 * 4, dtype=jnp.float32).reshape(2, 2, 3, 4) + 1.0
  z = jnp.array([[0.9, 0.1, 0.6, 0.5], [0.2, 0.7, 0.3, 0.8]])
  out = np.asarray(dropout_codes.channel_dropout(f, z, 0.5))
  keep = np.array([[1, 0, 1, 0], [0, 1, 0, 1]], np.float32)  # z_c > r (0.5 itself is dropped)
  np.testing.assert_allclose(out, np.asarray(f) * keep[:, None, None, :] / 0.5)


def test_assignment_gives_y0_its_best_branch_then_greedy_one_target_per_branch():
  # Targets j (rows) x hypotheses i (columns).
  d = jnp.array([[[0.5, 0.1, 0.9, 0.8],     # Y^0: best is branch 1 (taken even though Y^1 is nearer it)
                  [0.3, 0.05, 0.2, 0.7],    # Y^1: branch 1 is taken -> its next best is 2 (0.2)...
                  [0.25, 0.6, 0.15, 0.9],   # Y^2: ...but Y^2 takes branch 2 first (0.15 is the smallest free)
                  [0.1, 0.1, 0.1, 0.1]]])   # Y^3: padding
  valid = jnp.array([[True, True, True, False]])
  a = np.asarray(multiple_choice.assign_neighbours(d, valid))[0]
  expected = np.zeros((4, 4))
  expected[0, 1] = expected[2, 2] = 1  # then Y^1's best free: branch 0 (0.3) < branch 3 (0.7)
  expected[1, 0] = 1
  np.testing.assert_array_equal(a, expected)


def test_assignment_stops_when_branches_run_out_and_never_doubles_up():
  rng = np.random.default_rng(0)
  d = jnp.asarray(rng.uniform(size=(5, 6, 3)))  # 6 targets, 3 branches
  a = np.asarray(multiple_choice.assign_neighbours(d, jnp.ones((5, 6), bool)))
  assert (a.sum(axis=1) <= 1).all() and (a.sum(axis=2) <= 1).all()
  np.testing.assert_array_equal(a.sum(axis=(1, 2)), 3)  # every branch used
  np.testing.assert_array_equal(a[:, 0].sum(-1), 1)  # Y^0 always assigned
  np.testing.assert_array_equal(a[np.arange(5), 0].argmax(-1), np.asarray(d)[:, 0].argmin(-1))


def test_nearest_candidates_match_brute_force_with_threshold():
  rng = np.random.default_rng(1)
  f = rng.uniform(size=(30, 7)).astype(np.float32)
  for metric, dist in (("l1", lambda a, b: np.abs(a - b).mean(-1)),
                       ("l2", lambda a, b: np.sqrt(((a - b) ** 2).mean(-1)))):
    full = dist(f[:, None], f[None])
    np.fill_diagonal(full, np.inf)
    threshold = np.quantile(full[np.isfinite(full)], 0.2)
    idx, d = neighbours.nearest_candidates(f, threshold, 5, metric)
    for i in range(30):
      order = np.argsort(full[i])[:5]
      ok = full[i, order] < threshold
      np.testing.assert_array_equal(idx[i], np.where(ok, order, -1))
      np.testing.assert_allclose(d[i][ok], full[i, order][ok], rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="metric"):
    neighbours.nearest_candidates(f, 1.0, 3, "cosine")


def test_hsv_features_embed_hue_on_a_circle():
  red = np.zeros((1, 8, 8, 3), np.float32)
  red[..., 0] = 1.0
  grey = np.full((1, 8, 8, 3), 0.5, np.float32)
  f_red = neighbours.hsv_features(red).reshape(16, 3)
  f_grey = neighbours.hsv_features(grey).reshape(16, 3)
  np.testing.assert_allclose(f_red, np.tile([1.0, 0.0, 1.0], (16, 1)), atol=1e-6)  # s=1, h=0, v=1
  np.testing.assert_allclose(f_grey, np.tile([0.0, 0.0, 0.5], (16, 1)), atol=1e-6)  # no hue, no saturation


def test_pick_diverse_takes_one_candidate_per_colour_cluster():
  colours = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
  images = np.repeat(colours, 4, axis=0)[:, None, None, :] * np.ones((1, 4, 4, 1), np.float32)  # 12: RRRRGGGGBBBB
  hsv = neighbours.hsv_features(images)
  candidates = np.array([[0, 1, 4, 5, 8, 2, -1, -1], [1, 2, 3, 0, -1, -1, -1, -1]], np.int32)
  picks = neighbours.pick_diverse(candidates, hsv, 3)
  assert sorted(i // 4 for i in picks[0]) == [0, 1, 2]  # one red, one green, one blue
  assert (picks[1] >= 0).sum() == 1 and picks[1][0] in (0, 1, 2, 3)  # all red: one cluster, no repeats


def _model(architecture, n=3, features=(4, 6, 5)):
  cfg = ml_collections.ConfigDict(dict(name="dropout_crn", architecture=architecture, features=features,
                                       base_height=2, base_width=4, split_at=1, num_branches=n,
                                       dropout_rate=0.5))
  code = dropout_codes.code_shape(cfg, (8, 16, 5))
  return registry.make_model(cfg, registry.ModelIO((8, 16, 5), (8, 16, 3), code)), code


@pytest.mark.parametrize("architecture", dropout_codes.ARCHITECTURES)
def test_architectures_give_n_different_outputs_in_range(architecture):
  model, code = _model(architecture)
  x = jnp.asarray(np.eye(5, dtype=np.float32)[np.random.default_rng(0).integers(0, 5, (2, 8, 16))])
  z = jax.random.uniform(jax.random.PRNGKey(1), (3,) + code) if code else None
  variables = model.init(jax.random.PRNGKey(0), x, *([z] if code else []))
  y = np.asarray(model.apply(variables, x, *([z] if code else [])))
  assert y.shape == (2, 3, 8, 16, 3) and y.min() >= 0 and y.max() <= 1
  assert np.abs(y[:, 0] - y[:, 1]).max() > 1e-4  # the branches differ
  if architecture == "shared":
    assert code == (6,)  # features[split_at]
    per_example = jnp.broadcast_to(z, (2, 3, 6))
    np.testing.assert_allclose(model.apply(variables, x, per_example), y, atol=1e-6)
    same = model.apply(variables, x, jnp.stack([z[0]] * 3))
    np.testing.assert_allclose(same[:, 0], same[:, 2], atol=1e-6)  # one code, one image
  if architecture == "separate":  # n sets of f2 parameters, one trunk
    kernel = variables["params"]["heads"]["cascade"]["M2"]["conv1"]["kernel"]
    assert kernel.shape[0] == 3
    assert "trunk" in variables["params"]


def test_separate_heads_are_n_plain_convolutions_not_a_grouped_one():
  """Each branch's head equals the head applied alone with its slice of the stacked parameters, and the
  training step has no grouped convolution: nn.vmap over the heads made one (feature_group_count = n), which
  XLA:CPU ran 66x slower than n plain ones (a step of the default: 14.3 s against 0.22 s)."""
  model, _ = _model("separate")
  x = jnp.asarray(np.eye(5, dtype=np.float32)[np.random.default_rng(0).integers(0, 5, (2, 8, 16))])
  variables = model.init(jax.random.PRNGKey(0), x)
  y = model.apply(variables, x)
  trunk = dropout_codes.Cascade(model.features, model.base_height, model.base_width, 0, model.split_at + 1)
  f1 = trunk.apply({"params": variables["params"]["trunk"]}, x, None)
  head = dropout_codes.Head(model.features, model.base_height, model.base_width, model.split_at + 1, 3)
  for i in range(model.num_branches):
    params_i = jax.tree.map(lambda a, i=i: a[i], variables["params"]["heads"])
    np.testing.assert_allclose(head.apply({"params": params_i}, x, f1), y[:, i], atol=1e-6)
  loss = lambda p: jnp.mean(model.apply(p, x) ** 2)
  hlo = jax.jit(jax.grad(loss)).lower(variables).as_text()
  groups = {int(g) for g in re.findall(r"(?:feature|batch)_group_count = (\d+)", hlo)}
  assert groups == {1}, groups


def test_shared_model_rejects_a_code_of_the_wrong_width():
  model, _ = _model("shared")
  x = jnp.zeros((1, 8, 16, 5))
  with pytest.raises(ValueError, match=r"\[N, 6\]"):
    model.init(jax.random.PRNGKey(0), x, jnp.zeros((3, 4)))


def _two_mode_problem(loss, n_branches=4):
  """One input, targets uniformly dark (0.2) or light (0.8): the per-pixel median regression finds is 0.2-0.8."""
  config, _ = load_config(CONFIG, "runlocal")
  with config.unlocked():
    config.model.features = (8, 8)
    config.model.num_branches = n_branches
    config.latent_codes.loss = loss
    config.latent_codes.num_neighbours = 3
    config.optimizer.learning_rate = 1e-2
    config.optimizer.schedule = "constant"
    config.train.num_steps = 100
  n = 8
  y = np.where((np.arange(n) % 2 == 0)[:, None, None, None], 0.2, 0.8) * np.ones((n, 8, 16, 3))
  x = np.zeros((n, 8, 16, 6), np.float32)
  x[..., 0] = 1.0
  prepared = {}
  if loss == "neighbours_enhanced":  # every example's neighbours: the next three (both modes)
    prepared = {"neighbours": ((np.arange(n)[:, None] + np.arange(1, 4)[None]) % n).astype(np.int32),
                "train_targets": np.round(y * 255).astype(np.uint8)}
  spec = {"x": jax.ShapeDtypeStruct((4, 8, 16, 6), jnp.float32), "y": jax.ShapeDtypeStruct((4, 8, 16, 3), jnp.float32),
          "index": jax.ShapeDtypeStruct((4,), jnp.int32)}
  method = methods_base.make_method(config, spec, prepared)
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  step = jax.jit(method.steps["train"])
  rng = np.random.default_rng(0)
  for _ in range(config.train.num_steps):
    idx = rng.choice(n, 4, replace=False)
    state, m = step(state, {"x": jnp.asarray(x[idx]), "y": jnp.asarray(y[idx], jnp.float32),
                            "index": jnp.asarray(idx, jnp.int32)})
  samples = np.asarray(jax.jit(method.sample, static_argnums=3)(state, jnp.asarray(x[:1]), jax.random.PRNGKey(1),
                                                                n_branches))
  return method, m, samples[0].mean(axis=(1, 2, 3))


def test_neighbours_enhanced_loss_covers_both_modes_and_trains_several_branches():
  method, metrics, means = _two_mode_problem("neighbours_enhanced")
  assert "neighbours_enhanced" in method.description and "warm-up" not in method.description
  assert float(metrics["warmup_phase"]) == 2  # no warm-up: the configured loss from step 0
  assert float(metrics["targets_per_example"]) == 4 and float(metrics["branches_trained"]) == 4
  assert np.abs(means - 0.2).min() < 0.05 and np.abs(means - 0.8).min() < 0.05, means


def test_best_neighbour_loss_trains_one_branch_per_example():
  _, metrics, means = _two_mode_problem("best_neighbour")
  assert float(metrics["branches_trained"]) == 1 and float(metrics["targets_per_example"]) == 1
  assert means.shape == (4,)


def test_missing_prepared_neighbours_is_a_clear_error():
  config, _ = load_config(CONFIG, "runlocal")
  spec = {"x": jax.ShapeDtypeStruct((4, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((4, 32, 64, 3), jnp.float32)}
  with pytest.raises(ValueError, match="prepared 'neighbours'"):
    methods_base.make_method(config, spec, {})


def test_shared_sampling_uses_training_codes_first_then_new_ones_and_interpolates():
  config, _ = load_config(CONFIG, "no_neighbours,runlocal")
  spec = {"x": jax.ShapeDtypeStruct((2, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((2, 32, 64, 3), jnp.float32)}
  method = methods_base.make_method(config, spec, {})
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  n = config.model.num_branches
  x = jnp.asarray(np.eye(6, dtype=np.float32)[np.random.default_rng(0).integers(0, 6, (2, 32, 64))])
  sample = jax.jit(method.sample, static_argnums=3)
  a = np.asarray(sample(state, x, jax.random.PRNGKey(1), n + 3))
  b = np.asarray(sample(state, x, jax.random.PRNGKey(2), n + 3))
  np.testing.assert_allclose(a[:, :n], b[:, :n], atol=1e-6)  # the training codes' outputs
  assert np.abs(a[:, n:] - b[:, n:]).max() > 1e-4  # new codes
  strip = np.asarray(jax.jit(method.extras["interpolate"], static_argnums=3)(state, x, jax.random.PRNGKey(3), 5))
  assert strip.shape == (2, 5, 32, 64, 3)
  # The end points of Eq. 3 are training codes' outputs.
  assert min(np.abs(strip[:, 0] - a[:, j]).max() for j in range(n)) < 1e-5
  assert min(np.abs(strip[:, -1] - a[:, j]).max() for j in range(n)) < 1e-5


def test_pairwise_distances_match_a_loop():
  distance = perceptual.make_distance(config_lib.default_distance_config("pixel", pixel_norm="l1"))
  rng = np.random.default_rng(2)
  h = jnp.asarray(rng.uniform(size=(2, 3, 4, 4, 3)), jnp.float32)
  t = jnp.asarray(rng.uniform(size=(2, 5, 4, 4, 3)), jnp.float32)
  d = np.asarray(multiple_choice.pairwise_distances(distance, h, t))
  expected = np.abs(np.asarray(t)[:, :, None] - np.asarray(h)[:, None]).mean(axis=(3, 4, 5))
  np.testing.assert_allclose(d, expected, rtol=1e-5)


def test_element_dropout_code_has_one_entry_per_feature_and_its_mask_varies_over_space():
  f = jnp.ones((1, 2, 3, 4))
  z = jnp.asarray(np.random.default_rng(3).uniform(size=(1, 2, 3, 4)), jnp.float32)
  out = np.asarray(dropout_codes.channel_dropout(f, z, 0.5))
  np.testing.assert_array_equal(out, (np.asarray(z) > 0.5) * 2.0)
  cfg = ml_collections.ConfigDict(dict(name="dropout_crn", architecture="shared", features=(4, 6, 5), base_height=2,
                                       base_width=4, split_at=1, num_branches=3, dropout_rate=0.5,
                                       dropout_mode="element"))
  assert dropout_codes.code_shape(cfg, (8, 16, 5)) == (4, 8, 6)  # F_1 at 4x8 with 6 channels


def test_best_neighbour_loss_trains_only_the_best_branch():
  """Eq. 4 (MCL): with separate branches, only the best branch's parameters get a gradient."""
  config, _ = load_config(CONFIG, "separate,no_neighbours,runlocal")
  spec = {"x": jax.ShapeDtypeStruct((1, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((1, 32, 64, 3), jnp.float32)}
  method = methods_base.make_method(config, spec, {})
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  x = jnp.asarray(np.eye(6, dtype=np.float32)[np.random.default_rng(0).integers(0, 6, (1, 32, 64))])
  outputs = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(0),
                                                                config.model.num_branches))
  y = jnp.asarray(outputs[:, 2]) + 0.01  # nearest to branch 2
  after, _ = jax.jit(method.steps["train"])(state, {"x": x, "y": y})
  kernel_before = state.networks["generator"].params["heads"]["cascade"]["M3"]["conv1"]["kernel"]
  kernel_after = after.networks["generator"].params["heads"]["cascade"]["M3"]["conv1"]["kernel"]
  changed = np.abs(np.asarray(kernel_after - kernel_before)).reshape(config.model.num_branches, -1).max(axis=1) > 0
  np.testing.assert_array_equal(changed, [i == 2 for i in range(config.model.num_branches)])


def _warmup_d_and_valid():
  """Two examples, targets j (rows) x hypotheses i (columns); the second has one neighbour and one padding row."""
  d_BxJxI = jnp.array([[[0.5, 0.1, 0.9, 0.8], [0.3, 0.05, 0.2, 0.7], [0.25, 0.6, 0.15, 0.9]],
                       [[0.4, 0.6, 0.2, 0.3], [0.2, 0.9, 0.05, 0.7], [0.0, 0.0, 0.0, 0.0]]])
  return d_BxJxI, jnp.array([[True, True, True], [True, True, False]])


def _assignment(*pairs_per_example):
  """[B, 3, 4] with a[b, j, i] = 1 for each (j, i) of example b."""
  a = np.zeros((len(pairs_per_example), 3, 4), np.float32)
  for b, pairs in enumerate(pairs_per_example):
    for j, i in pairs:
      a[b, j, i] = 1
  return a


def test_warmup_assignment_is_round_robin_then_y0s_best_branch_then_eq_5():
  """The authors' warm-up with R = 2, B = 2: exact assignments in each phase, one trace for every step."""
  d_BxJxI, valid_BxJ = _warmup_d_and_valid()
  assign = jax.jit(chex.assert_max_traces(lambda t: latent_codes.warmup_assignment(t, d_BxJxI, valid_BxJ, 2, 2),
                                          n=1))
  round_robin = lambda i: _assignment([(0, i)], [(0, i)])  # Y^0 trains branch t mod n, in every example
  best = _assignment([(0, 1)], [(0, 2)])  # Y^0 to its best branch, no neighbours
  eq_5 = _assignment([(0, 1), (2, 2), (1, 0)], [(0, 2), (1, 0)])  # §3.2: Y^0 first, then greedily
  for t, expected in [(0, round_robin(0)), (1, round_robin(1)), (2, best), (3, best), (4, eq_5), (100, eq_5)]:
    np.testing.assert_array_equal(assign(jnp.asarray(t, jnp.int32)), expected, err_msg=f"step {t}")
  assert [int(latent_codes.warmup_phase(jnp.asarray(t), 2, 2)) for t in range(6)] == [0, 0, 1, 1, 2, 2]
  rr_only = lambda t: latent_codes.warmup_assignment(jnp.asarray(t), d_BxJxI, valid_BxJ, 6, 0)
  np.testing.assert_array_equal(rr_only(5), round_robin(1))  # 5 mod 4 branches
  np.testing.assert_array_equal(rr_only(6), eq_5)  # B = 0: no best-branch phase
  np.testing.assert_array_equal(latent_codes.warmup_assignment(jnp.asarray(0), d_BxJxI, valid_BxJ, 0, 3), best)


def test_warmup_off_is_the_neighbours_assignment_exactly():
  """R = B = 0 (the default): the assignment, hence the loss, is assign_neighbours', bit for bit, at any step."""
  rng = np.random.default_rng(4)
  d_BxJxI = jnp.asarray(rng.uniform(size=(3, 5, 4)), jnp.float32)
  valid_BxJ = jnp.asarray(rng.uniform(size=(3, 5)) < 0.7).at[:, 0].set(True)
  expected = multiple_choice.assign_neighbours(d_BxJxI, valid_BxJ)
  for t in (0, 1, 7):
    got = latent_codes.warmup_assignment(jnp.asarray(t, jnp.int32), d_BxJxI, valid_BxJ, 0, 0)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(jnp.sum(got * d_BxJxI), jnp.sum(expected * d_BxJxI))


def test_warmup_steps_train_branch_t_mod_n_then_y0s_best_branch():
  """'separate' branches, R = 2, B = 2, a target nearest branch 3: which branch a step at step t changes."""
  config, _ = load_config(CONFIG, "separate,no_neighbours,runlocal")
  config.latent_codes.warmup_round_robin_steps = 2
  config.latent_codes.warmup_best_steps = 2
  spec = {"x": jax.ShapeDtypeStruct((1, 32, 64, 6), jnp.float32), "y": jax.ShapeDtypeStruct((1, 32, 64, 3), jnp.float32)}
  method = methods_base.make_method(config, spec, {})
  assert "warm-up" in method.description
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  x = jnp.asarray(np.eye(6, dtype=np.float32)[np.random.default_rng(0).integers(0, 6, (1, 32, 64))])
  n = config.model.num_branches
  outputs = np.asarray(jax.jit(method.sample, static_argnums=3)(state, x, jax.random.PRNGKey(0), n))
  batch = {"x": x, "y": jnp.asarray(outputs[:, 3]) + 0.01}
  step = jax.jit(chex.assert_max_traces(method.steps["train"], n=1))
  kernel = lambda s: np.asarray(s.networks["generator"].params["heads"]["cascade"]["M3"]["conv1"]["kernel"])
  for t, branch, phase in [(0, 0, 0), (1, 1, 0), (2, 3, 1), (4, 3, 2)]:  # fresh Adam moments at each t
    after, metrics = step(state.replace(step=jnp.asarray(t, jnp.int32)), batch)
    changed = np.abs(kernel(after) - kernel(state)).reshape(n, -1).max(axis=1) > 0
    np.testing.assert_array_equal(changed, np.arange(n) == branch, err_msg=f"step {t}")
    assert float(metrics["warmup_phase"]) == phase and float(metrics["branches_trained"]) == 1


@pytest.mark.parametrize("key", ["warmup_round_robin_steps", "warmup_best_steps"])
def test_validation_rejects_a_negative_warmup(key):
  config, _ = load_config(CONFIG, "runlocal")
  validation.validate(config)
  config.latent_codes[key] = -1
  with pytest.raises(ValueError, match=rf"config\.latent_codes\.{key}=-1 is invalid: must be an int >= 0"):
    validation.validate(config)


def test_evaluate_reports_training_codes_and_fresh_codes_apart():
  """issue 38: `modes_by_code` scores the training codes' outputs and fresh codes' separately."""
  import types
  from multimodal_jax.evaluation import evaluators
  modes = np.stack([np.full((4, 4, 3), v, np.float32) for v in (0.1, 0.5, 0.9)])[None]  # [1, K=3, ...]
  hit_every_mode = lambda state, x, rng, n: jnp.asarray(modes)[:, jnp.arange(n) % 3]
  blend = lambda state, x, rng, n: jnp.full((1, n, 4, 4, 3), 0.5 + 0.2, jnp.float32)  # no mode
  method = types.SimpleNamespace(extras={"training_codes": hit_every_mode, "fresh_codes": blend})
  batch = {"x": np.zeros((1, 4, 4, 2), np.float32), "y": modes[:, 0]}
  ctx = evaluators.Context(config=None, method=method, state=None, workdir="", batch=batch,
                           samples=np.asarray(hit_every_mode(None, None, None, 6)), mode_samples=6)
  ctx.dataset_spec = lambda: types.SimpleNamespace(mode_tolerance=0.05, independent_segments=None)
  ctx.memo("true_modes", lambda: modes)
  out = dict(evaluators.run(["modes_by_code"], ctx))
  assert out["mode_recall_training_codes"] == 1.0 and out["mode_precision_training_codes"] == 1.0
  assert out["mode_recall_fresh_codes"] == 0.0 and out["mode_precision_fresh_codes"] == 0.0
  # Six samples cycling through 0.1, 0.5, 0.9: 15 pairs, 3 equal, 8 at 0.4 and 4 at 0.8 apart -> 6.4 / 15.
  np.testing.assert_allclose(out["diversity_mean_abs_pixel_training_codes"], 6.4 / 15, rtol=1e-6)
  assert out["diversity_mean_abs_pixel_fresh_codes"] == 0.0
  text = "\n".join(evaluators.summary_lines(["modes_by_code"], out, {}))
  assert "training codes only  recall 1.000, precision 1.000" in text and "fresh codes only  recall 0.000" in text
