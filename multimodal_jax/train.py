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
  * holds the workdir's lock and, before resuming, checks that the config
    matches the run recorded there (multimodal_jax/workdir.py);
  * resumes from the newest checkpoint in `workdir` that restores (train
    state *and* the grain iterator position; a corrupt one is moved aside,
    multimodal_jax/checkpointing.py), else initialises from scratch;
  * checks before it starts that the disk has room for another checkpoint
    as large as the newest, and stops at once, with one line, when a save
    finds the disk full (every earlier checkpoint kept, the run resumable);
  * saves every `train.checkpoint_every` steps, at the end, and on SIGTERM,
    Ctrl-C or a TPU preemption notice, then exits cleanly; a second Ctrl-C
    stops at once, leaving the checkpoint being written uncommitted;
  * writes scalars, hparams and sample grids (input | samples | ground truth)
    to TensorBoard from process 0 only;
  * ends with a summary: steps, wall time, final losses, the newest
    checkpoint and the commands to run next (`evaluate`, `sample`,
    `tensorboard`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import Any, Callable, Mapping

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
import jax
from jax.experimental import io_callback
import jax.numpy as jnp
import ml_collections
import numpy as np

from multimodal_jax import checkpointing
from multimodal_jax import config_lib
from multimodal_jax import errors
from multimodal_jax import periodic_eval
from multimodal_jax import prepared as prepared_lib
from multimodal_jax import sharding
from multimodal_jax import storage
from multimodal_jax import validation
from multimodal_jax import workdir as workdir_lib
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry as data_registry
from multimodal_jax.evaluation import grids
from multimodal_jax.methods import base as methods_base

PyTree = Any
_NO_NONFINITE = np.iinfo(np.int32).max
_NONFINITE_KEY = "first_nonfinite_step"


class TrainingDivergedError(errors.UserError, FloatingPointError):
  """A non-finite loss or metric: the run stops at the last good checkpoint, and the CLI says so in one line."""


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
  only host sync of the loop, every `log_every` steps). With `timed`
  (`Method.timed_steps`), every step also reports `seconds`, its run time
  on the device (`timed_step`).
  """

  def __init__(self, steps: Mapping[str, methods_base.StepFn], replicated, batch_sharding,
               timed: bool = False):
    self._raw = dict(steps)
    self._replicated = replicated
    self._batch_sharding = batch_sharding
    self._timed = timed
    self._jitted: dict[str, Callable] = {}
    self._acc: dict[str, Any] = {}

  @staticmethod
  def timed_step(step_fn: methods_base.StepFn, name: str) -> methods_base.StepFn:
    """Adds metrics['seconds'], the step's run time, read by two host callbacks.

    The first callback runs before any of the step's work (its result joins
    the inputs through an optimization barrier), the second after all of it.
    Only the device's executor calls back; the training loop never waits.
    """
    clock = {}

    def start(_):
      clock[name] = time.perf_counter()
      return np.zeros((), np.float32)

    def stop(_):
      return np.asarray(time.perf_counter() - clock.get(name, time.perf_counter()), np.float32)

    scalar = jax.ShapeDtypeStruct((), jnp.float32)

    def step(state, batch):
      t0 = io_callback(start, scalar, state.step)
      state, batch, _ = jax.lax.optimization_barrier((state, batch, t0))
      state, metrics = step_fn(state, batch)
      state, metrics = jax.lax.optimization_barrier((state, metrics))
      # A scalar that depends on every leaf orders the stop-clock callback after all the work.
      marker = sum(jnp.sum(leaf.ravel()[:1].astype(jnp.float32)) for leaf in jax.tree.leaves((state, metrics))
                   if jnp.issubdtype(leaf.dtype, jnp.number))
      metrics = dict(metrics, seconds=io_callback(stop, scalar, marker))
      return state, metrics

    step.__name__ = step.__qualname__ = f"timed_{name}_step"
    return step

  def _compile(self, name: str, state, batch):
    # The metric accumulators' structure comes from tracing the step once;
    # the nested jit below reuses that trace, so the step is traced once.
    step_fn = jax.jit(self.timed_step(self._raw[name], name) if self._timed else self._raw[name])
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


class _StepProfile:
  """`--profile_steps=N`: a `jax.profiler` trace of N steps, written to `<workdir>/profile`.

  It starts after the first round, so compilation stays out of it, and stops
  at the first round boundary N steps later (device work finished, so the
  trace holds whole steps); TensorBoard's profile tab reads it.
  """

  def __init__(self, workdir: str, num_steps: int):
    self.directory, self.num_steps = storage.join(workdir, "profile"), num_steps
    self.stop_at: int | None = None

  def after_round(self, state, step: int) -> None:
    if self.num_steps <= 0:
      return
    jax.block_until_ready(state)
    if self.stop_at is None:
      jax.profiler.start_trace(self.directory)
      self.stop_at = step + self.num_steps
    elif step >= self.stop_at:
      self.close()

  def close(self) -> None:
    """Stops the trace (if running): after N steps, or when the loop ends or fails first."""
    if self.num_steps > 0 and self.stop_at is not None:
      jax.profiler.stop_trace()
      logging.info("Profile of steps %d-%d written to %s.", self.stop_at - self.num_steps, self.stop_at,
                   self.directory)
    self.num_steps = 0


class _Preemption:
  """Turns SIGTERM and a first Ctrl-C (SIGINT) into a flag the loop checks between rounds.

  The loop then saves a checkpoint and returns, as on a TPU preemption notice.
  A second Ctrl-C raises KeyboardInterrupt at once, saving nothing, for a run
  that must stop now. A SIGINT the process started with ignored (a background
  job of a shell script) stays ignored.
  """

  def __init__(self):
    self.requested = False
    self.reason = "Preempted"
    self._previous = {}

  def __enter__(self):
    for signum in (signal.SIGTERM, signal.SIGINT):
      if signum == signal.SIGINT and signal.getsignal(signum) == signal.SIG_IGN:
        continue
      try:
        self._previous[signum] = signal.signal(signum, self._handle)
      except ValueError:  # Not the main thread (e.g. some test runners): no handler.
        break
    return self

  def _handle(self, signum, frame):
    del frame
    if signum == signal.SIGINT:
      if self.requested:
        raise KeyboardInterrupt
      self.reason = "Interrupted"
      message = ("Ctrl-C: saving a checkpoint and exiting after this round; press Ctrl-C again to abort at "
                 "once without saving.")
    else:
      message = "SIGTERM received: saving a checkpoint and exiting after this round."
    self.requested = True
    # os.write: a print here could interrupt a print of the loop (a reentrant write raises).
    os.write(2, (message + "\n").encode())

  def __exit__(self, *exc):
    for signum, previous in self._previous.items():
      if previous is not None:  # None: a handler not set from Python, which cannot be put back.
        signal.signal(signum, previous)


# The loop saves through this module-level name: tests/train_worker.py replaces
# it to kill the run right after a checkpoint is committed.
save_checkpoint = checkpointing.save


class TrainingClock:
  """Training steps per second over training time: sampling, checkpointing and evaluation excluded.

  `steps_per_sec(step)` divides the steps since its previous call by the
  training time since then, so steps done before a pause count over the time
  they took, and the ETA extrapolates training alone. `now` is injectable for
  tests.
  """

  def __init__(self, step: int, now: Callable[[], float] = time.monotonic):
    self._now = now
    self._step, self._seconds, self._since = step, 0.0, now()

  @contextlib.contextmanager
  def paused(self, wait_for: PyTree = None):
    """Stops the clock for the block, once `wait_for` (the state) is computed.

    The steps dispatched before the pause are training: with JAX's async
    dispatch they may still run, and the block would wait for them anyway.
    """
    if wait_for is not None:
      jax.block_until_ready(wait_for)
    self._seconds += self._now() - self._since
    try:
      yield
    finally:
      self._since = self._now()

  def steps_per_sec(self, step: int) -> float:
    """Steps per training second since the previous call (or the start); starts a new interval."""
    now = self._now()
    seconds = self._seconds + now - self._since
    rate = (step - self._step) / max(seconds, 1e-9)
    self._step, self._seconds, self._since = step, 0.0, now
    return rate


def _hparams(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as TensorBoard hparams: dotted keys, values that are not scalars as text.

  An empty section (`config_lib.flatten` keeps it as {}) has no value to show.
  """
  return {key: value if isinstance(value, (int, float, str, bool)) else str(value)
          for key, value in config_lib.flatten(config).items() if not isinstance(value, dict)}


