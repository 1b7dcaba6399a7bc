"""Input pipelines: TFDS data sources read through grain, sharded per process.

The same code serves one laptop CPU and a multi-host pod: each process reads
its own shard of the index space (`ShardByJaxProcess`), batches
`global_batch_size / process_count` examples, and the loop assembles the
global array with `jax.make_array_from_process_local_data`. The grain iterator
is checkpointed with the train state, so a resumed run sees the same next
batch it would have seen.
"""

from __future__ import annotations

import os
import time
from typing import Any, Iterator

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from multimodal_jax.data import registry

DATA_DIR_ENV = "MULTIMODAL_JAX_DATA_DIR"


def resolve_data_dir(data: ml_collections.ConfigDict) -> str:
  """`config.data.data_dir`, else $MULTIMODAL_JAX_DATA_DIR, else ~/tensorflow_datasets."""
  return os.path.expanduser(data.data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets")


def get_builder(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the (prepared) TFDS builder of `config.data`, building local data on first use.

  Local datasets are built by process 0 first; the others wait at a barrier,
  then build their own copy only if their filesystem does not share it.
  """
  spec = registry.get_dataset(data.name)
  data_dir = resolve_data_dir(data)
  if spec.builder_cls is None:
    name = spec.tfds_name + (f"/{data.builder_config}" if data.builder_config else "")
    builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
    if not builder.is_prepared():
      try:
        builder.download_and_prepare()
      except Exception as e:  # pylint: disable=broad-except
        raise FileNotFoundError(
            f"Dataset {name!r} is not prepared in {data_dir} and preparing it failed ({e}). "
            f"Prepare it where the data can be had: `tfds build {name} --data_dir {data_dir} "
            "--file_format array_record` (add --manual_dir for datasets that need manual "
            f"downloads), or point config.data.data_dir / ${DATA_DIR_ENV} at a prepared copy.") from e
    return builder

  def build():
    kwargs = dict(spec.builder_kwargs)
    if data.builder_config:
      kwargs["config"] = data.builder_config
    builder = spec.builder_cls(data_dir=data_dir, file_format="array_record", **kwargs)
    if not builder.is_prepared():
      logging.info("Building the offline dataset %r into %s (first use only)...", spec.tfds_name, data_dir)
      print(f"Building the offline dataset {spec.tfds_name!r} into {data_dir} (first use only)...",
            flush=True)
      start = time.time()
      builder.download_and_prepare()
      print(f"Built {spec.tfds_name!r} in {time.time() - start:.1f}s.", flush=True)
    return builder

  if jax.process_count() == 1:
    return build()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  builder = build() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("multimodal_jax:dataset_built")
  return builder if builder is not None else build()


def per_process_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.data.batch_size={global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes.")
  return global_batch_size // jax.process_count()


def create_train_iterator(config: ml_collections.ConfigDict) -> grain.DataLoaderIterator:
  """An infinite, shuffled, per-process-sharded iterator of local batches.

  Deterministic given `config.seed`: the shuffle and every random transform
  draw from grain's per-record rngs, which depend on the seed and the record's
  global position (so e.g. the digits corruption differs across epochs).
  """
  data = config.data
  spec = registry.get_dataset(data.name)
  source = get_builder(data).as_data_source(spec.train_split)
  sampler = grain.samplers.IndexSampler(
      num_records=len(source),
      shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True),
      shuffle=True,
      num_epochs=None,
      seed=config.seed)
  operations = list(spec.make_transforms(data, True))
  operations.append(grain.transforms.Batch(per_process_batch_size(data.batch_size), drop_remainder=True))
  loader = grain.DataLoader(
      data_source=source, sampler=sampler, operations=operations,
      worker_count=data.num_workers, worker_buffer_size=2)
  return iter(loader)


def load_eval_examples(config: ml_collections.ConfigDict, num_examples: int) -> dict[str, np.ndarray]:
  """The first `num_examples` examples of the eval split, the same on every process.

  Used for the fixed batch of sample grids: every process holds all of it, so
  it is passed to jitted functions as a replicated array.
  """
  data = config.data
  spec = registry.get_dataset(data.name)
  source = get_builder(data).as_data_source(spec.eval_split)
  if len(source) < num_examples:
    raise ValueError(f"The {spec.eval_split!r} split of {spec.tfds_name!r} has {len(source)} "
                     f"examples, fewer than the {num_examples} requested.")
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.NoSharding(), shuffle=False,
      num_epochs=1, seed=0)
  operations = list(spec.make_transforms(data, False))
  operations.append(grain.transforms.Batch(num_examples, drop_remainder=True))
  loader = grain.DataLoader(data_source=source, sampler=sampler, operations=operations, worker_count=0)
  return next(iter(loader))


def global_batch_spec(config: ml_collections.ConfigDict, local_batch: dict[str, np.ndarray]) -> dict[str, jax.ShapeDtypeStruct]:
  """The global batch's shapes, from one local batch."""
  return {k: jax.ShapeDtypeStruct((config.data.batch_size,) + v.shape[1:], v.dtype)
          for k, v in local_batch.items()}


def to_global_array(local_batch: dict[str, np.ndarray], sharding: jax.sharding.Sharding) -> dict[str, jax.Array]:
  """Assembles the global batch from each process's local batch (no copy between hosts)."""
  return jax.tree.map(lambda a: jax.make_array_from_process_local_data(sharding, a), local_batch)


def iterate_global(iterator: Iterator[Any], sharding: jax.sharding.Sharding) -> Iterator[dict[str, jax.Array]]:
  for local_batch in iterator:
    yield to_global_array(local_batch, sharding)
