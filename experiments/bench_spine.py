r"""Benchmark of the training spine: where the loop's wall time goes, and the input pipeline's headroom.

  python experiments/bench_spine.py [--config=configs/srim.py:runlocal] [--rounds=20] [--whole_loop]
  python experiments/bench_spine.py --config=configs/regression.py --rounds=200

Prints, from one run on this machine, for any config (default: SRIM's
:runlocal, one selection and L = 2 updates per round):
  * examples/s of the grain input pipeline alone;
  * the loop's rounds replayed with every step timed to completion
    (`jax.block_until_ready` after each compiled step and after fetching
    each batch; in this benchmark only, the loop itself never waits): the
    share of wall time waiting for data, in each step (IMLE: select,
    update) and on the host in between, and steps/s;
  * the same rounds without those syncs (as the loop runs them): steps/s;
  * with --whole_loop, steps/s of `train_and_evaluate` itself (the difference
    of a short and a long run cancels start-up, compilation and the final
    grid and checkpoint);
  * the ratio pipeline examples/s / examples/s the steps consume (target >= 5).
On an accelerator the SRIM loop should be neither input- nor host-bound:
"waiting for data" and "host" should be small shares. `--profile_steps=N` on
`multimodal_jax.main` gives the device-side picture in TensorBoard.
The run writes one JSON record to experiments/results/.
"""

import collections
import tempfile
import time

from absl import flags
import jax
from ml_collections import config_flags

import bench_common
from multimodal_jax import cli
from multimodal_jax import config_lib
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax.data import pipeline

config_flags.DEFINE_config_file("config", "configs/srim.py:runlocal", "Config to benchmark.")
_ROUNDS = flags.DEFINE_integer("rounds", 20, "Timed rounds (IMLE: one selection + L updates each).")
_WHOLE_LOOP = flags.DEFINE_bool("whole_loop", False, "Also time train_and_evaluate (two runs).")
_RECORD = flags.DEFINE_bool("record", True, "Write the JSON record to experiments/results/.")


class TimedSteps:
  """Wraps the loop's CompiledSteps: each call waits for its step and adds its wall time to `seconds[name]`."""

  def __init__(self, compiled: train.CompiledSteps):
    self.compiled = compiled
    self.seconds = collections.defaultdict(float)
    self.calls = collections.Counter()

  def __call__(self, name, state, batch):
    t0 = time.perf_counter()
    state = jax.block_until_ready(self.compiled(name, state, batch))
    self.seconds[name] += time.perf_counter() - t0
    self.calls[name] += 1
    return state


def main(argv):
  del argv
  config = flags.FLAGS.config
  config.train.num_steps = max(config.train.num_steps, 10_000)  # schedules long enough for any --rounds
  batch_size = config.data.batch_size
  workdir = tempfile.mkdtemp(prefix="bench_spine_")

  # 1. Input pipeline alone.
  it = pipeline.create_train_iterator(config)
  for _ in range(5):
    next(it)
  n_batches = max(_ROUNDS.value, 50)
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  pipe_examples_per_s = n_batches * batch_size / (time.perf_counter() - t0)

  # 2. The loop's rounds, every step and batch waited for.
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  method, _, data_iter = train.build_method(config, workdir)
  compiled = train.CompiledSteps(method.steps, replicated, sharded, timed=method.timed_steps)
  state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(0))
  batches = pipeline.iterate_global(data_iter, sharded)
  for _ in range(2):  # compile every step (IMLE: past the z = 0 phase too)
    state = jax.block_until_ready(method.run_round(compiled, state, next(batches)))
  timed = TimedSteps(compiled)
  data_seconds = 0.0
  t_start = time.perf_counter()
  for _ in range(_ROUNDS.value):
    t0 = time.perf_counter()
    batch = jax.block_until_ready(next(batches))
    data_seconds += time.perf_counter() - t0
    state = method.run_round(timed, state, batch)
  wall = time.perf_counter() - t_start
  steps = _ROUNDS.value * method.steps_per_round
  shares = {"waiting for data": data_seconds / wall}
  shares.update({f"step '{name}'": s / wall for name, s in timed.seconds.items()})
  shares["host, between steps"] = 1.0 - sum(shares.values())
  synced_steps_per_s = steps / wall

  # 3. The same rounds as the loop runs them: no sync until the end.
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(_ROUNDS.value):
    state = method.run_round(compiled, state, next(batches))
  jax.block_until_ready(state)
  async_steps_per_s = steps / (time.perf_counter() - t0)
  step_seconds = sum(timed.seconds.values())
  consumed = steps / step_seconds * batch_size / method.steps_per_round  # pool examples per second of steps

  # 4. train_and_evaluate itself.
  loop_steps_per_s = None
  if _WHOLE_LOOP.value:
    config.train.sample_every = 0
    config.train.checkpoint_every = config.train.log_every = 100_000
    durations = {}
    short = 2 * method.steps_per_round
    for num_steps in (short, short + steps):
      config.train.num_steps = num_steps
      with tempfile.TemporaryDirectory() as run_dir:
        t0 = time.perf_counter()
        train.train_and_evaluate(config, run_dir)
        durations[num_steps] = time.perf_counter() - t0
    loop_steps_per_s = steps / (durations[short + steps] - durations[short])

  print(f"\n== bench_spine: {config.method} on {config.data.name}, global batch {batch_size}, "
        f"{method.steps_per_round} step(s) per round, {jax.device_count()} {jax.default_backend()} device(s) "
        f"({jax.devices()[0].device_kind}), compute {config_lib.resolve_compute_dtype(config).name}")
  print(f"input pipeline alone       : {pipe_examples_per_s:8.0f} examples/s")
  print(f"rounds, every step waited  : {synced_steps_per_s:8.2f} steps/s over {_ROUNDS.value} rounds; wall time:")
  for what, share in shares.items():
    calls = next((timed.calls[n] for n in timed.calls if f"'{n}'" in what), None)
    detail = f" ({timed.seconds[what.split(chr(39))[1]] / calls * 1e3:.1f} ms per call)" if calls else ""
    print(f"    {what:<22}: {share:6.1%}{detail}")
  print(f"rounds as the loop runs    : {async_steps_per_s:8.2f} steps/s (no sync)")
  if loop_steps_per_s is not None:
    print(f"whole loop (train_and_evaluate): {loop_steps_per_s:8.2f} steps/s")
  print(f"pipeline / steps ratio     : {pipe_examples_per_s / consumed:8.1f}x  (target >= 5x)")
  if _RECORD.value:
    numbers = {"pipeline_examples_per_s": pipe_examples_per_s, "synced_steps_per_s": synced_steps_per_s,
               "wall_time_shares": shares, "async_steps_per_s": async_steps_per_s,
               "whole_loop_steps_per_s": loop_steps_per_s, "pipeline_over_steps": pipe_examples_per_s / consumed,
               "seconds_per_call": {n: timed.seconds[n] / timed.calls[n] for n in timed.calls}}
    path = bench_common.write_record("bench_spine", config_lib.resolve_compute_dtype(config).name, 0.0, numbers,
                                     {"config": config.method, "data": config.data.name, "rounds": _ROUNDS.value,
                                      "batch_size": batch_size})
    print(f"record: {path}")


if __name__ == "__main__":
  cli.run(main)  # The JAX workarounds (faster CPU compiles, identical values); user errors in one line.