def _format_eta(seconds: float) -> str:
  seconds = int(max(seconds, 0))
  return f"{seconds // 3600}h{seconds // 60 % 60:02d}m" if seconds >= 3600 else f"{seconds // 60}m{seconds % 60:02d}s"


def build_method(config: ml_collections.ConfigDict, workdir: str):
  """The method with its prepared state, and the train iterator: (method, batch_spec, data_iter).

  The prepared state is computed once over the train split (or restored from
  `workdir`, multimodal_jax/prepared.py); its `sampling_weights`, if any, make
  the iterator draw examples in proportion to them.
  """
  prepared = prepared_lib.prepare_or_restore(config, workdir)
  weights = prepared.get(prepared_lib.SAMPLING_WEIGHTS)
  first_local_batch = next(pipeline.create_train_iterator(config, weights))  # Shapes only.
  batch_spec = pipeline.global_batch_spec(config, first_local_batch)
  method = methods_base.make_method(config, batch_spec, prepared)
  return method, batch_spec, pipeline.create_train_iterator(config, weights)


def _learning_rate_scalars(method: methods_base.Method, step: int) -> dict[str, float]:
  """`learning_rate` for a one-network method, else `learning_rate/<network>`."""
  rates = method.learning_rates
  if len(rates) == 1:
    return {"learning_rate": float(next(iter(rates.values()))(step))}
  return {f"learning_rate/{name}": float(schedule(step)) for name, schedule in rates.items()}


