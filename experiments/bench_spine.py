r"""Benchmark of the training spine: step throughput vs input-pipeline throughput.

  python experiments/bench_spine.py [--config=configs/regression.py] [--steps=200]

Prints, from one run on this machine:
  * steps/s of the compiled `regression` step alone (batch already on device);
  * steps/s of the whole loop (`train_and_evaluate`: data, step, metrics);
  * examples/s of the grain input pipeline alone;
  * the ratio pipeline examples/s / examples/s the step consumes (target >= 5).
"""

import tempfile
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from multimodal_jax import inference
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.methods import base as methods_base

config_flags.DEFINE_config_file("config", "configs/regression.py", "Config to benchmark.")
_STEPS = flags.DEFINE_integer("steps", 200, "Timed steps.")


def main(argv):
  del argv
  config = flags.FLAGS.config
  batch_size = config.data.batch_size

  # 1. Input pipeline alone.
  it = pipeline.create_train_iterator(config)
  local = next(it)
  for _ in range(5):
    next(it)
  n_batches = max(_STEPS.value, 50)
  t0 = time.perf_counter()
  for _ in range(n_batches):
    next(it)
  pipe_examples_per_s = n_batches * batch_size / (time.perf_counter() - t0)

  # 2. The compiled step alone.
  mesh = inference.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  method = methods_base.make_method(config, pipeline.global_batch_spec(config, local))
  compiled = train.CompiledSteps(method.steps, replicated, sharded)
  state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(0))
  batch = pipeline.to_global_array(local, sharded)
  for _ in range(5):
    state = method.run_round(compiled, state, batch)
  jax.block_until_ready(state)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state = method.run_round(compiled, state, batch)
  jax.block_until_ready(state)
  step_per_s = _STEPS.value * method.steps_per_round / (time.perf_counter() - t0)

  # 3. The whole loop, data included: the difference of two runs (10 and 10 + N
  # steps) cancels start-up, compilation, the final grid and checkpoint.
  config.train.sample_every = 0
  config.train.checkpoint_every = 10_000
  config.train.log_every = 10_000
  durations = {}
  for num_steps in (10, 10 + _STEPS.value):
    config.train.num_steps = num_steps
    with tempfile.TemporaryDirectory() as workdir:
      t0 = time.perf_counter()
      train.train_and_evaluate(config, workdir)
      durations[num_steps] = time.perf_counter() - t0
  loop_steps_per_s = _STEPS.value / (durations[10 + _STEPS.value] - durations[10])

  consumed = step_per_s * batch_size
  print(f"\n== bench_spine: {config.method} on {config.data.name}, global batch {batch_size}, "
        f"{jax.device_count()} {jax.default_backend()} device(s)")
  print(f"compiled step alone     : {step_per_s:8.1f} steps/s = {consumed:8.0f} examples/s")
  print(f"whole loop (with data)  : {loop_steps_per_s:8.1f} steps/s")
  print(f"input pipeline alone    : {pipe_examples_per_s:8.0f} examples/s")
  print(f"pipeline / step ratio   : {pipe_examples_per_s / consumed:8.1f}x  (target >= 5x)")


if __name__ == "__main__":
  app.run(main)
