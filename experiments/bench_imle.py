r"""Benchmark of conditional IMLE's selection kernel and update step (issues #5, #13).

  python experiments/bench_imle.py [--nets=paper,small] [--dtype=float32|bfloat16] [--lr=8]
                                   [--paper_inputs=2] [--small_inputs=2] [--cpu_devices=-1]
                                   [--against_torch]

One run prints, per generator (the paper RRDB: nf 64, 24 blocks, growth 128;
a small RRDB: nf 32, 4 blocks, growth 32; both lr x lr -> 8 lr x 8 lr, 8 -> 64
by default, `--lr=32` for the paper's ImageNet 32 -> 256, with 5 code
channels), m = 100 codes per input and the distance
0.01 * L1(pixels) + L1(VGG-19 conv5_4) built with RANDOM VGG weights (timing
only; the Distance is constructed explicitly here, never by make_distance),
with generator and VGG computing in `--dtype` (parameters, distances and the
argmin float32, as `config.compute_dtype`):
  (a) selection throughput of `select_nearest_latents`, samples/s;
  (b) the reference code's scheme on the same jitted networks: a Python loop
      over inputs, the m samples of one input as one batch, the target's
      features recomputed for every sample, argmin on the host
      (SRIM-pytorch dci_util.get_code); and (b') its literal per-sample form
      (SRIM_model.get_loss: batch 1 per sample) on a subset of samples;
  (c) achieved FLOP/s of (a) over this machine's matmul peak measured in the
      same dtype (bench_common: 8192^3 on GPU/TPU, 2048-4096^3 on CPU). FLOPs
      per sample are counted exactly from the jaxpr of one generator forward
      and one VGG forward (padded convolutions, bench_common.count_flops), never
      from XLA's cost analysis; "the limit" is peak / FLOPs per sample;
  (d) peak memory of the compiled selection (XLA buffer assignment:
      arguments + outputs + temporaries) at m = 50, 100, 200 with a fixed
      chunk, and without chunking for contrast;
  (e) steps/s of the IMLE method's real update step at |S~| = 4;
  (f) with --against_torch: experiments/torch_srim_reference.py (PyTorch,
      SRIM-pytorch's scheme; a copy of ../shared/bench/) on the same shapes in
      the same run (`--device cuda` on GPU, `--amp` for bfloat16), and the
      ratios of (a) and (e) to it. Skipped, saying so, without torch.
The run writes one JSON record to experiments/results/ (bench_common).

On CPU the kernel runs with one XLA device per core (`--cpu_devices`; the
same flag of `multimodal_jax.main`), the batch sharded over them: XLA:CPU
splits one convolution over 2 threads poorly (a 64->64 3x3 conv at 64x64 ran
at 49 GFLOP/s on 2 threads vs 57 on 1), while 2 single-core devices ran it at
~120 together. The matmul peak is the best of one device and all devices.
The reference schemes (b, b') run on one device with the whole thread pool,
as PyTorch's intra-op threading would. `--cpu_devices=1` gives the old layout.

Measured on the 2-core development CPU (2 devices, 8 -> 64, one run each on a
machine shared with other jobs; records in experiments/results/):
  float32:  paper RRDB 0.80 of the float32 limit (3.42 samples/s), 1.23x the
            reference scheme, 1.81x PyTorch's selection; small RRDB 0.75
            (16.4 samples/s), 2.01x, 2.76x. (Issue #5: 0.78/1.46x, 0.73/2.16x.)
  bfloat16: small RRDB 0.83 of the bfloat16 limit (13.9 samples/s: bfloat16
            is no faster than float32 on this CPU, hence compute_dtype 'auto'
            = float32 there).
PyTorch's CPU update step varied 20x between the two runs (OpenMP threads
on a contended machine); its selection numbers were steadier.
"""

import importlib.util
import json
import os
import subprocess
import sys
import time

from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

import bench_common
from multimodal_jax import cli
from multimodal_jax import config_lib
from multimodal_jax.losses import imle_selection
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import imle
from multimodal_jax.models import registry
from multimodal_jax.models import rrdb
from multimodal_jax.models import vgg as vgg_lib

_NETS = flags.DEFINE_list("nets", ["paper", "small"], "Generators to time.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(bench_common.DTYPES),
                           "Compute dtype of the generator and the VGG (parameters stay float32).")