class _Outputs:
  """What a run writes besides checkpoints: metrics (console + TensorBoard) and sample grids."""

  def __init__(self, config, workdir, method, compiled: CompiledSteps, replicated):
    self.config, self.method, self.compiled = config, method, compiled
    self.is_chief = jax.process_index() == 0
    self.writer = metric_writers.create_default_writer(workdir, just_logging=not self.is_chief,
                                                       asynchronous=True)
    self.spec = data_registry.get_dataset(config.data.name)
    self.grid_batch = pipeline.load_eval_examples(config, config.train.num_grid_inputs)
    self.grid_x = jax.device_put(self.grid_batch["x"], replicated)
    self.sample_jit = jax.jit(method.sample, static_argnums=3, out_shardings=replicated)
    self.report_progress = periodic_actions.ReportProgress(num_train_steps=config.train.num_steps,
                                                           writer=self.writer, every_secs=30.0)
    self.evaluator = (periodic_eval.PeriodicEvaluator(config, method, replicated)
                      if config.train.eval_every else None)
    self.last_scalars: dict[str, float] = {}  # The latest logged averages, for the summary.

  def evaluate(self, state, at_step: int) -> None:
    """`train.eval_every`: PSNR/SSIM of the samples of a fixed eval batch, as eval/* (periodic_eval.py)."""
    scalars = self.evaluator(state)
    self.writer.write_scalars(at_step, {f"eval/{k}": v for k, v in scalars.items()})
    print(f"[step {at_step}] {self.evaluator.describe(scalars)}\n", end="", flush=True)

  def write_samples(self, state, at_step: int) -> None:
    rng = jax.random.fold_in(jax.random.PRNGKey(self.config.seed + 1), at_step)
    samples = jax.device_get(self.sample_jit(state, self.grid_x, rng, self.config.train.num_grid_samples))
    grid = grids.sample_grid(self.spec.input_to_rgb(self.grid_batch["x"]), samples, self.grid_batch["y"])
    self.writer.write_images(at_step, {"samples": grid[None]})

  def flush_metrics(self, at_step: int, clock: TrainingClock, manager, workdir: str) -> None:
    """Reads the on-device metrics (the loop's only host sync); raises on a non-finite value."""
    config, num_steps = self.config, self.config.train.num_steps
    scalars, first_bad = self.compiled.flush()
    steps_per_sec = clock.steps_per_sec(at_step)  # After the sync: the steps are done.
    if first_bad is not None:
      checkpointing.wait_until_finished(manager)  # Commit the last good checkpoint, if one is in flight.
      raise TrainingDivergedError(
          f"Non-finite loss or metric at step {first_bad} (run {config.method} on {config.data.name}). "
          f"The last good checkpoint is step {manager.latest_step()} in {workdir}; nothing later "
          "was saved. Resuming repeats the same steps: train in a new workdir with a lower "
          "config.optimizer.learning_rate or a config.optimizer.grad_clip_norm.")
    shown = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
    self.last_scalars = dict(scalars)
    scalars.update(_learning_rate_scalars(self.method, at_step), train_steps_per_sec=steps_per_sec)
    self.writer.write_scalars(at_step, scalars)
    eta = (num_steps - at_step) / steps_per_sec if steps_per_sec > 0 else 0.0
    # One write, so log lines from the writer thread cannot split it.
    print(f"[step {at_step}/{num_steps}] {shown} | {steps_per_sec:.2f} steps/s | "
          f"ETA {_format_eta(eta)}\n", end="", flush=True)

  def close(self) -> None:
    self.writer.flush()
    self.writer.close()


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, profile_steps: int = 0,
                       lock_workdir: bool = True) -> PyTree:
  """Trains `config.method` on `config.data` and writes everything under `workdir`.

  `profile_steps` > 0 traces that many steps after the first round into
  `<workdir>/profile` (`_StepProfile`). `lock_workdir=False`: the caller
  holds the workdir's lock already (`main` takes it before JAX starts).
  Returns the final train state (replicated global arrays).
  """
  validation.validate(config)
  workdir = storage.resolve(workdir)  # A gs:// workdir stays a URL.
  workdir_lib.check_path(workdir)
  # Process 0 locks for the run: its other processes share the workdir by design.
  with workdir_lib.lock(workdir, enabled=lock_workdir and jax.process_index() == 0):
    if checkpointing.has_checkpoint(workdir):
      # Before build_method, which would recompute prepared.npz for another config.
      workdir_lib.check_config_unchanged(workdir, config)
    workdir_lib.check_free_space(workdir)
    return _train(config, workdir, profile_steps)


