r"""Benchmark: VGG-19 feature extraction against the machine's matmul peak, in one dtype.

  python experiments/bench_perceptual.py            # ~1-2 min on a 2-core CPU
  python experiments/bench_perceptual.py --dtype=bfloat16 --reps 10 --sizes 16x64,4x256

What it measures, in one process on the default JAX backend (one device):
  peak:  the best time of jitted square matmuls in --dtype (bench_common:
         2048/3072/4096 on CPU, 8192 on GPU/TPU; 2 n^3 FLOPs), the
         achievable dense rate of this machine, XLA build and dtype.
         Peak and workloads are timed round-robin (best of --reps each), so
         all see the same load on a shared machine.
  vgg:   the jitted VGG-19 trunk up to relu5_4 (all 16 convolutions: the SRIM
         tap; conv1_2..conv5_2 stop earlier) computing in --dtype with float32
         parameters (as `config.compute_dtype`), FLOPs counted exactly from its
         jaxpr (padded convolutions, `bench_common.count_flops`; XLA's cost
         analysis counts no convolutions on GPU), divided by the best wall time.
  ratio: vgg FLOP/s / peak FLOP/s, <= 1 (target >= 0.6).
Weights are RANDOM (He-normal): the FLOPs and the time do not depend on them.
float32 uses the backend's default precision (float32 on CPU; TF32 on recent
NVIDIA GPUs for both the matmul and the convolutions, so the ratio stays
comparable). The run writes one JSON record to experiments/results/.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

import bench_common
from multimodal_jax.models import vgg as vgg_lib


def _once(fn, *args) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - start


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
  parser.add_argument('--dtype', default='float32', choices=bench_common.DTYPES)
  parser.add_argument('--matmul_n', default='', help='comma-separated matmul sizes (default: per backend)')
  parser.add_argument('--no_record', action='store_true', help='do not write the JSON record')
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)

  print(f'backend: {jax.default_backend()}, devices: {jax.devices()}, jax {jax.__version__}, dtype {dtype.name}')
  print('weights: RANDOM (timing only; FLOPs do not depend on the values)')
  sizes = tuple(int(n) for n in args.matmul_n.split(',')) if args.matmul_n else bench_common.matmul_sizes()
  calls, flops = {}, {}
  for i, n in enumerate(sizes):
    a = jax.random.normal(jax.random.PRNGKey(2 * i), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(2 * i + 1), (n, n), dtype)
    calls[f'matmul{n}'] = (jax.jit(jnp.matmul), (a, b))
    flops[f'matmul{n}'] = 2.0 * n**3

  params = vgg_lib.init_vgg_params('vgg19')
  model = vgg_lib.VGG(arch='vgg19', dtype=dtype)
  # All 16 convolutions; the relu5_4 output is the SRIM tap.
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x, taps=('relu5_4',))['relu5_4'])
  workloads = args.sizes.split(',')
  for spec in workloads:
    batch, size = (int(v) for v in spec.split('x'))
    x = jax.random.uniform(jax.random.PRNGKey(2), (batch, size, size, 3), jnp.float32)
    calls[spec] = (forward, (params, x))
    flops[spec] = bench_common.count_flops(forward, params, x)  # exact, from the jaxpr

  best = interleaved_best_times(calls, args.reps)
  peaks = {name: flops[name] / best[name] for name in calls if name.startswith('matmul')}
  peak = max(peaks.values())
  print(f'{dtype.name} matmul peak (best of {args.reps}; '
        + ', '.join(f'{name[6:]}^3: {v / 1e9:.1f}' for name, v in peaks.items())
        + f' GFLOP/s): {peak / 1e9:.1f} GFLOP/s')
  numbers = {}
  for spec in workloads:
    rate = flops[spec] / best[spec]
    numbers[spec] = {'gflop': flops[spec] / 1e9, 'seconds': best[spec], 'gflop_per_s': rate / 1e9,
                     'ratio_to_peak': rate / peak}
    print(f'VGG-19 to relu5_4 {spec:>7}: {flops[spec] / 1e9:7.2f} GFLOP in {best[spec] * 1e3:8.1f} ms '
          f'= {rate / 1e9:7.1f} GFLOP/s, ratio to the {dtype.name} peak {rate / peak:.2f}')
  if not args.no_record:
    path = bench_common.write_record('bench_perceptual', dtype.name, peak, numbers,
                                     {'reps': args.reps, 'matmul_sizes': list(sizes), 'sizes': workloads})
    print(f'record: {path}')


if __name__ == '__main__':
  main()