_LR = flags.DEFINE_integer("lr", 8, "Input size (x8 output): 8 -> 64, or 32 -> 256 (the paper's ImageNet).")
_PAPER_INPUTS = flags.DEFINE_integer("paper_inputs", 2, "Inputs per selection call, paper RRDB.")
_SMALL_INPUTS = flags.DEFINE_integer("small_inputs", 2, "Inputs per selection call, small RRDB.")
_CHUNK = flags.DEFINE_integer("chunk", 0, "Codes per input per generator call (0: the net's default).")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repetitions (best is reported).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", -1, "XLA CPU devices the kernel is sharded over "
                                    "(-1: one per core). Ignored on GPU/TPU.")
_MEMORY = flags.DEFINE_bool("memory", True, "(d): compile the selection at m = 50/100/200 for its memory.")
_AGAINST_TORCH = flags.DEFINE_bool("against_torch", False, "(f): run the PyTorch reference on the same "
                                   "shapes and print the ratios (skipped without torch).")
_RECORD = flags.DEFINE_bool("record", True, "Write the JSON record to experiments/results/.")

# Chunks of 25 codes x 2 inputs = 50 samples per generator call: VGG-19 at 64^2
# runs at ~80% of the matmul peak on batches of 16-64 on CPU, less on larger ones.
NETS = {  # name: (features, num_blocks, growth, chunk_size)
    "paper": (64, 24, 128, 25),
    "small": (32, 4, 32, 25),
}
MEMORY_CHUNK = 25
M = 100
CODE_CHANNELS = 5
SCALE = 8
UPDATE_BATCH = 4
TORCH_REFERENCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_srim_reference.py")


def random_vgg_distance(dtype: str) -> perceptual.Distance:
  """0.01 L1(pixels) + L1(VGG-19 conv5_4), RANDOM weights (timing only), the trunk computing in `dtype`."""
  return perceptual.Distance(name="vgg", pixel_norm="l1", pixel_weight=0.01, layers=("conv5_4",),
                             layer_weights=(1.0,), feature_norm="l1", trunk="vgg19", input_norm="torchvision",
                             weights_source="RANDOM He-normal weights (benchmark only)", dtype=dtype,
                             params=vgg_lib.init_vgg_params("vgg19"))


def per_sample_flops(net: rrdb.RRDBNet, params, distance: perceptual.Distance, lr: int) -> dict[str, float]:
  """Exact FLOPs of one sample from the jaxprs: the generator's forward and the distance's features."""
  x, z = jnp.zeros((1, lr, lr, 3)), jnp.zeros((1, lr, lr, CODE_CHANNELS))
  y = jnp.zeros((1, lr * SCALE, lr * SCALE, 3))
  return {"generator": bench_common.count_flops(lambda p: net.apply({"params": p}, x, z), params),
          "distance": bench_common.count_flops(lambda d: d.features(y), distance)}