def _train(config: ml_collections.ConfigDict, workdir: str, profile_steps: int) -> PyTree:
  """`train_and_evaluate` in a locked, checked workdir."""
  start_time = time.monotonic()
  mesh = sharding.make_mesh()
  replicated, batch_sharding = sharding.replicated(mesh), sharding.batch_sharded(mesh)
  logging.info("Devices: %d (%d per process, %d processes), platform %s.", jax.device_count(),
               jax.local_device_count(), jax.process_count(), jax.default_backend())
  compute_dtype = config_lib.resolve_compute_dtype(config)

  method, batch_spec, data_iter = build_method(config, workdir)
  # Any method (a user's too): a round runs whole, so the budget must be whole rounds.
  config_lib.require_whole_rounds(config, method.steps_per_round, "the method's steps_per_round")
  base_rng = jax.random.PRNGKey(config.seed)
  init_jit = jax.jit(method.init, out_shardings=replicated)
  abstract_state = sharding.abstract_state(method.init, base_rng, replicated)
  manager = checkpointing.make_manager(workdir, config)
  state, step = checkpointing.restore_or_init(manager, lambda: init_jit(base_rng), abstract_state, data_iter)

  if jax.process_index() == 0:
    workdir_lib.write_run_info(workdir, config, batch_spec)
  compiled = CompiledSteps(method.steps, replicated, batch_sharding, timed=method.timed_steps)
  outputs = _Outputs(config, workdir, method, compiled, replicated)
  if step == 0:
    outputs.writer.write_hparams(dict(_hparams(config), resolved_compute_dtype=compute_dtype.name))
  logging.info("Method %s: %s. Dataset %s, global batch %d.", config.method, method.description,
               config.data.name, config.data.batch_size)
  print(f"Training {config.method} ({method.description}) on {config.data.name}: steps {step} -> "
        f"{config.train.num_steps}, global batch {config.data.batch_size}, {jax.device_count()} device(s), "
        f"computing in {compute_dtype.name} (config.compute_dtype={config.compute_dtype!r}; parameters, "
        "losses and distances float32).", flush=True)
  start_step = step
  try:
    state, step, completed = _run_loop(config, workdir, method, compiled, outputs, manager, state, step,
                                       pipeline.iterate_global(data_iter, batch_sharding), data_iter,
                                       profile_steps)
    checkpointing.wait_until_finished(manager)  # The last save commits, or reports a full disk.
  except KeyboardInterrupt:
    # A second Ctrl-C: stop now, without waiting for the checkpoint being written (never committed:
    # the next run removes it, checkpointing.py) nor anything else.
    raise
  except BaseException:
    # The error that stopped the run is the one to report, not what closing after it finds.
    checkpointing.close_after_failure(manager)
    try:
      outputs.close()
    except Exception as e:  # pylint: disable=broad-except
      logging.info("Closing the metric writer after the run stopped: %s", e)
    raise
  outputs.close()
  manager.close()
  if completed and jax.process_index() == 0:
    print(_summary(config, workdir, step - start_step, time.monotonic() - start_time, outputs.last_scalars),
          flush=True)
    if config.train.get("final_evals"):
      final_evaluation(workdir, tuple(config.train.final_evals))
  return state


