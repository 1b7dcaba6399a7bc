"""Conditional IMLE's nearest-sample selection, as one compiled, batched kernel.

IJCV Alg. 1, lines 4-8: for every input x_i of the pool S, draw m codes
z_{i,1..m} ~ N(0, I), generate y~_{i,j} = T(x_i, z_{i,j}) and keep
    sigma(i) = argmin_j L(y~_{i,j}, y_i).
This module computes sigma for a whole batch at once:

  * Memory O(batch x chunk), not O(batch x m): a `lax.scan` walks over the m
    samples in chunks of `chunk_size`; each chunk generates [B, chunk] samples
    in one batched call and folds them into a running (min distance, code).
  * The target's features (e.g. its VGG activations) are computed once per
    input, not once per sample (`Distance.features` / `from_features`).
  * Deterministic given the rng and independent of `chunk_size` and
    `example_blocks`: code j of example i is always
    normal(fold_in(fold_in(rng, i), j)); ties go to the smallest j.
  * Sharded along the batch: every operation is per example and the batch
    stays the major axis of every reshape ([B, chunk] -> [B * chunk]), so a
    batch sharded over devices stays sharded, with no communication.
    `example_blocks` additionally walks each device's shard in blocks (for
    large pools of large images, e.g. |S| = 640 at 256^2).

The optional perturbation of the chosen code (the authors' SRIM-pytorch
`sample_perturbation_magnitude`, 0.1) adds perturbation * N(0, I).

Stratified codes (`stratified=True`, `imle.stratified_codes`). Alg. 1 draws
the m codes of an input independently. With a finite m that makes the
objective, E_y[min_j L(T(x, z_j), y)], reward *hedges*: outputs between the
modes. When no code of an input's m falls in the region of mode A
((1 - p_A)^m of the time: 25% for 12 equal modes and m = 16), the nearest
sample to an A target is a blend of A and its neighbour rather than another
mode, so the optimum keeps some mass on blends (a one-hedge model of 12 modes
with the hedge at half the mode distance: 14% of the mass at m = 16, 7% at
m = 32). Alg. 1 l. 4 asks only that each code be N(0, I); drawing the m codes
of an input as one randomly shifted rank-1 lattice mapped through the normal
quantile (randomised quasi-Monte Carlo, `code_lattice`, `draw_latents`) keeps
that, but spreads them evenly, so every region of probability >= ~1/m holds
one: 12 equal wedges of the plane are missed 6.5% of the time, not 25%. The
hedges stop paying, and on toy_scenes precision rose from 0.70 to 0.88 with
recall 0.94 -> 0.99 (experiments/results/layout_imle.md). Sampling after training is
unchanged (z ~ N(0, I)). Useful where the code is low-dimensional; in many
dimensions a lattice of m points spreads little further than m free draws.

Mixed precision: `generate` may compute in bfloat16, but it returns float32
images and the distance compares float32 features, so the running minimum,
the argmin and the codes are float32 (a bfloat16 distance would tie samples
whose distances differ below its 8-bit mantissa).

Chunk size from the device (`auto_chunk_size`, for `imle.chunk_size='auto'`):
`largest_fitting_chunk` picks the largest divisor of m whose compiled
selection (`peak_bytes` of its `memory_analysis()`) fits
AUTO_CHUNK_MEMORY_SHARE of one device's memory; where the device reports no
memory size (CPU), CPU_CHUNK_SIZE capped at m.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

from flax import struct
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax.losses import perceptual

# (x [N, ...], z [N, *latent_shape]) -> samples [N, H, W, C] in [0, 1].
GenerateFn = Callable[[jax.Array, jax.Array], jax.Array]
# Lattice points are kept this far inside (0, 1), where the normal quantile is finite (|z| < 5.3).
_UNIFORM_EPS = 1e-7
# `auto_chunk_size`: the largest chunk whose compiled selection fits this share of one
# device's memory; the rest is left to the state, the update step's activations and the
# allocator's fragmentation.
AUTO_CHUNK_MEMORY_SHARE = 0.5
# Where the device does not say its memory size (CPU): the chunk tuned on a 2-core CPU
# (experiments/bench_imle.py: 2 inputs x 25 codes = 50 samples per generator call keep VGG-19
# near the matmul peak), capped at m.
CPU_CHUNK_SIZE = 25


@struct.dataclass
class Selection:
  """The result of `select_nearest_latents` for a batch of B inputs.

  Attributes:
    latents: [B, *latent_shape], z_{i, sigma(i)} (plus the perturbation, if any).
    distances: [B], L(T(x_i, z_{i, sigma(i)}), y_i) of the unperturbed code.
    indices: [B] int32, sigma(i) in [0, m).
    mean_distances: [B], the mean of L over all m samples (how much selecting
      the nearest gains over a random sample).
  """
  latents: jax.Array
  distances: jax.Array
  indices: jax.Array
  mean_distances: jax.Array


@functools.lru_cache(maxsize=None)
def code_lattice(num_samples: int, dim: int) -> np.ndarray:
  """A rank-1 lattice of m points in [0, 1)^dim: g_j = frac(j a / m), a = (1, h, h^2, ...) mod m.

  The Korobov generator h is the one (of those coprime with m) whose points lie
  farthest apart on the torus, so every region of probability >= ~1/m holds a
  point; with h coprime with m every coordinate takes each of the m values
  j / m once. `draw_latents` shifts it by a uniform random vector per example
  and maps it through the normal quantile: each code is still exactly N(0, I),
  but the m codes of one input spread evenly over the code space instead of
  clustering as independent draws do. Read-only (cached).
  """
  j_M = np.arange(num_samples)
  best, best_gap = None, -1.0
  for h in range(1, max(num_samples, 2)):
    if math.gcd(h, num_samples) != 1:
      continue
    a_D = np.array([pow(h, k, num_samples) for k in range(dim)])
    g_MxD = (j_M[:, None] * a_D) % num_samples / num_samples
    # A lattice is a group: its closest pair is as close as the point closest to g_0 = 0.
    wrapped = np.minimum(g_MxD[1:], 1.0 - g_MxD[1:])
    gap = float(np.sqrt(np.sum(wrapped**2, axis=-1)).min()) if num_samples > 1 else 0.0
    if gap > best_gap:
      best, best_gap = g_MxD, gap
  best.setflags(write=False)
  return best


def draw_latents(rng: jax.Array, example_ids_B: jax.Array, sample_ids_C: jax.Array,
                 latent_shape: tuple[int, ...], lattice_MxD: jax.Array | None = None) -> jax.Array:
  """Codes z_BxCx... keyed by (example, sample) index, so any chunking draws the same codes.

  Independent (lattice None): z[b, c] = normal(fold_in(fold_in(rng, example b), sample c)).
  Stratified (a `code_lattice` of m points): z[b, c] = Phi^-1(frac(u_b + g_c)), u_b ~
  U[0, 1)^D from fold_in(rng, example b): every code is N(0, I), the m codes of
  one input a randomly shifted lattice.
  """
  if lattice_MxD is None:
    def one(i, j):
      return jax.random.normal(jax.random.fold_in(jax.random.fold_in(rng, i), j), latent_shape)
    return jax.vmap(lambda i: jax.vmap(lambda j: one(i, j))(sample_ids_C))(example_ids_B)
  num_points, dim = lattice_MxD.shape
  g_CxD = lattice_MxD[sample_ids_C % num_points]  # an overhanging last chunk repeats points (masked later)

  def shifted(i):
    u_CxD = jnp.mod(jax.random.uniform(jax.random.fold_in(rng, i), (dim,)) + g_CxD, 1.0)
    u_CxD = jnp.clip(u_CxD, _UNIFORM_EPS, 1.0 - _UNIFORM_EPS)
    return jax.scipy.special.ndtri(u_CxD).reshape((g_CxD.shape[0],) + latent_shape)
  return jax.vmap(shifted)(example_ids_B)


def _select_block(generate: GenerateFn, distance: perceptual.Distance, x_BxX: jax.Array,
                  y_BxHxWxC: jax.Array, ids_B: jax.Array, mask_B: jax.Array | None, rng: jax.Array,
                  num_samples: int, chunk_size: int, latent_shape: tuple[int, ...], zero_codes: bool,
                  lattice_MxD: jax.Array | None):
  """Alg. 1 lines 5-7 for one block of B examples: (best z, best d, best j, mean d)."""
  b = x_BxX.shape[0]
  num_chunks = math.ceil(num_samples / chunk_size)
  # Targets' features once per input; [B, 1, ...] broadcasts against [B, chunk, ...].
  fy_Bx1 = jax.tree.map(lambda f: f[:, None], distance.features(y_BxHxWxC))
  mask_Bx1 = None if mask_B is None else mask_B[:, None]

  def scan_chunk(carry, chunk_index):
    best_d_B, best_j_B, best_z_B, sum_d_B = carry
    sample_ids_C = chunk_index * chunk_size + jnp.arange(chunk_size)
    if zero_codes:
      z_BxC = jnp.zeros((b, chunk_size) + latent_shape, jnp.float32)
    else:
      z_BxC = draw_latents(rng, ids_B, sample_ids_C, latent_shape, lattice_MxD)
    # Batch-major flattening keeps a batch-sharded x sharded (see module docstring).
    x_BC = jnp.broadcast_to(x_BxX[:, None], (b, chunk_size) + x_BxX.shape[1:]).reshape(
        (b * chunk_size,) + x_BxX.shape[1:])
    y_hat_BC = generate(x_BC, z_BxC.reshape((b * chunk_size,) + latent_shape))
    y_hat_BxC = y_hat_BC.reshape((b, chunk_size) + y_hat_BC.shape[1:])
    d_BxC = distance.from_features(fy_Bx1, distance.features(y_hat_BxC), mask_Bx1)
    valid_C = sample_ids_C < num_samples  # the last chunk may overhang m
    d_BxC = jnp.where(valid_C, d_BxC, jnp.inf)
    j_B = jnp.argmin(d_BxC, axis=1)
    d_B = jnp.take_along_axis(d_BxC, j_B[:, None], axis=1)[:, 0]
    z_B = jnp.take_along_axis(z_BxC, j_B.reshape((b, 1) + (1,) * len(latent_shape)), axis=1)[:, 0]
    better_B = d_B < best_d_B  # strict: ties keep the earlier chunk's (smaller) j
    expand = lambda m: m.reshape((b,) + (1,) * len(latent_shape))
    carry = (jnp.where(better_B, d_B, best_d_B),
             jnp.where(better_B, sample_ids_C[j_B], best_j_B),
             jnp.where(expand(better_B), z_B, best_z_B),
             sum_d_B + jnp.sum(jnp.where(valid_C, d_BxC, 0.0), axis=1))
    return carry, None

  init = (jnp.full((b,), jnp.inf, jnp.float32), jnp.zeros((b,), jnp.int32),
          jnp.zeros((b,) + latent_shape, jnp.float32), jnp.zeros((b,), jnp.float32))
  (best_d, best_j, best_z, sum_d), _ = jax.lax.scan(scan_chunk, init, jnp.arange(num_chunks))
  return best_z, best_d, best_j.astype(jnp.int32), sum_d / num_samples


def select_nearest_latents(generate: GenerateFn, distance: perceptual.Distance, x: jax.Array,
                           y_BxHxWxC: jax.Array, rng: jax.Array, *, num_samples: int,
                           latent_shape: tuple[int, ...], chunk_size: int | None = None,
                           perturbation: float = 0.0, example_blocks: int = 1, num_shards: int = 1,
                           mask: jax.Array | None = None, zero_codes: bool = False,
                           stratified: bool = False) -> Selection:
  """sigma(i) = argmin_j L(T(x_i, z_{i,j}), y_i) for every i of the batch (IJCV Alg. 1, l. 4-8).

  Call it inside jit (the IMLE select step); it closes over nothing large.

  Args:
    generate: (x [N, ...], z [N, *latent_shape]) -> samples [N, H, W, C]; the
      generator with its parameters bound.
    distance: the selection distance L (`perceptual.make_distance`).
    x: inputs [B, ...].
    y_BxHxWxC: targets in [0, 1].
    rng: the key the codes are drawn from.
    num_samples: m, codes per input.
    latent_shape: the shape of one code, e.g. (h, w, 5) for SRIM.
    chunk_size: samples per input generated at once (default: all m); peak
      memory grows with B * chunk_size. A divisor of m wastes no work.
    perturbation: std of the Gaussian noise added to the chosen code (0: none).
    example_blocks: walk each device's shard of the batch in this many
      sequential blocks (memory / example_blocks); B must be divisible by
      num_shards * example_blocks.
    num_shards: the number of devices the batch is sharded over (the block
      layout keeps every device busy; any value gives the same result).
    mask: optional per-pixel distance weights [B, H, W(, 1)].
    zero_codes: draw nothing, every code is z = 0 (SRIM's deterministic
      pretraining, §5.1.1: with num_samples=1 this evaluates L(T(x, 0), y)).
    stratified: draw each input's m codes as a randomly shifted `code_lattice`
      (`draw_latents`) instead of independently.

  Returns:
    A `Selection` (latents, distances, indices, mean_distances), one row per input.
  """
  batch = x.shape[0]
  chunk_size = min(chunk_size or num_samples, num_samples)
  if chunk_size <= 0 or num_samples <= 0:
    raise ValueError(f"num_samples ({num_samples}) and chunk_size ({chunk_size}) must be > 0.")
  latent_shape = tuple(latent_shape)
  rng_codes, rng_perturb = jax.random.split(rng)
  ids_B = jnp.arange(batch)
  lattice_MxD = (jnp.asarray(code_lattice(num_samples, math.prod(latent_shape)), jnp.float32)
                 if stratified and not zero_codes else None)
  select = lambda x_, y_, ids_, mask_: _select_block(generate, distance, x_, y_, ids_, mask_, rng_codes,
                                                     num_samples, chunk_size, latent_shape,
                                                     zero_codes, lattice_MxD)
  if example_blocks <= 1:
    z, d, j, mean_d = select(x, y_BxHxWxC, ids_B, mask)
  else:
    if batch % (num_shards * example_blocks):
      raise ValueError(f"The batch ({batch}) must be divisible by num_shards ({num_shards}) x "
                       f"example_blocks ({example_blocks}).")
    per = batch // (num_shards * example_blocks)

    # [B] -> [blocks, B / blocks] such that block k takes rows k*per..(k+1)*per-1
    # of *every* device's contiguous shard: each device works on every block.
    def to_blocks(a):
      a = a.reshape((num_shards, example_blocks, per) + a.shape[1:])
      return jnp.swapaxes(a, 0, 1).reshape((example_blocks, num_shards * per) + a.shape[3:])

    def from_blocks(a):
      a = a.reshape((example_blocks, num_shards, per) + a.shape[2:])
      return jnp.swapaxes(a, 0, 1).reshape((batch,) + a.shape[3:])

    blocks = (to_blocks(x), to_blocks(y_BxHxWxC), to_blocks(ids_B),
              None if mask is None else to_blocks(mask))
    outs = jax.lax.map(lambda args: select(*args), blocks)
    z, d, j, mean_d = jax.tree.map(from_blocks, outs)
  if perturbation and not zero_codes:
    noise = jax.vmap(lambda i: jax.random.normal(jax.random.fold_in(rng_perturb, i), latent_shape))(ids_B)
    z = z + perturbation * noise
  return Selection(latents=z, distances=d, indices=j, mean_distances=mean_d)


def chunk_candidates(num_samples: int) -> list[int]:
  """The divisors of m, ascending: chunk sizes that waste no work on an overhanging last chunk."""
  return [c for c in range(1, num_samples + 1) if num_samples % c == 0]


def peak_bytes(compiled: Any) -> int | None:
  """Peak device memory of a compiled executable: arguments + outputs + temporaries - aliased.

  None when the backend gives no (or a partial) `memory_analysis()`.
  """
  try:
    stats = compiled.memory_analysis()
  except (NotImplementedError, RuntimeError):  # backends without buffer assignment statistics
    return None
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes", "alias_size_in_bytes")
  if stats is None or any(getattr(stats, f, None) is None for f in fields):
    return None
  return int(stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
             - stats.alias_size_in_bytes)


def largest_fitting_chunk(memory_at: Callable[[int], int | None], num_samples: int,
                          budget_bytes: float) -> int | None:
  """The largest divisor c of m with memory_at(c) <= budget_bytes (1 if none fits).

  The selection's memory grows with the chunk (the [B, chunk] samples and
  their features dominate), so a binary search over the divisors compiles
  about log2(#divisors) selections: 3-4 for m = 100. None when `memory_at`
  returns None (no memory analysis on this backend).
  """
  candidates = chunk_candidates(num_samples)
  lo, hi, best = 0, len(candidates) - 1, 0
  while lo <= hi:
    mid = (lo + hi) // 2
    used = memory_at(candidates[mid])
    if used is None:
      return None
    if used <= budget_bytes:
      best, lo = mid, mid + 1
    else:
      hi = mid - 1
  return candidates[best]


def device_memory_bytes() -> int | None:
  """One local device's memory (`memory_stats()['bytes_limit']`); None where the backend does not say (CPU)."""
  return (jax.local_devices()[0].memory_stats() or {}).get("bytes_limit")


def auto_chunk_size(select: Callable[..., Any], arg_specs: Callable[[], Sequence[Any]], num_samples: int,
                    inputs_per_device: int) -> tuple[int, str]:
  """The chunk size for this device, and how it was chosen (`imle.chunk_size = 'auto'`).

  Compiles the selection of one device's share of the pool for candidate
  chunks and keeps the largest whose `memory_analysis()` peak fits
  AUTO_CHUNK_MEMORY_SHARE of the device's `bytes_limit`. Backends that report
  no memory size (CPU) or no memory analysis get CPU_CHUNK_SIZE (capped at
  m): deterministic on CPU, where nothing is compiled.

  Args:
    select: `select(*args, chunk_size)`, the selection (`select_nearest_latents`
      with its generator and distance) of `inputs_per_device` inputs, as the
      batch-sharded select step runs it on one device.
    arg_specs: returns `select`'s args, ShapeDtypeStructs or arrays (called only where
      the device reports its memory size).
    num_samples: m.
    inputs_per_device: the pool's examples per device (for the description).
  """
  fallback = min(CPU_CHUNK_SIZE, num_samples)
  device = jax.local_devices()[0]
  limit = device_memory_bytes()
  if not limit:
    return fallback, f"the CPU-tuned {CPU_CHUNK_SIZE} capped at m ({device.platform} reports no memory size)"
  args = tuple(arg_specs())
  jitted = jax.jit(select, static_argnums=len(args))
  memory_at = lambda chunk: peak_bytes(jitted.lower(*args, chunk).compile())
  budget = AUTO_CHUNK_MEMORY_SHARE * limit
  chunk = largest_fitting_chunk(memory_at, num_samples, budget)
  if chunk is None:
    return fallback, f"the CPU-tuned {CPU_CHUNK_SIZE} capped at m (no memory analysis on {device.platform})"
  return chunk, (f"the largest divisor of m whose selection of {inputs_per_device} inputs per device fits "
                 f"{AUTO_CHUNK_MEMORY_SHARE:.0%} of {limit / 2**30:.1f} GiB ({device.device_kind})")