def run_torch_reference(features, num_blocks, growth, num_inputs, lr, dtype) -> dict | None:
  """(f): the PyTorch reference's JSON on the same shapes, or None (printed why) without torch."""
  if importlib.util.find_spec("torch") is None:
    print("(f) against torch: SKIPPED, torch is not installed (pip install -e '.[torch]').")
    return None
  device = "cuda" if jax.default_backend() == "gpu" else "cpu"
  cmd = [sys.executable, TORCH_REFERENCE, "--lr", str(lr), "--nf", str(features), "--nb", str(num_blocks),
         "--gc", str(growth), "--m", str(M), "--pool", str(num_inputs), "--batch", str(UPDATE_BATCH),
         "--device", device, "--threads", str(os.cpu_count() or 1)] + (["--amp"] if dtype == "bfloat16" else [])
  if dtype == "bfloat16" and device == "cpu":
    print("   (torch's --amp autocast is CUDA's; on CPU the reference runs float32)")
    cmd.remove("--amp")
  proc = subprocess.run(cmd, capture_output=True, text=True)
  if proc.returncode != 0:
    print(f"(f) against torch: FAILED ({proc.returncode}): {proc.stderr[-2000:]}")
    return None
  return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_net(name: str, dtype: str, lr: int, mesh, peaks: list[float]) -> dict:
  """(a)-(f) for one generator; returns its numbers for the record."""
  features, num_blocks, growth, chunk = NETS[name]
  chunk = _CHUNK.value or chunk
  num_devices = jax.device_count()
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  batch = _PAPER_INPUTS.value if name == "paper" else _SMALL_INPUTS.value
  batch = -(-batch // num_devices) * num_devices  # A multiple of the devices.
  hr = lr * SCALE
  net = rrdb.RRDBNet(features=features, num_blocks=num_blocks, growth=growth, upsample_factor=SCALE,
                     unroll=1, dtype=jnp.dtype(dtype))  # as the method's selection (forward only)
  distance = random_vgg_distance(dtype)
  latent_shape = (lr, lr, CODE_CHANNELS)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.uniform(size=(batch, lr, lr, 3)), jnp.float32)
  y = jnp.asarray(rng.uniform(size=(batch, hr, hr, 3)), jnp.float32)
  params = jax.jit(net.init)(jax.random.PRNGKey(0), x[:1], jnp.zeros((1,) + latent_shape))["params"]
  num_params = sum(p.size for p in jax.tree.leaves(params))
  flops = per_sample_flops(net, params, distance, lr)
  sample_flops = flops["generator"] + flops["distance"]
  analytic = rrdb.flops_per_sample(features, num_blocks, growth, 3 + CODE_CHANNELS, (lr, lr))
  print(f"\n-- {name} RRDB: nf {features}, {num_blocks} blocks, growth {growth}, {lr}x{lr} -> {hr}x{hr}, "
        f"{CODE_CHANNELS} code channels, {num_params / 1e6:.1f}M params, {dtype}; m = {M}, {batch} inputs, "
        f"chunk {chunk}")
  print(f"   GFLOP/sample (jaxpr count, padded convolutions): generator {flops['generator'] / 1e9:.2f} "
        f"(rrdb.flops_per_sample: {analytic / 1e9:.2f}) + distance {flops['distance'] / 1e9:.2f} "
        f"= {sample_flops / 1e9:.2f}; {dtype} limit {max(peaks) / sample_flops:.1f} samples/s")

  # (a) the kernel, the batch sharded over the devices.
  generate = lambda p, xx, zz: net.apply({"params": p}, xx, zz)
  x_sharded, y_sharded = jax.device_put((x, y), sharded)
  params_replicated, distance_replicated = jax.device_put((params, distance), replicated)

  def kernel(p, d, xx, yy, key, m, chunk_size):
    return imle_selection.select_nearest_latents(lambda a, b: generate(p, a, b), d, xx, yy, key,
                                                 num_samples=m, latent_shape=latent_shape,
                                                 chunk_size=chunk_size, num_shards=num_devices)

  select = jax.jit(kernel, static_argnums=(5, 6))
  key = jax.random.PRNGKey(1)
  kernel_flops = bench_common.count_flops(lambda p, d, xx, yy: kernel(p, d, xx, yy, key, M, chunk),
                                          params, distance, x, y)
  before = bench_common.matmul_peak(dtype, bench_common.matmul_sizes()[:1])
  t = bench_common.best_time(
      lambda: select(params_replicated, distance_replicated, x_sharded, y_sharded, key, M, chunk), _REPEATS.value)
  adjacent = (before + bench_common.matmul_peak(dtype, bench_common.matmul_sizes()[:1])) / 2
  peaks += [before, adjacent]
  peak = max(peaks)
  limit = peak / sample_flops
  kernel_rate = batch * M / t
  print(f"(a) kernel: {kernel_rate:.2f} samples/s = {kernel_rate / limit:.2f} of the {dtype} limit "
        f"{limit:.2f} at the run's best {dtype} matmul peak {peak / 1e9:.1f} GFLOP/s "
        f"({kernel_rate * sample_flops / adjacent:.2f} of the matmul speed measured just "
        f"before/after, {adjacent / 1e9:.1f} GFLOP/s; {batch * M} samples in {t:.2f} s; the kernel's own "
        f"jaxpr: {kernel_flops / (batch * M) / 1e9:.2f} GFLOP/sample with the targets' features)")

  # (b) the reference scheme on the same jitted networks.
  gen_jit = jax.jit(generate)
  dist_jit = jax.jit(lambda d, a, b: d(a, b))

  def reference(num_inputs, per_batch, m=M):
    chosen = []
    for i in range(num_inputs):
      z = jax.random.normal(jax.random.fold_in(key, i), (m,) + latent_shape)
      losses = []
      for s in range(0, m, per_batch):
        xs = jnp.broadcast_to(x[i:i + 1], (per_batch,) + x.shape[1:])
        ys = jnp.broadcast_to(y[i:i + 1], (per_batch,) + y.shape[1:])  # target features recomputed
        losses.append(np.asarray(dist_jit(distance, gen_jit(params, xs, z[s:s + per_batch]), ys)))
      chosen.append(z[int(np.argmin(np.concatenate(losses)))])
    return jnp.stack(chosen)

  t = bench_common.best_time(lambda: reference(batch, M), _REPEATS.value, warmup=lambda: reference(1, M))
  ref_rate = batch * M / t
  print(f"(b) reference scheme (loop over inputs, m per batch, target features per sample): "
        f"{ref_rate:.2f} samples/s; kernel / reference = {kernel_rate / ref_rate:.2f}x")
  m_literal = 20 if name == "paper" else M
  t1 = bench_common.best_time(lambda: reference(1, 1, m_literal), 1, warmup=lambda: reference(1, 1, 2))
  lit_rate = m_literal / t1
  print(f"(b') literal SRIM_model.get_loss (batch 1 per sample), {m_literal} samples: {lit_rate:.2f} samples/s; "
        f"kernel / this = {kernel_rate / lit_rate:.2f}x")

  # (c) achieved FLOP/s.
  achieved = kernel_rate * sample_flops
  print(f"(c) achieved {achieved / 1e9:.1f} GFLOP/s = {achieved / peak:.2f} of the run's best {dtype} matmul "
        f"peak ({peak / 1e9:.1f} GFLOP/s)")

  # (d) peak memory (XLA buffer assignment of the compiled selection).
  memory = {}
  if _MEMORY.value:
    def peak_bytes(m, chunk_size):
      return imle_selection.peak_bytes(select.lower(params, distance, x, y, key, m, chunk_size).compile())

    memory = {f"chunk{MEMORY_CHUNK}_m{m}": peak_bytes(m, MEMORY_CHUNK) for m in (50, 100, 200)}
    memory.update({f"unchunked_m{m}": peak_bytes(m, m) for m in (50, 100, 200)})
    show = lambda b: "n/a" if b is None else f"{b / 2**20:.0f} MiB"
    print("(d) peak memory, chunk {}: {}; unchunked: {}".format(
        MEMORY_CHUNK, ", ".join(f"m={m}: {show(memory[f'chunk{MEMORY_CHUNK}_m{m}'])}" for m in (50, 100, 200)),
        ", ".join(f"m={m}: {show(memory[f'unchunked_m{m}'])}" for m in (50, 100, 200))))

  # (e) the method's real update step at |S~| = 4 (random-weight VGG distance patched in).
  update_rate, loss = bench_update(features, num_blocks, growth, chunk, distance, x, y, dtype)
  print(f"(e) update step, |S~| = {UPDATE_BATCH}: {update_rate:.2f} steps/s (loss {loss:.4g})")

  numbers = {"net": name, "features": features, "num_blocks": num_blocks, "growth": growth, "lr": lr, "hr": hr,
             "m": M, "inputs": batch, "chunk": chunk, "gflop_per_sample": sample_flops / 1e9,
             "gflop_generator": flops["generator"] / 1e9, "gflop_distance": flops["distance"] / 1e9,
             "kernel_samples_per_s": kernel_rate, "limit_samples_per_s": limit,
             "kernel_over_limit": kernel_rate / limit, "reference_scheme_samples_per_s": ref_rate,
             "literal_samples_per_s": lit_rate, "achieved_gflop_per_s": achieved / 1e9,
             "peak_gflop_per_s": peak / 1e9, "update_steps_per_s": update_rate, "selection_peak_bytes": memory}
  # (f) PyTorch on the same shapes, in the same run.
  if _AGAINST_TORCH.value:
    torch_numbers = run_torch_reference(features, num_blocks, growth, batch, lr, dtype)
    if torch_numbers:
      sel, upd = torch_numbers["selection_samples_per_s"], torch_numbers["update_steps_per_s"]
      print(f"(f) PyTorch reference ({torch_numbers['device']}, {torch_numbers['threads']} threads, "
            f"amp {torch_numbers['amp_bf16']}): selection {sel:.2f} samples/s, update {upd:.2f} steps/s; "
            f"this kernel / torch = {kernel_rate / sel:.2f}x, update / torch = {update_rate / upd:.2f}x")
      numbers.update(torch=torch_numbers, kernel_over_torch=kernel_rate / sel, update_over_torch=update_rate / upd)
  return numbers


