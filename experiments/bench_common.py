"""What the benchmarks share: exact FLOP counts, the measured peak, timing and one JSON record per run.

Run as `python experiments/bench_<name>.py`; this module sits beside them.

FLOPs. `count_flops(fn, *args)` walks the jaxpr of `fn` (`jax.make_jaxpr`)
and adds, for every `conv_general_dilated`, 2 x (output elements) x (kernel
taps per output: K_h K_w C_in / groups) and, for every `dot_general`,
2 x (output elements) x (contracted size), descending into jit, scan (times
its length), remat and custom-derivative calls. Padded positions count as
full multiply-adds (the usual analytic count: 2 H_out W_out K^2 C_in C_out
per convolution), so the number depends on the model's shapes only: the same
on CPU, GPU and TPU. XLA's cost analysis is not used: on GPU it does not count
convolutions at all (it reported 0.02 GFLOP for a 285 GFLOP sample), and on
CPU it skips the zero-padding taps. A `cond` counts its dearer branch unless
its predicate follows from values known at counting time:
`count_flops_given_first(step_fn, step, ...)(k)` counts a step function at
step number k on the branches that step takes (cGML's best-of-M start only on
the first of its l inner steps, IMLE's search only after the z = 0 phase).

Peak. `matmul_peak(dtype)` is the best FLOP/s of large square matmuls in the
benchmark's own dtype, on one device and on all devices at once (one matmul
each): 8192^3 on GPU/TPU (smaller ones do not fill an H100), 2048-4096^3 on
CPU. It is this machine's practical dense rate in that dtype; a ratio to it
above 1 means the count or the peak is wrong, so the benchmarks print both.

Set-up. `build_training(config, workdir)` builds a method, its compiled steps,
state and batches with the training loop's own functions (train.build_method,
train.CompiledSteps, sharding.make_mesh), so a benchmark times what the loop runs.

Records. `write_record` writes one JSON file per run to experiments/results/
(benchmark, machine, device kind and count, jax version, dtype, peak, the
numbers, UTC timestamp), so runs on different machines can be compared side
by side.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import math
import os
import platform
import re
import time
from typing import Any, Callable, Iterator, NamedTuple

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections
import numpy as np

from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax.data import pipeline
from multimodal_jax.methods import base as methods_base

import exp_util  # experiments/ is on the path of whatever imports this module

RESULTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
DTYPES = ("float32", "bfloat16")
ACCELERATOR_MATMUL_SIZES = (8192,)
CPU_MATMUL_SIZES = (2048, 3072, 4096)


# ---------------------------------------------------------------- FLOPs


def _sub_jaxprs(params: dict[str, Any]):
  """(jaxpr, its consts) for each jaxpr an equation calls (jit/scan/remat: params['jaxpr']; cond: 'branches')."""
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if isinstance(item, jax_core.ClosedJaxpr):
        yield item.jaxpr, item.consts
      elif isinstance(item, jax_core.Jaxpr):
        yield item, ()


def _conv_flops(eqn) -> float:
  out = eqn.outvars[0].aval
  rhs = eqn.invars[1].aval
  rhs_out_dim = eqn.params["dimension_numbers"].rhs_spec[0]
  # Each output element is a dot product over one output feature's kernel slice: K_h K_w C_in / groups.
  return 2.0 * math.prod(out.shape) * math.prod(rhs.shape) / rhs.shape[rhs_out_dim]


def _dot_flops(eqn) -> float:
  (lhs_contract, _), _ = eqn.params["dimension_numbers"]
  lhs = eqn.invars[0].aval
  return 2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs.shape[d] for d in lhs_contract)


def _fold_scalars(eqn, values: list[Any], known: dict[Any, Any]) -> None:
  """Records the outputs of `eqn` in `known` where they follow from known inputs (scalars only)."""
  if eqn.primitive.name == "optimization_barrier":  # the identity
    known.update({out: v for out, v in zip(eqn.outvars, values) if v is not None})
    return
  if eqn.effects or any(v is None for v in values) or any(
      getattr(out.aval, "shape", None) != () for out in eqn.outvars):
    return
  try:
    outs = eqn.primitive.bind(*values, **eqn.params)
  except Exception:  # pylint: disable=broad-except  # not evaluable eagerly: stays unknown (dearer branch)
    return
  known.update(zip(eqn.outvars, outs if eqn.primitive.multiple_results else [outs]))


def _sub_known(eqn, sub: jax_core.Jaxpr, consts, values: list[Any]) -> dict[Any, Any]:
  """The known values inside a sub-jaxpr: its consts, and operands passed one to one (not scan/while)."""
  inner = dict(zip(sub.constvars, consts))
  operands = values[1:] if eqn.primitive.name == "cond" else values
  if eqn.primitive.name not in ("scan", "while") and len(operands) == len(sub.invars):
    inner.update({var: v for var, v in zip(sub.invars, operands) if v is not None})
  return inner


def jaxpr_flops(jaxpr: jax_core.Jaxpr, known: dict[Any, Any] | None = None) -> dict[str, float]:
  """{'conv': FLOPs, 'dot': FLOPs} of one execution of `jaxpr` (see the module docstring).

  `known` maps some of its variables (constvars, invars) to concrete
  values; scalars computed from them are evaluated on the way, so a `cond`
  whose predicate follows from them (e.g. from a step number: a warm-up
  phase, the first of l inner iterations) counts the branch it takes. Any
  other `cond` counts its most expensive branch; a `while` loop's body is
  counted once (its trip count is not in the jaxpr), so benchmarks should
  not count code with while loops.
  """
  known = dict(known or {})
  total = {"conv": 0.0, "dot": 0.0}
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    values = [v.val if isinstance(v, jax_core.Literal) else known.get(v) for v in eqn.invars]
    _fold_scalars(eqn, values, known)
    if name == "conv_general_dilated":
      total["conv"] += _conv_flops(eqn)
    elif name == "dot_general":
      total["dot"] += _dot_flops(eqn)
    subs = [jaxpr_flops(sub, _sub_known(eqn, sub, consts, values)) for sub, consts in _sub_jaxprs(eqn.params)]
    if not subs:
      continue
    if name == "cond":
      taken = None if values[0] is None else int(np.clip(values[0], 0, len(subs) - 1))
      subs = [subs[taken] if taken is not None else max(subs, key=lambda s: s["conv"] + s["dot"])]
    times = eqn.params["length"] if name == "scan" else 1
    for sub in subs:
      for kind in total:
        total[kind] += times * sub[kind]
  return total


def count_flops(fn: Callable[..., Any], *args: Any) -> float:
  """FLOPs (convolutions + matrix products) of one call of `fn(*args)`; args may be ShapeDtypeStructs."""
  closed = jax.make_jaxpr(fn)(*args)
  counts = jaxpr_flops(closed.jaxpr, dict(zip(closed.jaxpr.constvars, closed.consts)))
  return counts["conv"] + counts["dot"]


def count_flops_given_first(fn: Callable[..., Any], first: Any, *rest: Any) -> Callable[[Any], float]:
  """`count(value)`: the FLOPs of fn(value, *rest), from one trace of fn with every argument abstract.

  For step functions whose work depends on the step number through a
  `cond` (jaxpr_flops): `count(step)` counts the branches that step takes.
  """
  closed = jax.make_jaxpr(fn)(first, *rest)
  consts = dict(zip(closed.jaxpr.constvars, closed.consts))
  first_vars = closed.jaxpr.invars[:len(jax.tree.leaves(first))]

  def count(value: Any) -> float:
    leaves = [np.asarray(v, var.aval.dtype) for var, v in zip(first_vars, jax.tree.leaves(value))]
    counts = jaxpr_flops(closed.jaxpr, consts | dict(zip(first_vars, leaves)))
    return counts["conv"] + counts["dot"]

  return count


# ---------------------------------------------------------------- timing and peak


def best_time(fn: Callable[[], Any], repeats: int, warmup: Callable[[], Any] | None = None) -> float:
  """The best wall time of `fn()` over `repeats` calls, after one warm-up (compilation) call."""
  jax.block_until_ready((warmup or fn)())
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return min(times)


def matmul_sizes() -> tuple[int, ...]:
  """8192 on GPU/TPU, 2048-4096 on CPU (module docstring)."""
  return CPU_MATMUL_SIZES if jax.default_backend() == "cpu" else ACCELERATOR_MATMUL_SIZES


def matmul_peak(dtype: str = "float32", sizes: tuple[int, ...] | None = None, repeats: int = 3) -> float:
  """FLOP/s of the best of large square matmuls in `dtype`, per the whole machine.

  Each size is timed on one device and, with several devices, as one matmul
  per device at once (sharded along a leading axis); the best counts. The
  output has the input's dtype (bfloat16 products accumulate in float32 on
  the matrix units either way).
  """
  best = 0.0
  devices = jax.devices()
  mesh = jax.make_mesh((len(devices),), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  for n in sizes or matmul_sizes():
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), dtype)
    f = jax.jit(lambda a: a @ a)
    best = max(best, 2 * n**3 / best_time(lambda: f(a), repeats))
    if len(devices) > 1:
      stacked = jax.device_put(jnp.broadcast_to(a, (len(devices), n, n)),
                               jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data")))
      g = jax.jit(lambda b: b @ b)
      best = max(best, len(devices) * 2 * n**3 / best_time(lambda: g(stacked), repeats))
  return best


# ---------------------------------------------------------------- the loop's set-up


class Training(NamedTuple):
  """A method set up as the training loop sets it up (train.py `_train`), for benchmarks to drive."""
  method: methods_base.Method
  compiled: train.CompiledSteps
  state: Any
  batches: Iterator[dict[str, jax.Array]]
  replicated: jax.sharding.NamedSharding
  sharded: jax.sharding.NamedSharding


def build_training(config: ml_collections.ConfigDict, workdir: str,
                   compiled_steps: type[train.CompiledSteps] = train.CompiledSteps) -> Training:
  """The loop's mesh, method (with its prepared state, kept in `workdir`), compiled steps, initial state and
  global batches; `compiled_steps` may be a subclass of train.CompiledSteps that also measures."""
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  method, _, data_iter = train.build_method(config, workdir)
  state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(config.seed))
  return Training(method, compiled_steps(method.steps, replicated, sharded, method.timed_steps), state,
                  pipeline.iterate_global(data_iter, sharded), replicated, sharded)


# ---------------------------------------------------------------- records


def _cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      match = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.MULTILINE)
    return match.group(1).strip() if match else platform.processor()
  except OSError:
    return platform.processor()


def machine() -> dict[str, Any]:
  """Where the numbers come from: host, CPU, backend, device kind and count, library versions."""
  device = jax.devices()[0]
  return {"host": platform.node(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
          "backend": jax.default_backend(), "device_kind": device.device_kind,
          "device_count": jax.device_count(), "jax": jax.__version__,
          "jaxlib": importlib.metadata.version("jaxlib"), "python": platform.python_version(),
          "commit": exp_util.git_commit()}


def write_record(benchmark: str, dtype: str, peak_flops: float, numbers: dict[str, Any],
                 settings: dict[str, Any] | None = None, directory: str = RESULTS_DIR) -> str:
  """Writes one run's record as JSON to `directory`; returns the path."""
  now = datetime.datetime.now(datetime.timezone.utc)
  info = machine()
  record = {"benchmark": benchmark, "timestamp": now.isoformat(timespec="seconds"), "machine": info,
            "dtype": dtype, "peak_flops_per_s": peak_flops, "settings": settings or {}, "numbers": numbers}
  slug = re.sub(r"[^a-z0-9]+", "-", info["device_kind"].lower()).strip("-")
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, f"{benchmark}_{slug}_{dtype}_{now.strftime('%Y%m%dT%H%M%SZ')}.json")
  with open(path, "w") as f:
    json.dump(record, f, indent=1, default=float)
  return path
