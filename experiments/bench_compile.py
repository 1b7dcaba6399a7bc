"""Compile time of random draws on CPU, with and without the flat-bits workaround.

  python experiments/bench_compile.py

Prints seconds to compile `jax.random.normal` of conv-kernel shapes and a flax
conv net's init on JAX's own partitionable-threefry path and on
`multimodal_jax.jax_workarounds`' flat path (identical values), and their
ratio, measured in this run.
"""

import time

import flax.linen as nn
import jax
import jax.numpy as jnp

from multimodal_jax import cli
from multimodal_jax import jax_workarounds
from jax._src.random import threefry2x32  # pylint: disable=g-bad-import-order

SHAPES = [(3, 3, 8, 10), (3, 3, 16, 8), (3, 8, 10), (64, 10)]


def _compile_seconds(fn, *args) -> float:
  lowered = jax.jit(fn).lower(*args)
  start = time.perf_counter()
  lowered.compile()
  return time.perf_counter() - start


def _with(path_fn, measure):
  threefry2x32._threefry_random_bits_partitionable = path_fn  # pylint: disable=protected-access
  try:
    return measure()
  finally:
    jax_workarounds.install_flat_random_bits()


def main():
  jax_workarounds.install()  # Records JAX's own path (original_random_bits) before `_with` swaps them.
  key = jax.random.PRNGKey(0)
  print(f"{'what':<32} {'jax (s)':>8} {'flat (s)':>9} {'ratio':>6}")
  for shape in SHAPES:
    measure = lambda s=shape: _compile_seconds(lambda k: jax.random.normal(k, s), key)
    theirs = _with(jax_workarounds.original_random_bits, measure)
    ours = _with(jax_workarounds.flat_random_bits, measure)
    print(f"{'normal ' + str(shape):<32} {theirs:8.2f} {ours:9.2f} {theirs / ours:6.1f}")
  net = nn.Sequential([nn.Conv(10, (3, 3)), nn.relu, nn.Conv(8, (3, 3)), nn.relu, nn.Conv(3, (1, 1))])
  measure = lambda: _compile_seconds(lambda k: net.init(k, jnp.zeros((1, 16, 16, 8))), key)
  theirs = _with(jax_workarounds.original_random_bits, measure)
  ours = _with(jax_workarounds.flat_random_bits, measure)
  print(f"{'init of a 3-conv net':<32} {theirs:8.2f} {ours:9.2f} {theirs / ours:6.1f}")


if __name__ == "__main__":
  with cli.user_errors():  # Errors a user can fix in one line (multimodal_jax/cli.py).
    main()
