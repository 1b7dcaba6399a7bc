"""The CPU random-bits workaround (multimodal_jax/jax_workarounds.py) changes compile time, never values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from multimodal_jax import jax_workarounds


def test_the_workaround_is_installed_when_the_package_is_imported():
  from jax._src.random import threefry2x32  # pylint: disable=g-import-not-at-top
  assert threefry2x32._threefry_random_bits_partitionable is jax_workarounds.flat_random_bits  # pylint: disable=protected-access
  assert jax.config.jax_threefry_partitionable  # the mode it applies to (JAX's default)


# Shapes that compile fast on JAX's own path too (the slow ones, e.g. (3, 3, 8, 10), take ~18 s).
@pytest.mark.parametrize("bit_width", [8, 16, 32])  # 64 needs jax_enable_x64
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 4), (1, 6, 1, 2), (7,), ()])
def test_flat_bits_equal_jax_bits_for_every_width_and_shape(bit_width, shape):
  key = jax.random.PRNGKey(42)
  ours = jax.jit(jax_workarounds.flat_random_bits, static_argnums=(1, 2))(key, bit_width, shape)
  theirs = jax.jit(jax_workarounds.original_random_bits, static_argnums=(1, 2))(key, bit_width, shape)
  assert ours.shape == theirs.shape == shape and ours.dtype == theirs.dtype
  np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_public_samplers_draw_the_flat_values_reshaped():
  key = jax.random.PRNGKey(7)
  np.testing.assert_array_equal(np.asarray(jax.random.normal(key, (4, 3, 5))).ravel(),
                                np.asarray(jax.random.normal(key, (60,))))
  mask = jax.random.bernoulli(key, 0.3, (2, 8, 4, 3))
  np.testing.assert_array_equal(np.asarray(mask).ravel(), np.asarray(jax.random.bernoulli(key, 0.3, (192,))))
  assert jnp.issubdtype(mask.dtype, jnp.bool_)