def final_evaluation(workdir: str, evals: tuple[str, ...]) -> None:
  """`train.final_evals`: the finished run's evaluation (with its baselines) and sample grid, printed."""
  # Imported here: most runs never use them, and `evaluate` imports every evaluator.
  from multimodal_jax import evaluate  # pylint: disable=g-import-not-at-top
  from multimodal_jax import sample  # pylint: disable=g-import-not-at-top
  print(f"Final evaluation ({', '.join(evals)}; `python -m multimodal_jax.evaluate --workdir={workdir}` runs "
        "every evaluator):", flush=True)
  evaluate.evaluate(workdir, evals=",".join(evals))
  grid_path = storage.join(workdir, "samples.png")
  sample.sample_to_png(workdir, grid_path, num_samples=8, num_inputs=4)
  print(f"Sample grid (4 test inputs x 8 samples, the ground truth last): {grid_path}", flush=True)


def next_commands(workdir: str) -> list[str]:
  """The commands that use a trained workdir: evaluate it, draw a sample grid, look at its TensorBoard logs."""
  return [f"python -m multimodal_jax.evaluate --workdir={workdir}",
          f"python -m multimodal_jax.sample --workdir={workdir} --out={storage.join(workdir, 'samples.png')}",
          f"tensorboard --logdir={workdir}"]


def _summary(config: ml_collections.ConfigDict, workdir: str, steps_trained: int, seconds: float,
             scalars: Mapping[str, float]) -> str:
  """What a finished run did and what to run next, printed at its end."""
  newest = max(checkpointing.committed_steps(workdir), default=None)
  losses = " ".join(f"{k}={v:.4g}" for k, v in scalars.items() if "loss" in k) or "(none logged)"
  lines = [f"Done: {config.method} on {config.data.name}, {steps_trained} steps this run "
           f"(train.num_steps={config.train.num_steps}) in {_format_eta(seconds)} wall time; "
           + (f"final {losses}." if steps_trained else "nothing left to train."),
           f"  newest checkpoint: " + (storage.join(workdir, checkpointing.CHECKPOINTS, str(newest))
                                       if newest is not None else "none"),
           "  next:"]
  return "\n".join(lines + [f"    {command}" for command in next_commands(workdir)])


def _run_loop(config, workdir, method, compiled, outputs: _Outputs, manager, state, step, global_batches,
              data_iter, profile_steps: int = 0) -> tuple[PyTree, int, bool]:
  """Rounds until `train.num_steps`: metrics, grids, checkpoints on their schedules; SIGTERM, Ctrl-C save.

  Returns (state, step, whether train.num_steps was reached: False when a signal stopped it).
  """
  num_steps, t = config.train.num_steps, config.train
  start_step = step
  clock = TrainingClock(step)
  preempted = False
  profile = _StepProfile(workdir, profile_steps)
  with _Preemption() as preemption, contextlib.closing(profile):
    while step < num_steps:
      state = method.run_round(compiled, state, next(global_batches))
      prev_step, step = step, step + method.steps_per_round
      profile.after_round(state, step)
      outputs.report_progress(step)
      crossed = lambda every: step // every > prev_step // every or step >= num_steps
      if crossed(t.log_every) or crossed(t.checkpoint_every):
        outputs.flush_metrics(step, clock, manager, workdir)
      if t.sample_every and crossed(t.sample_every) and step < num_steps:
        with clock.paused(wait_for=state):
          outputs.write_samples(state, step)
      if t.eval_every and crossed(t.eval_every):
        with clock.paused(wait_for=state):
          outputs.evaluate(state, step)
      preempted = preemption.requested or manager.reached_preemption(step)
      if crossed(t.checkpoint_every) or preempted:
        with clock.paused(wait_for=state):
          save_checkpoint(manager, step, state, data_iter)
      if preempted:
        print(f"{preemption.reason}: saved the checkpoint at step {step}; rerun the same command to resume.",
              flush=True)
        return state, step, False
  if step > start_step:
    outputs.write_samples(state, step)
  else:
    print(f"Nothing to do: the checkpoint is already at step {step} >= train.num_steps.", flush=True)
  return state, step, True
