r"""Benchmark of conditional IMLE's selection kernel and update step (issue #5).

  python experiments/bench_imle.py [--nets=paper,small] [--paper_inputs=2] [--small_inputs=2]
                                   [--cpu_devices=-1]

One run prints, per generator (the paper RRDB: nf 64, 24 blocks, growth 128;
a small RRDB: nf 32, 4 blocks, growth 32; both 8x8 -> 64x64 with 5 code
channels), m = 100 codes per input and the distance
0.01 * L1(pixels) + L1(VGG-19 conv5_4) built with RANDOM VGG weights (timing
only; the Distance is constructed explicitly here, never by make_distance):
  (a) selection throughput of `select_nearest_latents`, samples/s;
  (b) the reference code's scheme on the same jitted networks: a Python loop
      over inputs, the m samples of one input as one batch, the target's
      features recomputed for every sample, argmin on the host
      (SRIM-pytorch dci_util.get_code); and (b') its literal per-sample form
      (SRIM_model.get_loss: batch 1 per sample) on a subset of samples;
  (c) achieved FLOP/s of (a) over this machine's measured float32 matmul peak
      (FLOPs: the usual analytic count of padded convolutions, cross-checked
      with XLA's cost analysis, which skips padding taps);
  (d) peak memory of the compiled selection (XLA buffer assignment:
      arguments + outputs + temporaries) at m = 50, 100, 200 with a fixed
      chunk, and without chunking for contrast;
  (e) steps/s of the IMLE method's real update step at |S~| = 4.

On CPU the kernel runs with one XLA device per core (`--cpu_devices`; the
same flag of `multimodal_jax.main`), the batch sharded over them: XLA:CPU
splits one convolution over 2 threads poorly (a 64->64 3x3 conv at 64x64 ran
at 49 GFLOP/s on 2 threads vs 57 on 1), while 2 single-core devices ran it at
~120 together. The matmul peak is the best of one device and all devices.
The reference schemes (b, b') run on one device with the whole thread pool,
as PyTorch's intra-op threading would. `--cpu_devices=1` gives the old layout.
"""

import os
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax import config_lib
from multimodal_jax.losses import imle_selection
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import imle
from multimodal_jax.models import rrdb
from multimodal_jax.models import vgg as vgg_lib

_NETS = flags.DEFINE_list("nets", ["paper", "small"], "Generators to time.")
_PAPER_INPUTS = flags.DEFINE_integer("paper_inputs", 2, "Inputs per selection call, paper RRDB.")
_SMALL_INPUTS = flags.DEFINE_integer("small_inputs", 2, "Inputs per selection call, small RRDB.")
_REPEATS = flags.DEFINE_integer("repeats", 2, "Timed repetitions (best is reported).")
_CPU_DEVICES = flags.DEFINE_integer("cpu_devices", -1, "XLA CPU devices the kernel is sharded over "
                                    "(-1: one per core). Ignored on GPU/TPU.")

# Chunks of 25 codes x 2 inputs = 50 samples per generator call: VGG-19 at 64^2
# runs at ~80% of the matmul peak on batches of 16-64 here, less on larger ones.
NETS = {  # name: (features, num_blocks, growth, chunk_size)
    "paper": (64, 24, 128, 25),
    "small": (32, 4, 32, 25),
}
MEMORY_CHUNK = 25
M = 100
CODE_CHANNELS = 5
LR, HR = 8, 64


def best_time(fn, repeats, warmup=None):
  jax.block_until_ready((warmup or fn)())  # compile / warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return min(times)


PEAKS = []  # every matmul peak measured in this run, GFLOP/s