def bench_update(features, num_blocks, growth, chunk, distance, x, y, dtype) -> tuple[float, float]:
  """(e): steps/s of the IMLE method's update step, its generator computing in `dtype`."""
  config = config_lib.base_config()
  config.method = "imle"
  config.compute_dtype = dtype
  config.model.name = "rrdb"
  config.model.features, config.model.num_blocks = features, num_blocks
  config.model.growth, config.model.dense_conv_style = growth, "split"
  config.model.global_skip = "none"  # the paper's network, as the reference
  config.distance = config_lib.default_distance_config("pixel")
  config.imle = {"selection_distance": config_lib.default_distance_config("pixel"), "num_samples": M,
                 "chunk_size": chunk, "example_blocks": 1, "updates_per_selection": 10,
                 "minibatch_size": UPDATE_BATCH, "code_channels": CODE_CHANNELS, "perturbation": 0.1,
                 "stratified_codes": False,
                 "zero_code_steps": 0, "bilinear_from_step": -1, "calibration_examples": 4,
                 "time_steps": False, "rebalance_dataset": False, "rebalance_loss": False,
                 "rebalance_top_classes": 5}
  original = perceptual.make_distance
  perceptual.make_distance = lambda cfg, weights_dir=None, dtype=None: distance
  try:
    spec = {"x": jax.ShapeDtypeStruct(x.shape, jnp.float32), "y": jax.ShapeDtypeStruct(y.shape, jnp.float32)}
    with registry.compute_dtype_scope(config_lib.resolve_compute_dtype(config)):
      method = imle.make_method(config, spec)
  finally:
    perceptual.make_distance = original
  state = jax.jit(method.init)(jax.random.PRNGKey(0))
  update = jax.jit(method.steps["update"], donate_argnums=0)
  pool = {"x": x, "y": y}
  state, _ = update(state, pool)
  jax.block_until_ready(state)
  n_steps = 3 if num_blocks > 8 else 10
  t0 = time.perf_counter()
  for _ in range(n_steps):
    state, metrics = update(state, pool)
  jax.block_until_ready(state)
  return n_steps / (time.perf_counter() - t0), float(metrics["loss"])


