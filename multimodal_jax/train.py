"""The one training loop: data -> a method's compiled steps -> metrics, grids, checkpoints.

Every method runs through `train_and_evaluate`. The loop
  * validates the config before anything compiles;
  * builds a 1-D device mesh with a `data` axis over every device of every
    process, shards batches along it and replicates (and donates) the state,
    so the same code runs on one CPU, a GPU, or a TPU pod;
  * compiles each of the method's pure step functions once, wrapping them so
    that their metrics accumulate on device as `clu.metrics.Average`s and a
    non-finite metric records its step — the host reads them only every
    `train.log_every` steps;
  * resumes from the newest checkpoint in `workdir` (train state *and* the
    grain iterator position), else initialises from scratch;
  * saves every `train.checkpoint_every` steps, at the end, and on SIGTERM or
    a TPU preemption notice, then exits cleanly;
  * writes scalars, hparams and sample grids (input | samples | ground truth)
    to TensorBoard from process 0 only.
"""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any, Callable, Mapping

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
import grain

from multimodal_jax import config_lib
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry as data_registry
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import common

PyTree = Any
_NO_NONFINITE = np.iinfo(np.int32).max
_NONFINITE_KEY = "first_nonfinite_step"


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over all devices of all processes, axis `data`."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


class _Metrics:
  """On-device metric accumulators, one dict of clu Averages per step name."""

  @staticmethod
  def empty(metric_shapes: Mapping[str, Any]) -> dict[str, Any]:
    acc = {k: clu_metrics.Average(total=jnp.zeros((), jnp.float32), count=jnp.zeros((), jnp.int32))
           for k in metric_shapes}
    acc[_NONFINITE_KEY] = jnp.full((), _NO_NONFINITE, jnp.int32)
    return acc

  @staticmethod
  def update(acc: dict[str, Any], metrics: Mapping[str, jax.Array], step: jax.Array) -> dict[str, Any]:
    new = {k: acc[k].merge(clu_metrics.Average.from_model_output(jnp.asarray(v, jnp.float32)))
           for k, v in metrics.items()}
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(v)) for v in metrics.values()]))
    first = acc[_NONFINITE_KEY]
    new[_NONFINITE_KEY] = jnp.where(finite | (first != _NO_NONFINITE), first, step.astype(jnp.int32))
    return new


