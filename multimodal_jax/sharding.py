"""The device mesh and the two shardings every run uses: the batch split along `data`, the state replicated.

The loop (train.py) and inference (inference.py) both place arrays this way,
so a state restored for `sample` or `evaluate` has the layout training gave it.
"""

from __future__ import annotations

from typing import Any, Callable

import jax

DATA_AXIS = "data"


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over all devices of all processes, axis `data`."""
  return jax.make_mesh((jax.device_count(),), (DATA_AXIS,),
                       axis_types=(jax.sharding.AxisType.Auto,))


def replicated(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """A full copy on every device: the train state, metrics, sampled grids."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())


def batch_sharded(mesh: jax.sharding.Mesh) -> jax.sharding.NamedSharding:
  """Split along the leading (batch) axis over the `data` axis of the mesh."""
  return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(DATA_AXIS))


def abstract_state(init: Callable[[jax.Array], Any], rng: jax.Array,
                   sharding: jax.sharding.Sharding) -> Any:
  """`init(rng)`'s shapes and dtypes with `sharding`, computing nothing: a checkpoint's restore target."""
  return jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                      jax.eval_shape(init, rng))
