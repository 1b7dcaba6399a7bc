r"""Benchmark: VGG-19 feature extraction against the machine's float32 matmul peak.

  python experiments/bench_perceptual.py            # ~1-2 min on a 2-core CPU
  python experiments/bench_perceptual.py --reps 10 --sizes 16x64,4x256

What it measures, in one process on the default JAX backend:
  peak:  the best time of a jitted 2048x2048 float32 matmul (2 n^3 FLOPs);
         the achievable dense-matmul rate of this machine and this XLA build.
         Peak and workloads are timed round-robin (best of --reps each), so
         all see the same load on a shared machine.
  vgg:   the jitted VGG-19 trunk up to relu5_4 (all 16 convolutions: the SRIM
         tap; conv1_2..conv5_2 stop earlier), FLOPs from XLA's cost analysis
         of the compiled executable (`lower(x).compile().cost_analysis()`),
         divided by the best wall time.
  ratio: vgg FLOP/s / peak FLOP/s. Target >= 0.6.
Weights are RANDOM (He-normal): the FLOPs and the time do not depend on them.
Both use the default matmul/conv precision of the backend (float32 on CPU; on
GPU XLA may use TF32 for both, which keeps the ratio comparable).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from multimodal_jax.models import vgg as vgg_lib


def _once(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


def _flops(jitted, *args) -> float:
  analysis = jitted.lower(*args).compile().cost_analysis()
  if isinstance(analysis, (list, tuple)):  # older jax: one dict per computation
    analysis = analysis[0]
  return float(analysis['flops'])


def interleaved_best_times(calls: dict, reps: int) -> dict[str, float]:
  """Best wall time of each (jitted fn, args) over `reps` rounds, interleaved.

  Round-robin so that the peak and each workload see the same load: on a
  machine shared with other jobs, timing them minutes apart biases the ratio.
  """
  for fn, args in calls.values():
    jax.block_until_ready(fn(*args))  # compile and warm up
  best = {name: float('inf') for name in calls}
  for _ in range(reps):
    for name, (fn, args) in calls.items():
      best[name] = min(best[name], _once(fn, *args))
  return best


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--sizes', default='16x64,4x256', help='comma-separated BATCHxSIZE')
  parser.add_argument('--matmul_n', type=int, default=2048)
  args = parser.parse_args()

  print(f'backend: {jax.default_backend()}, devices: {jax.devices()}')
  print('weights: RANDOM (timing only; FLOPs do not depend on the values)')
  n = args.matmul_n
  a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
  b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
  calls = {'matmul': (jax.jit(jnp.matmul), (a, b))}
  flops = {'matmul': 2.0 * n**3}

  params = vgg_lib.init_vgg_params('vgg19')
  model = vgg_lib.VGG(arch='vgg19')
  # All 16 convolutions; the relu5_4 output is the SRIM tap.
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x, taps=('relu5_4',))['relu5_4'])
  for spec in args.sizes.split(','):
    batch, size = (int(v) for v in spec.split('x'))
    x = jax.random.uniform(jax.random.PRNGKey(2), (batch, size, size, 3), jnp.float32)
    calls[spec] = (forward, (params, x))
    flops[spec] = _flops(forward, params, x)  # XLA cost analysis of the executable

  best = interleaved_best_times(calls, args.reps)
  peak = flops['matmul'] / best['matmul']
  print(f'float32 matmul peak ({n}x{n}, best of {args.reps}): {peak / 1e9:.1f} GFLOP/s')
  for spec in calls:
    if spec == 'matmul':
      continue
    rate = flops[spec] / best[spec]
    print(f'VGG-19 to relu5_4 {spec:>7}: {flops[spec] / 1e9:7.2f} GFLOP in {best[spec] * 1e3:8.1f} ms '
          f'= {rate / 1e9:7.1f} GFLOP/s, ratio to peak {rate / peak:.2f}')

if __name__ == '__main__':
  main()