class CompiledSteps:
  """The method's step functions, jitted over the mesh, with on-device metrics.

  `compiled(name, state, batch)` runs one step and merges its metrics into
  the accumulator of that step name; `flush()` fetches and resets them (the
  only host sync of the loop, every `log_every` steps).
  """

  def __init__(self, steps: Mapping[str, methods_base.StepFn], replicated, batch_sharding):
    self._raw = dict(steps)
    self._replicated = replicated
    self._batch_sharding = batch_sharding
    self._jitted: dict[str, Callable] = {}
    self._acc: dict[str, Any] = {}

  def _compile(self, name: str, state, batch):
    # The metric accumulators' structure comes from tracing the step once;
    # the nested jit below reuses that trace, so the step is traced once.
    step_fn = jax.jit(self._raw[name])
    _, metric_shapes = step_fn.eval_shape(state, batch)

    def wrapped(state, batch, acc):
      step_number = state.step + 1  # The count of updates once this one is done, as logged.
      state, metrics = step_fn(state, batch)
      return state, _Metrics.update(acc, metrics, step_number)

    self._jitted[name] = jax.jit(
        wrapped,
        in_shardings=(self._replicated, self._batch_sharding, self._replicated),
        out_shardings=(self._replicated, self._replicated),
        donate_argnums=(0, 2))
    self._acc[name] = jax.device_put(_Metrics.empty(metric_shapes), self._replicated)

  def __call__(self, name: str, state, batch):
    if name not in self._raw:
      raise KeyError(f"The method has no step {name!r}; steps: {sorted(self._raw)}")
    if name not in self._jitted:
      self._compile(name, state, batch)
    state, self._acc[name] = self._jitted[name](state, batch, self._acc[name])
    return state

  def jitted(self, name: str) -> Callable:
    return self._jitted[name]

  def flush(self) -> tuple[dict[str, float], int | None]:
    """Returns (scalar metrics averaged since the last flush, first non-finite step or None)."""
    host = jax.device_get(self._acc)
    scalars, first_bad = {}, None
    multiple = len(host) > 1
    for name, acc in host.items():
      bad = int(acc[_NONFINITE_KEY])
      if bad != _NO_NONFINITE:
        first_bad = bad if first_bad is None else min(first_bad, bad)
      for key, avg in acc.items():
        if key == _NONFINITE_KEY or int(avg.count) == 0:
          continue
        scalars[f"{name}/{key}" if multiple else key] = float(avg.total) / int(avg.count)
    self._acc = {name: jax.device_put(jax.tree.map(jnp.zeros_like, acc) | {
        _NONFINITE_KEY: jnp.full((), _NO_NONFINITE, jnp.int32)}, self._replicated)
                 for name, acc in self._acc.items()}
    return scalars, first_bad


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between rounds."""

  def __init__(self):
    self.requested = False
    self._previous = None

  def __enter__(self):
    try:
      self._previous = signal.signal(signal.SIGTERM, self._handle)
    except ValueError:  # Not the main thread (e.g. some test runners): no handler.
      self._previous = None
    return self

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("SIGTERM received: saving a checkpoint and exiting after this round.")
    self.requested = True

  def __exit__(self, *exc):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)


def make_checkpoint_manager(workdir: str, config: ml_collections.ConfigDict) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=config.train.max_checkpoints_to_keep, create=True,
      enable_async_checkpointing=config.train.async_checkpointing)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"), options=options)


def restore_or_init(manager: ocp.CheckpointManager, init_fn: Callable[[], PyTree], abstract_state: PyTree,
                    data_iter) -> tuple[PyTree, int]:
  """Resume order: the newest checkpoint in workdir, else a fresh init."""
  latest = manager.latest_step()
  if latest is None:
    return init_fn(), 0
  logging.info("Resuming from the checkpoint at step %d.", latest)
  print(f"Resuming from the checkpoint at step {latest}.", flush=True)
  restored = manager.restore(latest, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state),
      data_iter=grain.checkpoint.CheckpointRestore(data_iter)))
  return restored["state"], latest


def save_checkpoint(manager: ocp.CheckpointManager, step: int, state: PyTree, data_iter) -> None:
  manager.save(step, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state),
      data_iter=grain.checkpoint.CheckpointSave(data_iter)), force=True)


def sample_grid(x_rgb: np.ndarray, samples: np.ndarray, y: np.ndarray, pad: int = 2) -> np.ndarray:
  """Rows of input | samples | ground truth, as one float32 RGB image in [0, 1].

  Args:
    x_rgb: [B, h, w, 3] inputs shown as RGB (resized to the target size).
    samples: [B, N, H, W, C] samples in [0, 1].
    y: [B, H, W, C] ground truth.
  """
  b, n, h, w, _ = samples.shape
  to_rgb = lambda a: np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a[..., :3]
  x_rgb = np.asarray(jax.image.resize(x_rgb, (b, h, w, 3), "nearest"))
  tiles = np.concatenate([x_rgb[:, None], to_rgb(samples), to_rgb(y)[:, None]], axis=1)  # [B, N+2, H, W, 3]
  grid = np.ones((b * (h + pad) + pad, (n + 2) * (w + pad) + pad, 3), np.float32)
  for i in range(b):
    for j in range(n + 2):
      top, left = pad + i * (h + pad), pad + j * (w + pad)
      grid[top:top + h, left:left + w] = tiles[i, j]
  return np.clip(grid, 0.0, 1.0)


def _flatten_config(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      out.update(_flatten_config(value, f"{prefix}{key}."))
    else:
      out[f"{prefix}{key}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
  return out


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


RUN_INFO = "run_info.json"


def write_run_info(workdir: str, config: ml_collections.ConfigDict, batch_spec) -> None:
  """Saves the config and the global batch shapes, so CLIs can rebuild the method."""
  info = {"config": json.loads(config.to_json_best_effort()),
          "batch_spec": {k: [list(v.shape), np.dtype(v.dtype).name] for k, v in batch_spec.items()}}
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, RUN_INFO), "w") as f:
    json.dump(info, f, indent=1)


def load_trained(workdir: str, step: int | None = None):
  """Restores a trained run for inference: (config, method, state, batch_spec).

  Reads `run_info.json` and the newest (or the given) checkpoint of `workdir`;
  the state is placed on the local devices, replicated.
  """
  path = os.path.join(workdir, RUN_INFO)
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path} not found: is {workdir} the --workdir of a training run?")
  with open(path) as f:
    info = json.load(f)
  config = ml_collections.ConfigDict(info["config"])
  config.lock()
  batch_spec = {k: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                for k, (shape, dtype) in info["batch_spec"].items()}
  method = methods_base.make_method(config, batch_spec)
  mesh = make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                                jax.eval_shape(method.init, jax.random.PRNGKey(config.seed)))
  manager = ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"))
  step = manager.latest_step() if step is None else step
  if step is None:
    raise FileNotFoundError(f"No checkpoint in {workdir}/checkpoints.")
  restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  manager.close()
  return config, method, restored["state"], batch_spec


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> PyTree:
  """Trains `config.method` on `config.data` and writes everything under `workdir`.

  Returns the final train state (replicated global arrays).
  """
  config_lib.validate(config)
  workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  mesh = make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch_sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  logging.info("Devices: %d (%d per process, %d processes), platform %s.", jax.device_count(),
               jax.local_device_count(), jax.process_count(), jax.default_backend())

  data_iter = pipeline.create_train_iterator(config)
  first_local_batch = next(data_iter)  # Shapes only: the iterator state is restored or rewound below.
  batch_spec = pipeline.global_batch_spec(config, first_local_batch)
  data_iter = pipeline.create_train_iterator(config)

  method = methods_base.make_method(config, batch_spec)
  base_rng = jax.random.PRNGKey(config.seed)
  init_jit = jax.jit(method.init, out_shardings=replicated)
  abstract_state = jax.eval_shape(method.init, base_rng)
  abstract_state = jax.tree.map(
      lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), abstract_state)

  manager = make_checkpoint_manager(workdir, config)
  state, step = restore_or_init(manager, lambda: init_jit(base_rng), abstract_state, data_iter)
  num_steps = config.train.num_steps
  steps_per_round = method.steps_per_round

  writer = metric_writers.create_default_writer(workdir, just_logging=not is_chief, asynchronous=True)
  if is_chief:
    write_run_info(workdir, config, batch_spec)
  if step == 0:
    writer.write_hparams(_flatten_config(config))
  logging.info("Method %s: %s. Dataset %s, global batch %d.", config.method, method.description,
               config.data.name, config.data.batch_size)
  print(f"Training {config.method} ({method.description}) on {config.data.name}: steps {step} -> "
        f"{num_steps}, global batch {config.data.batch_size}, {jax.device_count()} device(s).", flush=True)

  compiled = CompiledSteps(method.steps, replicated, batch_sharding)
  spec = data_registry.get_dataset(config.data.name)
  grid_batch = pipeline.load_eval_examples(config, config.train.num_grid_inputs)
  grid_x = jax.device_put(grid_batch["x"], replicated)
  sample_jit = jax.jit(method.sample, static_argnums=3, out_shardings=replicated)
  lr_schedule = common.learning_rate_schedule(config.optimizer, num_steps)
  report_progress = periodic_actions.ReportProgress(num_train_steps=num_steps, writer=writer,
                                                    every_secs=30.0)

  def write_samples(at_step: int):
    rng = jax.random.fold_in(jax.random.PRNGKey(config.seed + 1), at_step)
    samples = jax.device_get(sample_jit(state, grid_x, rng, config.train.num_grid_samples))
    grid = sample_grid(spec.input_to_rgb(grid_batch["x"]), samples, grid_batch["y"])
    writer.write_images(at_step, {"samples": grid[None]})

  def flush_metrics(at_step: int, elapsed: float, steps_done: int):
    scalars, first_bad = compiled.flush()
    if first_bad is not None:
      manager.wait_until_finished()  # Commit the last good checkpoint, if one is in flight.
      raise FloatingPointError(
          f"Non-finite loss or metric at step {first_bad} (run {config.method} on {config.data.name}). "
          f"The last good checkpoint is step {manager.latest_step()} in {workdir}; nothing later "
          "was saved.")
    steps_per_sec = steps_done / max(elapsed, 1e-9)
    scalars["learning_rate"] = float(lr_schedule(at_step))
    scalars["train_steps_per_sec"] = steps_per_sec
    writer.write_scalars(at_step, scalars)
    shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if k not in ("learning_rate",
                                                                              "train_steps_per_sec"))
    eta = (num_steps - at_step) / steps_per_sec if steps_per_sec > 0 else 0.0
    # One write, so log lines from the writer thread cannot split it.
    print(f"[step {at_step}/{num_steps}] {shown} | {steps_per_sec:.2f} steps/s | "
          f"ETA {_format_eta(eta)}\n", end="", flush=True)

  start_step = step
  last_log_step, last_log_time = step, time.time()
  global_batches = pipeline.iterate_global(data_iter, batch_sharding)
  preempted = False
  try:
    with _Preemption() as preemption:
      while step < num_steps:
        batch = next(global_batches)
        state = method.run_round(compiled, state, batch)
        prev_step, step = step, step + steps_per_round
        report_progress(step)
        crossed = lambda every: step // every > prev_step // every or step >= num_steps
        if crossed(config.train.log_every) or crossed(config.train.checkpoint_every):
          now = time.time()
          flush_metrics(step, now - last_log_time, step - last_log_step)
          last_log_step, last_log_time = step, now
        if config.train.sample_every and crossed(config.train.sample_every) and step < num_steps:
          write_samples(step)
          last_log_time = time.time()  # steps/s measures training, not sampling.
        preempted = preemption.requested or manager.reached_preemption(step)
        if crossed(config.train.checkpoint_every) or preempted:
          save_checkpoint(manager, step, state, data_iter)
          last_log_time = time.time()
        if preempted:
          print(f"Preempted: saved the checkpoint at step {step}; rerun the same command to resume.",
                flush=True)
          break
      if not preempted and step > start_step:
        write_samples(step)
      elif not preempted and step == start_step:
        print(f"Nothing to do: the checkpoint is already at step {step} >= train.num_steps.", flush=True)
  finally:
    manager.wait_until_finished()
    writer.flush()
    writer.close()
    manager.close()
  return state
