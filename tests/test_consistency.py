"""models/consistency.py: PIL's bicubic resize as a matrix, and the projection onto LR-consistent outputs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from multimodal_jax.data import local_photos_sr
from multimodal_jax.models import consistency
from multimodal_jax.models import conv_generator
from multimodal_jax.models import rrdb


@pytest.mark.parametrize("in_hw,out_hw", [((64, 64), (8, 8)), ((48, 40), (6, 5)), ((32, 32), (16, 16))])
def test_matrix_is_pils_bicubic_resize(in_hw, out_hw):
  image = np.random.default_rng(0).random(in_hw).astype(np.float32)
  pil = np.asarray(Image.fromarray(image, mode="F").resize(out_hw[::-1], Image.BICUBIC))
  ours = consistency.pil_bicubic_matrix(in_hw[0], out_hw[0]) @ image @ consistency.pil_bicubic_matrix(
      in_hw[1], out_hw[1]).T
  np.testing.assert_allclose(ours, pil, atol=1e-6)


def test_downscale_matches_how_the_sr_inputs_were_made():
  hr = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
  lr = local_photos_sr.bicubic_downsample(hr, 8)
  ours = consistency.downscale(jnp.asarray(hr[None], jnp.float32), (8, 8))[0]
  assert np.abs(np.asarray(ours) - lr).max() <= 1.0  # PIL rounds its uint8 passes


def test_projection_downscales_to_the_input_and_moves_least():
  rng = np.random.default_rng(2)
  y = jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32)
  x = jnp.asarray(rng.random((2, 4, 4, 3)), jnp.float32)
  projected = consistency.project(y, x)
  np.testing.assert_allclose(consistency.downscale(projected, (4, 4)), x, atol=1e-5)
  np.testing.assert_allclose(consistency.project(projected, x), projected, atol=1e-5)  # idempotent
  # Orthogonal: the correction is orthogonal to every move inside the consistent set.
  null_move = consistency.project(jnp.asarray(rng.random((2, 32, 32, 3)), jnp.float32), x) - projected
  inner = jnp.sum((projected - y) * null_move, axis=(1, 2, 3))
  np.testing.assert_allclose(inner, 0.0, atol=1e-4)


def test_unknown_consistency_is_an_error():
  with pytest.raises(ValueError, match="consistency"):
    consistency.apply("lanczos", jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 2, 2, 3)))


@pytest.mark.parametrize("make", [
    lambda c: rrdb.RRDBNet(features=8, num_blocks=1, growth=8, upsample_factor=4, global_skip="bicubic",
                           consistency=c),
    lambda c: conv_generator.ConvGenerator(out_channels=3, features=8, num_blocks=1, upsample_factor=4,
                                           global_skip="none", consistency=c),
])
def test_generators_with_consistency_reproduce_their_input(make):
  x = jnp.asarray(np.random.default_rng(3).uniform(0.2, 0.8, (2, 4, 4, 3)), jnp.float32)
  z = jnp.asarray(np.random.default_rng(4).normal(size=(2, 4, 4, 2)), jnp.float32)
  params = make("none").init(jax.random.key(0), x, z)
  # Perturbed parameters, so the plain network is not already consistent.
  noisy = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(jax.random.key(1), p.shape), params)
  errors = {}
  for name in ("none", "bicubic"):
    y = make(name).apply(noisy, x, z)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    errors[name] = float(jnp.abs(consistency.downscale(y, (4, 4)) - x).mean())
  assert errors["none"] > 1e-2 and errors["bicubic"] < 0.05 * errors["none"], errors


def test_clipped_projection_approaches_consistency_near_saturation():
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.uniform(0.9, 1.0, (1, 4, 4, 3)), jnp.float32)  # nearly white: projection overshoots 1
  y = jnp.asarray(rng.random((1, 32, 32, 3)), jnp.float32)
  one = jnp.clip(consistency.project(y, x), 0, 1)
  four = consistency.apply("bicubic", y, x)
  err = lambda a: float(jnp.abs(consistency.downscale(a, (4, 4)) - x).mean())
  assert err(four) < 0.5 * err(one), (err(one), err(four))