def matmul_peak(sizes=(2048, 3072, 4096)) -> float:
  """float32 GFLOP/s of the best of a few large square matmuls (the machine's practical peak).

  Each size is timed on one device and, with several devices, as one matmul
  per device at once (sharded); the best counts. The machine is shared, so
  this is measured again next to every kernel timing; ratios use the largest
  value seen in the run (conservative).
  """
  best = 0.0
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  for n in sizes:
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    best = max(best, 2 * n**3 / best_time(lambda: f(a), 3) / 1e9)
    if len(devices) > 1:
      stacked = jax.device_put(jnp.broadcast_to(a, (len(devices), n, n)),
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
      g = jax.jit(lambda b: b @ b)
      best = max(best, len(devices) * 2 * n**3 / best_time(lambda: g(stacked), 3) / 1e9)
  PEAKS.append(best)
  return best


def random_vgg_distance() -> perceptual.Distance:
  """0.01 L1(pixels) + L1(VGG-19 conv5_4), RANDOM weights (timing only)."""
  return perceptual.Distance(name="vgg", pixel_norm="l1", pixel_weight=0.01, layers=("conv5_4",),
                             layer_weights=(1.0,), feature_norm="l1", trunk="vgg19", input_norm="torchvision",
                             weights_source="RANDOM He-normal weights (benchmark only)",
                             params=vgg_lib.init_vgg_params("vgg19"))


def xla_flops(fn, *args) -> float:
  return float(jax.jit(fn).lower(*args).compile().cost_analysis()["flops"])


def vgg19_flops(hw: tuple[int, int], last: str = "conv5_4") -> float:
  """Multiply-adds x 2 of VGG-19 up to `last` on one image, padded positions included."""
  h, w = hw
  flops, cin = 0.0, 3
  for b, n_convs in enumerate(vgg_lib.VGG_BLOCKS["vgg19"], start=1):
    cout = vgg_lib.VGG_WIDTHS[b - 1]
    for i in range(1, n_convs + 1):
      flops += 2.0 * 9 * h * w * cin * cout
      cin = cout
      if f"conv{b}_{i}" == last:
        return flops
    h, w = h // 2, w // 2
  return flops


def per_sample_flops(features, num_blocks, growth, distance) -> dict[str, float]:
  """FLOPs of one sample: analytic (padded convolutions, the usual count) and XLA's cost analysis.

  XLA counts a scan body once and skips zero-padding taps; the generator is
  costed as (net with 1 RRDB) + (num_blocks - 1) x (one RRDB alone).
  """
  x, z = jnp.zeros((1, LR, LR, 3)), jnp.zeros((1, LR, LR, CODE_CHANNELS))

  def cost(module, *inputs):
    params = jax.eval_shape(module.init, jax.random.PRNGKey(0), *inputs)
    params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    return xla_flops(lambda p: module.apply(p, *inputs), params)

  one_block_net = cost(rrdb.RRDBNet(features=features, num_blocks=1, growth=growth), x, z)
  block = cost(rrdb.RRDB(features, growth), jnp.zeros((1, LR, LR, features)))
  y = jnp.zeros((1, HR, HR, 3))
  return {
      "generator": rrdb.flops_per_sample(features, num_blocks, growth, 3 + CODE_CHANNELS, (LR, LR)),
      "distance": vgg19_flops((HR, HR)),
      "generator_xla": one_block_net + (num_blocks - 1) * block,
      "distance_xla": xla_flops(lambda d, a: d.from_features(d.features(a), d.features(y)), distance, y) / 2,
  }


def main(argv):
  del argv
  cpu_devices = _CPU_DEVICES.value if _CPU_DEVICES.value > 0 else os.cpu_count() or 1
  jax.config.update("jax_num_cpu_devices", cpu_devices)  # Before the backend starts.
  num_devices = jax.device_count()
  mesh = jax.make_mesh((num_devices,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  print(f"== bench_imle on {num_devices} {jax.default_backend()} device(s), "
        f"{jax.devices()[0].device_kind}; the kernel is sharded over all of them")
  peak = matmul_peak()
  print(f"float32 matmul peak (measured): {peak:.1f} GFLOP/s")
  distance = random_vgg_distance()
  print(f"distance: {distance.describe()}")
  rng = np.random.default_rng(0)

  for name in _NETS.value:
    features, num_blocks, growth, chunk = NETS[name]
    batch = _PAPER_INPUTS.value if name == "paper" else _SMALL_INPUTS.value
    batch = -(-batch // num_devices) * num_devices  # A multiple of the devices.
    net = rrdb.RRDBNet(features=features, num_blocks=num_blocks, growth=growth, upsample_factor=HR // LR,
                       unroll=1)  # as the method's selection (forward only)
    latent_shape = (LR, LR, CODE_CHANNELS)
    x = jnp.asarray(rng.uniform(size=(batch, LR, LR, 3)), jnp.float32)
    y = jnp.asarray(rng.uniform(size=(batch, HR, HR, 3)), jnp.float32)
    params = jax.jit(net.init)(jax.random.PRNGKey(0), x[:1], jnp.zeros((1,) + latent_shape))["params"]
    num_params = sum(p.size for p in jax.tree.leaves(params))
    flops = per_sample_flops(features, num_blocks, growth, distance)
    sample_flops = flops["generator"] + flops["distance"]
    limit = max(PEAKS) * 1e9 / sample_flops
    print(f"\n-- {name} RRDB: nf {features}, {num_blocks} blocks, growth {growth}, 8x8 -> 64x64, "
          f"{CODE_CHANNELS} code channels, {num_params / 1e6:.1f}M params; m = {M}, {batch} inputs, "
          f"chunk {chunk}")
    print(f"   GFLOP/sample: generator {flops['generator'] / 1e9:.2f} + distance {flops['distance'] / 1e9:.2f} "
          f"= {sample_flops / 1e9:.2f} (XLA cost analysis, no padding taps: "
          f"{flops['generator_xla'] / 1e9:.2f} + {flops['distance_xla'] / 1e9:.2f}); "
          f"float32 limit {limit:.1f} samples/s")

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
    before = matmul_peak((2048,))
    t = best_time(lambda: select(params_replicated, distance_replicated, x_sharded, y_sharded, key, M, chunk),
                  _REPEATS.value)
    adjacent = (before + matmul_peak((2048,))) / 2
    limit = max(PEAKS) * 1e9 / sample_flops
    kernel_rate = batch * M / t
    print(f"(a) kernel: {kernel_rate:.2f} samples/s = {kernel_rate / limit:.2f} of the float32 limit "
          f"{limit:.2f} at the run's best matmul peak {max(PEAKS):.1f} GFLOP/s "
          f"({kernel_rate * sample_flops / adjacent / 1e9:.2f} of the matmul speed measured just "
          f"before/after, {adjacent:.1f} GFLOP/s; {batch * M} samples in {t:.2f} s)")

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

    t = best_time(lambda: reference(batch, M), _REPEATS.value, warmup=lambda: reference(1, M))
    ref_rate = batch * M / t
    print(f"(b) reference scheme (loop over inputs, m per batch, target features per sample): "
          f"{ref_rate:.2f} samples/s; kernel / reference = {kernel_rate / ref_rate:.2f}x")
    m_literal = 20 if name == "paper" else M
    t1 = best_time(lambda: reference(1, 1, m_literal), 1, warmup=lambda: reference(1, 1, 2))  # batch 1
    lit_rate = m_literal / t1
    print(f"(b') literal SRIM_model.get_loss (batch 1 per sample), {m_literal} samples: "
          f"{lit_rate:.2f} samples/s; "
          f"kernel / this = {kernel_rate / lit_rate:.2f}x")

    # (c) achieved FLOP/s.
    achieved = kernel_rate * sample_flops / 1e9
    print(f"(c) achieved {achieved:.1f} GFLOP/s = {achieved / max(PEAKS):.2f} of the run's best matmul peak "
          f"({max(PEAKS):.1f} GFLOP/s)")

    # (d) peak memory (XLA buffer assignment of the compiled selection).
    def peak_bytes(m, chunk_size):
      stats = select.lower(params, distance, x, y, key, m, chunk_size).compile().memory_analysis()
      return stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes

    mems = {m: peak_bytes(m, MEMORY_CHUNK) for m in (50, 100, 200)}
    unchunked = {m: peak_bytes(m, m) for m in (50, 100, 200)}
    print("(d) peak memory, chunk {}: {}; unchunked: {}".format(
        MEMORY_CHUNK, ", ".join(f"m={m}: {b / 2**20:.0f} MiB" for m, b in mems.items()),
        ", ".join(f"m={m}: {b / 2**20:.0f} MiB" for m, b in unchunked.items())))

    # (e) the method's real update step at |S~| = 4 (random-weight VGG distance patched in).
    config = config_lib.base_config()
    config.method = "imle"
    config.model.name = "rrdb"
    config.model.features, config.model.num_blocks = features, num_blocks
    config.model.growth, config.model.dense_conv_style = growth, "split"
    config.distance = perceptual.default_distance_config("pixel")
    config.imle = {"selection_distance": perceptual.default_distance_config("pixel"), "num_samples": M,
                   "chunk_size": chunk, "example_blocks": 1, "updates_per_selection": 10,
                   "minibatch_size": 4, "code_channels": CODE_CHANNELS, "perturbation": 0.1,
                   "zero_code_steps": 0, "bilinear_from_step": -1, "calibration_examples": 4,
                   "time_steps": False, "rebalance_dataset": False, "rebalance_loss": False,
                   "rebalance_top_classes": 5}
    original = perceptual.make_distance
    perceptual.make_distance = lambda cfg, weights_dir=None: distance
    try:
      spec = {"x": jax.ShapeDtypeStruct((batch,) + x.shape[1:], jnp.float32),
              "y": jax.ShapeDtypeStruct((batch,) + y.shape[1:], jnp.float32)}
      method = imle.make_method(config, spec)
    finally:
      perceptual.make_distance = original
    state = jax.jit(method.init)(jax.random.PRNGKey(0))
    update = jax.jit(method.steps["update"], donate_argnums=0)
    pool = {"x": x, "y": y}
    state, _ = update(state, pool)
    jax.block_until_ready(state)
    n_steps = 3 if name == "paper" else 10
    t0 = time.perf_counter()
    for _ in range(n_steps):
      state, metrics = update(state, pool)
    jax.block_until_ready(state)
    print(f"(e) update step, |S~| = 4: {n_steps / (time.perf_counter() - t0):.2f} steps/s "
          f"(loss {float(metrics['loss']):.4g})")


if __name__ == "__main__":
  app.run(main)
