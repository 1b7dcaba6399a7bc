"""Input pipelines: TFDS data sources read through grain, sharded per process.

The same code serves one laptop CPU and a multi-host pod: each process reads
its own shard of the index space (`ShardByJaxProcess`), batches
`global_batch_size / process_count` examples, and the loop assembles the
global array with `jax.make_array_from_process_local_data`. The grain iterator
is checkpointed with the train state, so a resumed run sees the same next
batch it would have seen.

Every example carries `index` (int32): the record's position in its split,
stable across epochs, processes and resumes, so a method can keep per-example
state (neighbour lists, sampling weights) computed once over the training set
(`PrepareSource`). Datasets need not know: `IndexedSource` adds the key to each
stored record and `pass_index_through` carries it across the dataset's
transforms. With per-example weights the train iterator draws with replacement
(`WeightedSampler`) instead of shuffling.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import multiprocessing
import os
import socket
import sys
import threading
import time
from typing import Any, Iterator, Sequence

from absl import logging
import grain
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from multimodal_jax import storage
from multimodal_jax import workdir as workdir_lib
from multimodal_jax.data import registry

DATA_DIR_ENV = "MULTIMODAL_JAX_DATA_DIR"
DATA_MIRROR_ENV = "MULTIMODAL_JAX_DATA_MIRROR"  # local_mirror: where a gs:// data dir is read from
INDEX_KEY = "index"


def resolve_data_dir(data: ml_collections.ConfigDict) -> str:
  """`config.data.data_dir`, else $MULTIMODAL_JAX_DATA_DIR, else ~/tensorflow_datasets (a gs:// one as it is)."""
  return storage.resolve(data.data_dir or os.environ.get(DATA_DIR_ENV) or "~/tensorflow_datasets")


@contextlib.contextmanager
def _build_lock(data_dir: str, name: str) -> Iterator[None]:
  """Held while a local dataset is built into `data_dir`: one builder at a time, the others wait.

  On a disk, an exclusive `flock` on data_dir/.<name>.build.lock: the kernel
  releases it when its holder dies, so a killed build leaves no stale lock
  (tfds builds into an `incomplete.*` directory and renames it only when done;
  the next holder starts afresh). In a bucket (`gs://`), which has no
  `flock`, the same name as an object created only if absent
  (`_remote_build_lock`).
  """
  if storage.is_remote(data_dir):
    with _remote_build_lock(data_dir, name):
      yield
    return
  os.makedirs(data_dir, exist_ok=True)
  path = os.path.join(data_dir, f".{name}.build.lock")
  with open(path, "a") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      print(f"Waiting for another process that is building {name!r} in {data_dir} ({path})...", flush=True)
      fcntl.flock(f, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _remote_build_lock(data_dir: str, name: str, poll_seconds: float = 2.0) -> Iterator[None]:
  """The build lock in a bucket: an object created with a precondition (`storage.create_exclusive`).

  Its holder (host, pid, time) is inside. A waiter polls; a lock of a dead
  process on the same host is removed; one from another host is waited for,
  with a line naming it and how to remove it if that build was killed.
  """
  path = storage.join(data_dir, f".{name}.build.lock")
  mine = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
  announced = False
  while not storage.create_exclusive(path, json.dumps(mine)):
    try:
      holder = json.loads(storage.read_text(path))
    except (FileNotFoundError, ValueError):
      holder = None  # Released (or being written) between the two calls.
    if isinstance(holder, dict) and holder.get("host") == mine["host"] and not workdir_lib.pid_running(holder.get("pid")):
      print(f"Removing the build lock {path} of a process that no longer runs ({holder}).", flush=True)
      storage.remove(path)
      continue
    if not announced:
      print(f"Waiting for another process that is building {name!r} in {data_dir} ({holder}); if that build "
            f"was killed, delete {path}.", flush=True)
      announced = True
    time.sleep(poll_seconds)
  try:
    yield
  finally:
    storage.remove(path)


def get_builder(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
  """Returns the (prepared) TFDS builder of `config.data`, building local data on first use.

  Local datasets are built by process 0 first; the others wait at a barrier,
  then build their own copy only if their filesystem does not share it. A
  gs:// data dir is the shared copy, read through each host's local mirror
  (`local_mirror`, `_through_local_mirror`).
  """
  spec = registry.get_dataset(data.name)
  data_dir = resolve_data_dir(data)
  if spec.builder_cls is None:
    name = spec.tfds_name + (f"/{data.builder_config}" if data.builder_config else "")

    def catalogue_builder(directory):
      return tfds.builder(name, data_dir=directory, file_format="array_record")

    if storage.is_remote(data_dir):
      return _through_local_mirror(data_dir, catalogue_builder, None, name)
    builder = catalogue_builder(data_dir)
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

  key = f"{spec.tfds_name}.{data.builder_config or 'default'}"

  def make_builder(directory):
    kwargs = dict(spec.builder_kwargs)
    if data.builder_config:
      kwargs["config"] = data.builder_config
    return spec.builder_cls(data_dir=directory, file_format="array_record", **kwargs)

  def build_into(directory):
    builder = make_builder(directory)
    if builder.is_prepared():
      return builder
    # Two runs started together on one data_dir (a sweep, a train and an
    # evaluate) would both generate it and the second rename would fail: the
    # first to take the lock builds, the others wait and then read its copy.
    with _build_lock(directory, key):
      builder = make_builder(directory)
      if not builder.is_prepared():
        logging.info("Building the offline dataset %r into %s (first use only)...", spec.tfds_name, directory)
        print(f"Building the offline dataset {spec.tfds_name!r} into {directory} (first use only)...",
              flush=True)
        _quiet_build(builder)
    return builder

  def build():
    if storage.is_remote(data_dir):
      return _through_local_mirror(data_dir, make_builder, build_into, key)
    return build_into(data_dir)

  if jax.process_count() == 1:
    return build()
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  builder = build() if jax.process_index() == 0 else None
  multihost_utils.sync_global_devices("multimodal_jax:dataset_built")
  return builder if builder is not None else build()


def local_mirror(data_dir: str) -> str:
  """The local copy on this host of a gs:// data dir: `$MULTIMODAL_JAX_DATA_MIRROR/<scheme>/<bucket>/<path>`.

  Default ~/.cache/multimodal_jax/data_mirror. The datasets' array_record
  files are read by grain from local files only (array_record's C++ reader
  opens paths with the OS), so a data dir in a bucket is the shared copy and
  each host reads its own (`_through_local_mirror`).
  """
  base = os.path.expanduser(os.environ.get(DATA_MIRROR_ENV) or os.path.join("~", ".cache", "multimodal_jax",
                                                                            "data_mirror"))
  scheme, _, rest = data_dir.partition("://")
  return os.path.join(base, scheme, *rest.strip("/").split("/"))


def _through_local_mirror(data_dir: str, make_builder, build_into, key: str) -> tfds.core.DatasetBuilder:
  """The builder of a dataset whose shared copy is in a bucket, reading this host's local copy.

  Prepared locally already: used as it is. Else, under the bucket's build
  lock (`_build_lock`): if the bucket lacks it, this host builds it locally
  (`build_into`, None for a catalogue dataset, which must be prepared there
  already) and uploads it, dataset_info.json last (tfds' mark of a prepared
  dataset); if the bucket has it, it is downloaded.
  """
  mirror = local_mirror(data_dir)
  builder = make_builder(mirror)
  if builder.is_prepared():
    return builder
  relative = os.path.relpath(str(builder.data_dir), mirror).split(os.sep)
  remote = storage.join(data_dir, *relative)
  with _build_lock(data_dir, key):
    if not storage.exists(storage.join(remote, "dataset_info.json")):
      if build_into is None:
        raise FileNotFoundError(
            f"Dataset {key!r} is not prepared in {data_dir}: prepare it with `tfds build` into a local "
            f"--data_dir and copy that folder's {'/'.join(relative)} to {remote}.")
      builder = build_into(mirror)
      print(f"Uploading {builder.data_dir} to {remote}...", flush=True)
      storage.copy_tree(str(builder.data_dir), remote, last="dataset_info.json")
      return builder
  with _build_lock(mirror, key):  # Another process of this host may be downloading it too.
    if not make_builder(mirror).is_prepared():
      print(f"Downloading the prepared dataset {remote} to {builder.data_dir}...", flush=True)
      partial = f"{builder.data_dir}.incomplete{os.getpid()}"
      storage.remove_tree(partial)
      storage.copy_tree(remote, partial, last="dataset_info.json")
      os.replace(partial, str(builder.data_dir))
  return make_builder(mirror)


def _quiet_build(builder: tfds.core.DatasetBuilder) -> None:
  """`download_and_prepare`, then one line per split with its example count, and the time taken.

  tfds' own lines ("Downloading and preparing dataset Unknown size ...") say
  nothing about an offline build; its progress bars are kept on a terminal
  only (in a log they leave a line of escape codes each).
  """
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()
  start = time.time()
  with contextlib.redirect_stdout(io.StringIO()):
    builder.download_and_prepare()
  for name, split in builder.info.splits.items():
    print(f"  split {name!r}: {split.num_examples} examples", flush=True)
  print(f"Built {builder.name!r} in {time.time() - start:.1f}s.", flush=True)


def per_process_batch_size(global_batch_size: int) -> int:
  if global_batch_size % jax.process_count():
    raise ValueError(f"config.data.batch_size={global_batch_size} is not divisible by the "
                     f"{jax.process_count()} processes.")
  return global_batch_size // jax.process_count()


# ------------------------------------------------------------ the stable `index`


def _with_index(record: Any, index: int) -> dict[str, Any]:
  if not isinstance(record, dict):
    raise TypeError(f"Records must be dicts to carry {INDEX_KEY!r}; got a {type(record).__name__}.")
  if INDEX_KEY in record:
    raise ValueError(f"The record already has a {INDEX_KEY!r} field, which the pipeline reserves for "
                     "the record's position in its split; rename the dataset's field.")
  return {**record, INDEX_KEY: np.int32(index)}


class IndexedSource:
  """A random-access source whose records also hold `index`: their position in the split.

  The position is the record key grain asks for, so it is the same whichever
  sampler, epoch, process or resume reads the record.
  """

  def __init__(self, source: Sequence[Any]):
    if len(source) >= 2**31:
      raise ValueError(f"{len(source)} records do not fit the int32 {INDEX_KEY!r}.")
    self._source = source

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, record_key: int) -> dict[str, Any]:
    return _with_index(self._source[record_key], record_key)

  def __getitems__(self, record_keys: Sequence[int]) -> list[dict[str, Any]]:
    """Batched reads (array_record reads them in parallel) where the source supports them."""
    getitems = getattr(self._source, "__getitems__", None)
    records = getitems(record_keys) if getitems else [self._source[k] for k in record_keys]
    return [_with_index(r, k) for r, k in zip(records, record_keys)]

  def __setstate__(self, state: dict[str, Any]) -> None:
    # Unpickled in each of grain's worker processes (data.num_workers > 0): the
    # worker init that grain.DataLoader does not expose.
    self.__dict__.update(state)
    exit_with_parent()

  def __repr__(self) -> str:
    # grain checks repr(source) when restoring an iterator. The inner source's, as
    # grain writes it (in-memory data by type only), keeps checkpoints written
    # before the index existed restorable: same records, same order.
    inner = self._source
    return str(type(inner)) if isinstance(inner, (list, tuple, np.ndarray)) else repr(inner)


_watching_parent = False


def exit_with_parent(poll_seconds: float = 0.5) -> None:
  """In a worker process, ends it (within `poll_seconds`) once its parent has died.

  grain's workers block on a full queue until the parent asks them to stop; a
  parent killed by SIGKILL (or the OOM killer) never asks, and the orphans would
  hold their memory forever. A daemon thread polls the parent pid: reparenting
  changes it. Not prctl(PR_SET_PDEATHSIG): it fires when the parent *thread*
  that started the worker exits, and grain starts workers from its own threads.
  A no-op in a process that multiprocessing did not start (the main process).
  """
  global _watching_parent
  parent = multiprocessing.parent_process()
  if parent is None or _watching_parent:
    return
  _watching_parent = True

  def watch():
    while os.getppid() == parent.pid:
      time.sleep(poll_seconds)
    os._exit(1)  # pylint: disable=protected-access  # No cleanup can reach a dead parent.

  threading.Thread(target=watch, name="exit_with_parent", daemon=True).start()


def _reattach_index(example: Any, index: np.int32, transform: Any) -> dict[str, Any]:
  if not isinstance(example, dict):
    raise TypeError(f"{transform!r} returned a {type(example).__name__}, not a dict, so the example "
                    f"cannot carry its {INDEX_KEY!r}.")
  return {**example, INDEX_KEY: index}


def _split_index(element: dict[str, Any]) -> tuple[dict[str, Any], np.int32]:
  # The dataset transform sees exactly the record it was written for.
  element = dict(element)
  return element, element.pop(INDEX_KEY)


class _IndexPassingMap(grain.transforms.Map):
  """A dataset's Map that keeps the `index` (dataset transforms build new dicts)."""

  def __init__(self, transform: grain.transforms.Map):
    self.transform = transform

  def map(self, element):
    element, index = _split_index(element)
    return _reattach_index(self.transform.map(element), index, self.transform)

  def __repr__(self) -> str:
    return f"PassIndex({self.transform!r})"


class _IndexPassingRandomMap(grain.transforms.RandomMap):
  """A dataset's RandomMap that keeps the `index`; grain's per-record rng goes to the inner one."""

  def __init__(self, transform: grain.transforms.RandomMap):
    self.transform = transform

  def random_map(self, element, rng: np.random.Generator):
    element, index = _split_index(element)
    return _reattach_index(self.transform.random_map(element, rng), index, self.transform)

  def __repr__(self) -> str:
    return f"PassIndex({self.transform!r})"


def pass_index_through(transforms: Sequence[Any]) -> list[Any]:
  """Wraps a dataset's transforms so that the `index` key survives them.

  Map and RandomMap are wrapped; Filter passes elements on unchanged. Any other
  transform (FlatMap, Batch, ...) would lose or garble the per-record index, so
  it is refused.
  """
  wrapped = []
  for transform in transforms:
    if isinstance(transform, grain.transforms.Map):
      wrapped.append(_IndexPassingMap(transform))
    elif isinstance(transform, grain.transforms.RandomMap):
      wrapped.append(_IndexPassingRandomMap(transform))
    elif isinstance(transform, grain.transforms.Filter):
      wrapped.append(transform)
    else:
      raise TypeError(f"Dataset transform {transform!r} ({type(transform).__name__}) would drop the "
                      f"{INDEX_KEY!r} key; dataset transforms must be grain Map, RandomMap or Filter.")
  return wrapped


# ------------------------------------------------------------ weighted sampling


def check_sampling_weights(weights: Any) -> np.ndarray:
  """The weights as float64 [N]; a one-line ValueError says what is wrong with bad ones."""
  weights_N = np.asarray(weights, dtype=np.float64)
  if weights_N.ndim != 1 or not weights_N.size:
    raise ValueError(f"Sampling weights must be a non-empty 1-D array (one per record); got shape "
                     f"{weights_N.shape}.")
  bad = np.flatnonzero(~np.isfinite(weights_N))
  if bad.size:
    raise ValueError(f"Sampling weights must be finite; {bad.size} are not (entry {bad[0]} is "
                     f"{weights_N[bad[0]]}).")
  bad = np.flatnonzero(weights_N < 0)
  if bad.size:
    raise ValueError(f"Sampling weights must be >= 0; {bad.size} are negative (entry {bad[0]} is "
                     f"{weights_N[bad[0]]}).")
  if not weights_N.sum() > 0:
    raise ValueError(f"Sampling weights must have a positive sum; all {weights_N.size} are 0.")
  return weights_N


class WeightedSampler:
  """Draws records with replacement, P(record k) = weights[k] / sum(weights), forever.

  The protocol of `grain.samplers.IndexSampler`: `sampler[i]` is the
  RecordMetadata of global position i, with the rng IndexSampler gives it
  (Philox keyed by seed + i), so RandomMap transforms stay deterministic. The
  record at position i is a pure function of (seed, i): positions come in
  blocks of `block_size`, each drawn by one numpy Generator seeded with
  (seed, block) by inverting the cumulative weights. Grain checkpoints
  positions, so a restored iterator replays exactly. Sharding is grain's
  DataLoader's (process p of P reads positions p, p+P, ..., as with
  IndexSampler), and unlike IndexSampler, which gives each shard its own slice
  of records, the shards together read exactly the unsharded sequence.
  """

  def __init__(self, weights: Any, shard_options: grain.sharding.ShardOptions = grain.sharding.NoSharding(),
               seed: int = 0, block_size: int = 4096):
    weights_N = check_sampling_weights(weights)
    if not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
      raise ValueError(f"The sampler seed must be an int in [0, 2**32), as grain's; got {seed!r}.")
    if block_size < 1:
      raise ValueError(f"block_size must be positive, got {block_size}.")
    self._seed, self._block_size = int(seed), int(block_size)
    self._cumulative_N = np.cumsum(weights_N)
    self._last_drawable = int(np.flatnonzero(weights_N)[-1])
    self._digest = hashlib.sha256(weights_N.tobytes()).hexdigest()[:16]
    # grain's DataLoader takes the sharding from this attribute when not given one.
    self._shard_options = shard_options
    self._cache: dict[int, np.ndarray] = {}

  @property
  def num_records(self) -> int:
    return len(self._cumulative_N)

  def __len__(self) -> int:
    return sys.maxsize  # Infinite, as IndexSampler(num_epochs=None).

  def __repr__(self) -> str:
    # grain compares it with the one stored in a checkpoint: a resume with other weights fails loudly.
    return (f"WeightedSampler(num_records={self.num_records}, weights_sha256={self._digest}, "
            f"shard_options={self._shard_options!r}, seed={self._seed}, block_size={self._block_size})")

  def _draw_block(self, block: int) -> np.ndarray:
    uniform_B = np.random.default_rng([self._seed, block]).random(self._block_size)
    keys_B = np.searchsorted(self._cumulative_N, uniform_B * self._cumulative_N[-1], side="right")
    # u * total can round up to total; zero-weight records are never returned.
    return np.minimum(keys_B, self._last_drawable)

  def _block(self, block: int) -> np.ndarray:
    cache = self._cache  # Replaced, never mutated: grain reads from several threads.
    if block not in cache:
      cache = {**dict(list(cache.items())[-1:]), block: self._draw_block(block)}
      self._cache = cache
    return cache[block]

  def record_keys(self, start: int, stop: int) -> np.ndarray:
    """The records drawn at positions [start, stop), int64, without building rngs (fast)."""
    if stop <= start:
      return np.zeros(0, np.int64)
    first, last = start // self._block_size, (stop - 1) // self._block_size
    keys = np.concatenate([self._draw_block(b) for b in range(first, last + 1)])
    offset = first * self._block_size
    return keys[start - offset:stop - offset].astype(np.int64)

  def __getitem__(self, index: int) -> grain.RecordMetadata:
    if index < 0:
      raise IndexError(f"Sampler positions start at 0; got {index}.")
    record_key = int(self._block(index // self._block_size)[index % self._block_size])
    rng = np.random.Generator(np.random.Philox(key=self._seed + index))
    return grain.RecordMetadata(index=index, record_key=record_key, rng=rng)


# ------------------------------------------------------------ iterators


def create_train_iterator(config: ml_collections.ConfigDict,
                          weights: np.ndarray | None = None) -> grain.DataLoaderIterator:
  """An infinite, per-process-sharded iterator of local batches, each example with its `index`.

  Without `weights` the split is shuffled, epoch after epoch. With `weights`
  ([len(train split)], >= 0) examples are drawn with replacement in proportion
  to them (`WeightedSampler`). Deterministic given `config.seed` either way:
  the order and every random transform draw from grain's per-record rngs,
  which depend on the seed and the record's global position (so e.g. the
  digits corruption differs across epochs).
  """
  data = config.data
  spec = registry.get_dataset(data.name)
  source = IndexedSource(get_builder(data).as_data_source(spec.train_split))
  shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  if weights is None:
    sampler = grain.samplers.IndexSampler(
        num_records=len(source), shard_options=shard_options, shuffle=True, num_epochs=None,
        seed=config.seed)
  else:
    if np.shape(weights) != (len(source),):
      raise ValueError(f"Sampling weights have shape {np.shape(weights)}, but the {spec.train_split!r} "
                       f"split of {data.name!r} has {len(source)} records: give one weight per record.")
    sampler = WeightedSampler(weights, shard_options, seed=config.seed)
  operations = pass_index_through(spec.make_transforms(data, True))
  operations.append(grain.transforms.Batch(per_process_batch_size(data.batch_size), drop_remainder=True))
  loader = grain.DataLoader(
      data_source=source, sampler=sampler, operations=operations, shard_options=shard_options,
      worker_count=data.num_workers, worker_buffer_size=2)
  return iter(loader)


def load_eval_examples(config: ml_collections.ConfigDict, num_examples: int,
                       allow_fewer: bool = False) -> dict[str, np.ndarray]:
  """The first `num_examples` examples of the eval split (with their `index`), the same on every process.

  Used for the fixed batch of sample grids: every process holds all of it, so
  it is passed to jitted functions as a replicated array. A split with fewer
  examples is an error, unless `allow_fewer` (evaluate, sample): then all of
  them, and a printed line says so.
  """
  data = config.data
  spec = registry.get_dataset(data.name)
  source = IndexedSource(get_builder(data).as_data_source(spec.eval_split))
  if len(source) < num_examples:
    if not allow_fewer or not len(source):
      raise ValueError(f"The {spec.eval_split!r} split of {spec.tfds_name!r} has {len(source)} "
                       f"examples, fewer than the {num_examples} requested.")
    print(f"The {spec.eval_split!r} split of {spec.tfds_name!r} has {len(source)} examples, fewer than "
          f"the {num_examples} requested: using all {len(source)}.", flush=True)
    num_examples = len(source)
  sampler = grain.samplers.IndexSampler(
      num_records=len(source), shard_options=grain.sharding.NoSharding(), shuffle=False,
      num_epochs=1, seed=0)
  operations = pass_index_through(spec.make_transforms(data, False))
  operations.append(grain.transforms.Batch(num_examples, drop_remainder=True))
  loader = grain.DataLoader(data_source=source, sampler=sampler, operations=operations, worker_count=0)
  return next(iter(loader))


class PrepareSource:
  """The training split as a method's one-off `prepare` pass reads it.

  Random access (`len`, `[i]`) and in-order batches over every example once,
  each with its `index`, through the dataset's deterministic (evaluation)
  transforms: no shuffle, no augmentation, so what `prepare` computes for
  example i belongs to the record the train iterator tags `index == i`.
  """

  def __init__(self, config: ml_collections.ConfigDict):
    data = config.data
    spec = registry.get_dataset(data.name)
    transforms = list(spec.make_transforms(data, False))
    for transform in transforms:
      if not isinstance(transform, grain.transforms.Map):
        raise TypeError(f"The evaluation transforms of {data.name!r} must be deterministic grain Maps "
                        f"for a prepare pass; got {transform!r} ({type(transform).__name__}).")
    self._source = IndexedSource(get_builder(data).as_data_source(spec.train_split))
    self._transforms = pass_index_through(transforms)

  def __len__(self) -> int:
    return len(self._source)

  def _example(self, record: dict[str, Any]) -> dict[str, np.ndarray]:
    for transform in self._transforms:
      record = transform.map(record)
    return {k: np.asarray(v) for k, v in record.items()}

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(f"Example {index} is outside the {len(self)} training examples.")
    return self._example(self._source[int(index)])

  def batches(self, batch_size: int, description: str = "Reading the training set",
              progress_every_secs: float = 10.0) -> Iterator[dict[str, np.ndarray]]:
    """Stacked batches of every example once, in index order (the last may be smaller).

    Prints `description: done/total examples (rate/s)` about every
    `progress_every_secs` and once at the end: a pass over a large training
    set takes a while, and silence looks like a hang.
    """
    if batch_size < 1:
      raise ValueError(f"batch_size must be positive, got {batch_size}.")
    total, start_time = len(self), time.monotonic()
    last_print = start_time
    for start in range(0, total, batch_size):
      keys = list(range(start, min(start + batch_size, total)))
      examples = [self._example(r) for r in self._source.__getitems__(keys)]
      batch = {k: np.stack([e[k] for e in examples]) for k in examples[0]}
      now, done = time.monotonic(), keys[-1] + 1
      if now - last_print >= progress_every_secs or done == total:
        rate = done / max(now - start_time, 1e-9)
        print(f"{description}: {done}/{total} examples ({rate:.0f}/s)", flush=True)
        last_print = now
      yield batch


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