def main(argv):
  del argv
  cpu_devices = _CPU_DEVICES.value if _CPU_DEVICES.value > 0 else os.cpu_count() or 1
  jax.config.update("jax_num_cpu_devices", cpu_devices)  # Before the backend starts.
  dtype = _DTYPE.value
  mesh = jax.make_mesh((jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  print(f"== bench_imle on {jax.device_count()} {jax.default_backend()} device(s), "
        f"{jax.devices()[0].device_kind}, jax {jax.__version__}; the kernel is sharded over all of them; "
        f"compute dtype {dtype}")
  peaks = [bench_common.matmul_peak(dtype)]
  sizes = ", ".join(f"{n}^3" for n in bench_common.matmul_sizes())
  print(f"{dtype} matmul peak (measured, best of {sizes} on one and on all devices): {peaks[0] / 1e9:.1f} GFLOP/s"
        f"{' (float32 matmuls on GPU use TF32)' if dtype == 'float32' and jax.default_backend() == 'gpu' else ''}")
  print(f"distance: {random_vgg_distance(dtype).describe()}")
  results = [bench_net(name, dtype, _LR.value, mesh, peaks) for name in _NETS.value]
  if _RECORD.value:
    path = bench_common.write_record("bench_imle", dtype, max(peaks), {"nets": results},
                                     {"lr": _LR.value, "m": M, "cpu_devices": cpu_devices,
                                      "against_torch": _AGAINST_TORCH.value})
    print(f"\nrecord: {path}")


if __name__ == "__main__":
  cli.run(main)  # The JAX workarounds (faster CPU compiles, identical values); user errors in one line.
