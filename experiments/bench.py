r"""Every method's training and sampling speed, memory and FLOP/s in one run (issue #15, item 3).

  python experiments/bench.py [--methods=regression,srim] [--rounds=3] [--min_seconds=10] [--record]
  python experiments/bench.py --quick     # 5 of the 10 rows, m = 4, 16, 64
  python experiments/bench.py --methods= --selection_m= --flow_workdir=/tmp/flow_matching \
      --output=experiments/results/bench_flow_matching.md \
      --imle_workdir=/tmp/layout_imle    # flow matching's recall and speed at N = 1 ... 64 vs IMLE

--quick with its 5 rows took 13 min on the 2-core CPU beside three training
jobs (5.6 min of CPU time, most of it compilation); with 7 rows
(`--methods=regression,conditional_imle,cgml,latent_codes,latent_codes_separate,
pix2pix_diversity,srim`) 8.3 min beside one. The full run has not been timed.

For each method (its config file's default: the offline datasets toy_scenes
and local_photos_sr, found through $MULTIMODAL_JAX_DATA_DIR or --data_dir),
built with the training loop's own functions (bench_common.build_training:
train.build_method with its prepared state, sharding.make_mesh,
train.CompiledSteps), one run prints and writes to experiments/results/bench.md:
  * training: after one warm-up round (compilation), at least `--rounds`
    rounds and `--min_seconds` timed as the loop runs them (next batch,
    `method.run_round`), each waited for at its end; their mean gives updates
    (state.step increments) per second and examples per second (one global
    batch per round). IMLE configs start at the end of their z = 0 and
    nearest-upsampling phases (`imle.zero_code_steps`, `bilinear_from_step`),
    where training spends its time;
  * sampling: `jax.jit(method.sample, static_argnums=3)` on 8 eval inputs x
    16 samples, best of `--repeats` after compilation, in images per second;
  * peak memory: the largest over the method's compiled train steps (the
    loop's own executables) of XLA's buffer assignment (`memory_analysis()`:
    arguments + outputs + temporaries - donated aliases, per device;
    imle_selection.peak_bytes), "n/a" where the backend gives none;
  * FLOP/s: the FLOPs of one round counted from the jaxprs of the steps it
    calls (bench_common: convolutions and matrix products; a `cond` on the
    step number, e.g. cGML's best-of-M start on the first of l inner steps,
    counted on the branch that call takes), over the mean round time, divided
    by the matmul peak measured once in this run in the method's compute
    dtype (bench_common.matmul_peak).
Then the selection kernel's scaling with m: the compiled IMLE select step of
configs/layout_imle.py's default (select_nearest_latents with its CRN
generator, pixel l1 and rarity mask, |S| = 32, chunks of min(m, 16)) for
m = 4 ... 64: seconds per selection of the pool and samples per second.
`--record` also writes the numbers as JSON (bench_common.write_record).
With `--flow_workdir` (a trained configs/flow_matching.py run) and
`--imle_workdir` (e.g. configs/layout_imle.py's default on the same data):
flow matching's mode recall, precision and sampling images/s at each sampler
step count N (`evaluate --override=flow_matching.sample_steps=N`), the IMLE
run's, and the ratio of IMLE's images/s to flow matching's at the first N
whose recall reaches IMLE's (issue 42).

The CPU this was written on is shared with other jobs and noisy: only ratios
measured in one run (one method against another, against the matmul peak
measured beside it) mean anything; absolute rates move by 2x between runs.
"""

import os
import sys
import tempfile
import time
from typing import Callable

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

import bench_common
import exp_util
from multimodal_jax import cli
from multimodal_jax import config_lib
from multimodal_jax import evaluate
from multimodal_jax import inference
from multimodal_jax import prepared as prepared_lib
from multimodal_jax import sharding
from multimodal_jax import train
from multimodal_jax import validation
from multimodal_jax.data import pipeline
from multimodal_jax.losses import imle_selection
from multimodal_jax.methods import base as methods_base

# Row name: (config file, argument).
METHODS = {
    "regression": ("regression.py", None),
    "crn_best_of_k": ("layout_imle.py", "crn_best_of_k"),
    "crn_noise_regression": ("layout_imle.py", "crn_noise_regression"),
    "conditional_imle": ("layout_imle.py", None),
    "cgml": ("cgml.py", "toy_scenes"),
    "latent_codes": ("latent_codes.py", None),
    "latent_codes_separate": ("latent_codes.py", "separate"),
    "pix2pix_diversity": ("diversity.py", None),
    "crn_diversity": ("diversity.py", "crn"),
    "srim": ("srim.py", None),
    "flow_matching": ("flow_matching.py", None),
}
# --quick: one config per kind of round (one step; IMLE's select + L updates with a CRN and with an RRDB;
# cGML's z, Z, G steps; a GAN's D and G steps); the other rows differ from these in their configs only.
QUICK_METHODS = ("regression", "conditional_imle", "cgml", "pix2pix_diversity", "srim")
SELECTION_CONFIG = ("layout_imle.py", None)
SELECTION_M = (4, 8, 16, 32, 64)
QUICK_SELECTION_M = (4, 16, 64)
RESULTS_MD = os.path.join(bench_common.RESULTS_DIR, "bench.md")

_METHODS = flags.DEFINE_list("methods", list(METHODS), f"Rows to run, of {list(METHODS)} "
                             f"(--quick: {list(QUICK_METHODS)}).")
_QUICK = flags.DEFINE_bool("quick", False, "A smoke run of a few minutes on CPU: the --quick methods, one "
                           f"timed round (>= 2 s), one repeat, m in {QUICK_SELECTION_M}, one matmul size for "
                           "the peak. Flags given explicitly still count.")
_ROUNDS = flags.DEFINE_integer("rounds", 3, "Timed training rounds per method, at least.")
_MIN_SECONDS = flags.DEFINE_float("min_seconds", 10.0, "More rounds until this much time is timed.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed repeats of sampling and selection (the best counts).")
_SAMPLE_INPUTS = flags.DEFINE_integer("sample_inputs", 8, "Eval inputs per sampling call.")
_SAMPLES_PER_INPUT = flags.DEFINE_integer("samples_per_input", 16, "Samples per input per sampling call.")
_SELECTION_M = flags.DEFINE_list("selection_m", [str(m) for m in SELECTION_M],
                                 "m values of the selection scaling (empty: skip it).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Datasets' dir ('': $MULTIMODAL_JAX_DATA_DIR).")
_OUTPUT = flags.DEFINE_string("output", RESULTS_MD, "Where the Markdown table goes.")
_RECORD = flags.DEFINE_bool("record", False, "Also write the JSON record to experiments/results/.")
_FLOW_WORKDIR = flags.DEFINE_string("flow_workdir", None, "A trained configs/flow_matching.py run: its mode recall "
                                    "and sampling speed at each of --flow_steps, against --imle_workdir's.")
_IMLE_WORKDIR = flags.DEFINE_string("imle_workdir", None, "The trained run flow matching is compared with "
                                    "(e.g. configs/layout_imle.py's default, on the same data).")
_FLOW_STEPS = flags.DEFINE_list("flow_steps", ["1", "2", "4", "8", "16", "32", "64"],
                                "Sampler steps N of the flow comparison.")
_FLOW_INPUTS = flags.DEFINE_integer("flow_inputs", 16, "Eval inputs of the flow comparison's mode recall "
                                    "(64 samples each, as evaluate's default).")


class MeasuredSteps(train.CompiledSteps):
  """The loop's compiled steps; while `recording`, each call's (step name, state.step) is listed."""

  def __init__(self, *args):
    super().__init__(*args)
    self.recording = False
    self.calls: list[tuple[str, int]] = []

  def __call__(self, name, state, batch):
    if self.recording:
      self.calls.append((name, int(state.step)))  # a host sync: only in the untimed warm-up round
    return super().__call__(name, state, batch)

  def peak_bytes(self, name: str, state, batch) -> int | None:
    """XLA's peak memory of the compiled step `name` (the loop's own executable: lowering hits its cache)."""
    return imle_selection.peak_bytes(self.jitted(name).lower(state, batch, self._acc[name]).compile())


def main_phase_step(config, steps_per_round: int) -> int:
  """The first round boundary past IMLE's z = 0 and nearest-upsampling phases (0 for other methods)."""
  if config.method != "imle":
    return 0
  start = max(config.imle.zero_code_steps, config.imle.bilinear_from_step, 0)
  return -(-start // steps_per_round) * steps_per_round


def time_rounds(training: bench_common.Training, state, rounds: int, min_seconds: float = 0.0):
  """(state, round seconds, last batch): rounds as the loop runs them, each waited for at its end.

  At least `rounds` rounds, and more until `min_seconds` have passed.
  """
  method, compiled = training.method, training.compiled
  seconds = []
  while len(seconds) < rounds or sum(seconds) < min_seconds:
    t0 = time.perf_counter()
    batch = next(training.batches)
    state = jax.block_until_ready(method.run_round(compiled, state, batch))
    seconds.append(time.perf_counter() - t0)
  return state, seconds, batch


def round_flops(method: methods_base.Method, calls: list[tuple[str, int]], state, batch) -> float:
  """FLOPs of a round making `calls` (step name, state.step), each counted on the branches its step takes."""
  counters = {name: bench_common.count_flops_given_first(
      lambda step, s, b, fn=method.steps[name]: fn(s.replace(step=step), b), state.step, state, batch)
              for name in dict(calls)}
  return sum(counters[name](step) for name, step in calls)


def sampling_rate(config, method: methods_base.Method, state, replicated, inputs: int, samples: int,
                  repeats: int) -> float:
  """Images per second of the jitted `method.sample` on `inputs` eval inputs x `samples` samples."""
  x = jax.device_put(pipeline.load_eval_examples(config, inputs, allow_fewer=True)["x"], replicated)
  sample = jax.jit(method.sample, static_argnums=3)
  rng = jax.random.PRNGKey(config.seed + 1)
  return x.shape[0] * samples / bench_common.best_time(lambda: sample(state, x, rng, samples), repeats)


def bench_method(name: str, config, peak_flops: float, *, config_name: str = "", rounds: int = 3,
                 min_seconds: float = 0.0, repeats: int = 3, sample_inputs: int = 8, samples_per_input: int = 16,
                 workdir: str | None = None) -> dict:
  """One row of the table: training, sampling, memory and FLOP/s of the method `config` trains.

  `config_name` (e.g. 'srim.py') is shown in the table; `workdir` keeps the
  method's prepared state (a temporary dir if None).
  """
  validation.validate(config)
  with tempfile.TemporaryDirectory(prefix="bench_") as scratch:
    training = bench_common.build_training(config, workdir or scratch, MeasuredSteps)
  method, compiled = training.method, training.compiled
  state = training.state
  start = main_phase_step(config, method.steps_per_round)
  state = jax.device_put(state.replace(step=jnp.full_like(state.step, start)), training.replicated)
  compiled.recording = True  # the warm-up round compiles every step and lists the calls
  state, _, _ = time_rounds(training, state, 1)
  compiled.recording = False
  first_step = int(state.step)
  state, seconds, batch = time_rounds(training, state, rounds, min_seconds)
  updates_per_round = (int(state.step) - first_step) / len(seconds)
  round_seconds = sum(seconds) / len(seconds)
  flops = round_flops(method, compiled.calls, state, batch)
  memory = [compiled.peak_bytes(step_name, state, batch) for step_name in dict(compiled.calls)]
  images_per_s = sampling_rate(config, method, state, training.replicated, sample_inputs, samples_per_input,
                               repeats)
  return {"method": name, "config": config_name, "trains": f"{config.method} on {config.data.name}",
          "description": method.description, "compute_dtype": config_lib.resolve_compute_dtype(config).name,
          "batch_size": config.data.batch_size, "start_step": start, "updates_per_round": updates_per_round,
          "round_seconds": seconds, "updates_per_s": updates_per_round / round_seconds,
          "examples_per_s": config.data.batch_size / round_seconds, "images_per_s": images_per_s,
          "sample_shape": [sample_inputs, samples_per_input], "peak_bytes": None if None in memory else max(memory),
          "gflop_per_round": flops / 1e9, "achieved_gflop_per_s": flops / round_seconds / 1e9,
          "peak_gflop_per_s": peak_flops / 1e9, "flops_over_peak": flops / round_seconds / peak_flops}


def recall_and_speed(workdir: str, overrides: list[str], inputs: int, repeats: int) -> dict:
  """Mode recall / precision (`evaluate`, 64 samples per input) and sampling images/s of a trained run."""
  with tempfile.TemporaryDirectory(prefix="bench_eval_") as scratch:
    metrics = evaluate.evaluate(workdir, num_inputs=inputs, num_samples=2, mode_samples=64, evals="modes",
                                out=os.path.join(scratch, "eval.json"), overrides=overrides)["metrics"]
  config, method, state, _ = inference.load_trained(workdir, overrides=overrides)
  replicated = sharding.replicated(sharding.make_mesh())
  rate = sampling_rate(config, method, state, replicated, _SAMPLE_INPUTS.value, _SAMPLES_PER_INPUT.value, repeats)
  return {"recall": metrics.get("mode_recall"), "precision": metrics.get("mode_precision"),
          "recall_nearest": metrics.get("mode_recall_nearest"), "images_per_s": rate,
          "description": method.description}


def flow_comparison(flow_workdir: str, imle_workdir: str | None, steps: list[int], inputs: int,
                    repeats: int) -> dict:
  """Issue 42: flow matching's recall and speed per N, and the speed ratio at the N matching IMLE's recall.

  The ratio is IMLE's images/s over flow matching's at the smallest N whose
  mode recall reaches the IMLE run's (None when no N does), all in this run.
  """
  flow = []
  for n in steps:
    print(f"== flow matching, N = {n}", flush=True)
    flow.append({"steps": n, **recall_and_speed(flow_workdir, [f"flow_matching.sample_steps={n}"], inputs, repeats)})
    print(f"   recall {flow[-1]['recall']:.3f} precision {flow[-1]['precision']:.3f}, "
          f"{flow[-1]['images_per_s']:.1f} images/s", flush=True)
  out = {"flow": flow, "imle": None, "matching_steps": None, "speed_ratio": None}
  if imle_workdir:
    print("== the IMLE run", flush=True)
    out["imle"] = recall_and_speed(imle_workdir, [], inputs, repeats)
    out["matching_steps"], out["speed_ratio"] = speed_ratio(flow, out["imle"])
  return out


def speed_ratio(flow: list[dict], imle: dict) -> tuple[int | None, float | None]:
  """(N, IMLE images/s ÷ flow images/s at N) for the smallest N whose recall reaches IMLE's; (None, None) if none."""
  reached = sorted((row for row in flow if row["recall"] is not None and row["recall"] >= imle["recall"]),
                   key=lambda row: row["steps"])
  if not reached:
    return None, None
  return reached[0]["steps"], imle["images_per_s"] / reached[0]["images_per_s"]


def flow_markdown(result: dict, inputs: int = 16) -> list[str]:
  lines = ["", "Flow matching against the sampler's steps N (`--flow_workdir`; mode recall and precision from "
           f"`evaluate`, {inputs} inputs x 64 samples; images/s: jit(method.sample), the best repeat):", "",
           "| sampler | mode recall | precision | recall (nearest, no tolerance) | images/s | IMLE images/s ÷ this |",
           "|---|--:|--:|--:|--:|--:|"]
  imle = result["imle"]
  ratio = lambda row: f"{imle['images_per_s'] / row['images_per_s']:.1f}" if imle else "—"
  for row in result["flow"]:
    lines.append(f"| flow matching, x {row['steps']} steps | {row['recall']:.3f} | {row['precision']:.3f} "
                 f"| {row['recall_nearest']:.3f} | {row['images_per_s']:.1f} | {ratio(row)} |")
  if imle:
    lines.append(f"| IMLE run (one forward pass) | {imle['recall']:.3f} | {imle['precision']:.3f} "
                 f"| {imle['recall_nearest']:.3f} | {imle['images_per_s']:.1f} | 1 |")
    if result["speed_ratio"] is None:
      lines += ["", f"No N reached the IMLE run's mode recall {imle['recall']:.3f}."]
    else:
      lines += ["", f"IMLE images/s ÷ flow matching images/s at N = {result['matching_steps']} (the first N whose "
                f"recall reaches IMLE's {imle['recall']:.3f}): **{result['speed_ratio']:.1f}x**."]
  return lines


def selection_scaling(m_values: list[int], repeats: int, peak_of: Callable[[str], float], data_dir: str,
                      workdir: str) -> list[dict]:
  """Seconds per selection of the pool and samples/s of layout_imle's compiled select step, per m."""
  config = exp_util.load_config(*SELECTION_CONFIG, 0, data_dir)
  peak_flops = peak_of(config_lib.resolve_compute_dtype(config).name)
  prepared = prepared_lib.prepare_or_restore(config, workdir)  # as train.build_method
  pool = next(pipeline.create_train_iterator(config, prepared.get(prepared_lib.SAMPLING_WEIGHTS)))
  batch_spec = pipeline.global_batch_spec(config, pool)
  mesh = sharding.make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  sharded = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = pipeline.to_global_array(pool, sharded)
  rows = []
  for m in m_values:
    config.imle.num_samples, config.imle.chunk_size = m, min(m, 16)
    method = methods_base.make_method(config, batch_spec, prepared)
    state = jax.jit(method.init, out_shardings=replicated)(jax.random.PRNGKey(0))
    select = jax.jit(method.steps["select"], in_shardings=(replicated, sharded))
    seconds = bench_common.best_time(lambda: select(state, batch), repeats)
    flops = bench_common.count_flops_given_first(
        lambda step, s, b: method.steps["select"](s.replace(step=step), b), state.step, state, batch)(0)
    pool_size = config.data.batch_size
    rows.append({"m": m, "chunk_size": config.imle.chunk_size, "pool_size": pool_size,
                 "seconds_per_selection": seconds, "samples_per_s": pool_size * m / seconds,
                 "flops_over_peak": flops / seconds / peak_flops})
  return rows


def _mib(num_bytes: int | None) -> str:
  return "n/a" if num_bytes is None else f"{num_bytes / 2**20:.0f}"


def markdown(rows: list[dict], selection: list[dict], peaks: dict[str, float], command: str) -> str:
  """The results as Markdown: where and how they were measured, the methods' table, the selection's."""
  info = bench_common.machine()
  lines = [
      "# experiments/bench.py: every method, one run", "",
      f"{time.strftime('%Y-%m-%d %H:%M %Z')}, `{command}`", "",
      f"Machine: {info['host']}, {info['cpu']} ({info['cpu_count']} cores), {info['device_count']} "
      f"{info['backend']} device(s) ({info['device_kind']}), jax {info['jax']}, commit {info['commit']}.",
      "Matmul peak measured in this run: " + ", ".join(f"{d} {p / 1e9:.1f} GFLOP/s" for d, p in peaks.items())
      + ".", "",
  ]
  if rows:
    lines += [
        "| method | config | trains | batch | updates/round | updates/s | examples/s | images/s (sampling) "
        "| peak memory (MiB) | GFLOP/round | GFLOP/s | ÷ matmul peak |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
  for r in rows:
    lines.append(f"| {r['method']} | {r['config']} | {r['trains']} | {r['batch_size']} "
                 f"| {r['updates_per_round']:g} | {r['updates_per_s']:.2f} | {r['examples_per_s']:.1f} "
                 f"| {r['images_per_s']:.1f} | {_mib(r['peak_bytes'])} | {r['gflop_per_round']:.2f} "
                 f"| {r['achieved_gflop_per_s']:.1f} | {r['flops_over_peak']:.3f} |")
  if rows:
    inputs, samples = rows[0]["sample_shape"]
    lines += ["", "Training: the mean over the timed rounds, after a warm-up round (IMLE from the end of its "
              "z = 0 phase); updates = state.step increments, examples = one global batch per round. "
              f"Sampling: jit(method.sample) on {inputs} eval inputs x {samples} samples, the best repeat. "
              "Peak memory: the largest over the method's compiled train steps of XLA's buffer assignment "
              "(arguments + outputs + temporaries - donated aliases, per device). FLOPs: convolutions and "
              "matrix products counted from the jaxprs of the steps a round calls; GFLOP/s over the mean round."]
  if selection:
    lines += ["", f"Selection kernel (layout_imle's compiled select step, |S| = {selection[0]['pool_size']}, "
              "the best repeat):", "",
              "| m | chunk | seconds per selection | samples/s | ÷ matmul peak |", "|--:|--:|--:|--:|--:|"]
    lines += [f"| {s['m']} | {s['chunk_size']} | {s['seconds_per_selection']:.3f} | {s['samples_per_s']:.0f} "
              f"| {s['flops_over_peak']:.3f} |" for s in selection]
  lines += ["", "Only ratios within one run mean anything: the CPU is shared with other jobs and noisy."]
  return "\n".join(lines) + "\n"


def config_name(file_arg: tuple[str, str | None]) -> str:
  """'layout_imle.py:crn_best_of_k', or 'srim.py' without an argument."""
  return ":".join(filter(None, file_arg))


def settings() -> dict:
  """The flags' values, --quick's defaults for those not given explicitly."""
  quick = {"methods": list(QUICK_METHODS), "rounds": 1, "min_seconds": 2.0, "repeats": 1,
           "selection_m": [str(m) for m in QUICK_SELECTION_M]}
  out = {name: quick[name] if _QUICK.value and not flags.FLAGS[name].present else flags.FLAGS[name].value
         for name in quick}
  unknown = sorted(set(out["methods"]) - set(METHODS))
  if unknown:
    raise app.UsageError(f"Unknown --methods {unknown}; valid: {list(METHODS)}")
  out["selection_m"] = [int(m) for m in out["selection_m"]]
  return out


def main(argv):
  del argv
  run = settings()
  peaks = {}

  def peak(dtype: str) -> float:
    if dtype not in peaks:
      peaks[dtype] = bench_common.matmul_peak(dtype, bench_common.matmul_sizes()[:1] if _QUICK.value else None)
      print(f"{dtype} matmul peak: {peaks[dtype] / 1e9:.1f} GFLOP/s", flush=True)
    return peaks[dtype]

  rows, selection, flow = [], [], None
  if _FLOW_WORKDIR.value:
    flow = flow_comparison(_FLOW_WORKDIR.value, _IMLE_WORKDIR.value, [int(n) for n in _FLOW_STEPS.value],
                           _FLOW_INPUTS.value, run["repeats"])
  with tempfile.TemporaryDirectory(prefix="bench_") as root:
    workdir = lambda file_arg: os.path.join(root, config_name(file_arg))  # prepared states, shared
    for name in run["methods"]:
      config = exp_util.load_config(*METHODS[name], 0, _DATA_DIR.value)
      print(f"== {name} ({config_name(METHODS[name])})", flush=True)
      t0 = time.perf_counter()
      rows.append(bench_method(
          name, config, peak(config_lib.resolve_compute_dtype(config).name),
          config_name=config_name(METHODS[name]), rounds=run["rounds"],
          min_seconds=run["min_seconds"], repeats=run["repeats"], sample_inputs=_SAMPLE_INPUTS.value,
          samples_per_input=_SAMPLES_PER_INPUT.value, workdir=workdir(METHODS[name])))
      print(f"   {rows[-1]['updates_per_s']:.2f} updates/s, {rows[-1]['images_per_s']:.1f} images/s, "
            f"{rows[-1]['flops_over_peak']:.3f} of the peak ({time.perf_counter() - t0:.0f} s with compilation)",
            flush=True)
    if run["selection_m"]:
      print(f"== selection kernel, m = {run['selection_m']}", flush=True)
      selection = selection_scaling(run["selection_m"], run["repeats"], peak, _DATA_DIR.value,
                                    workdir(SELECTION_CONFIG))
  text = markdown(rows, selection, peaks, " ".join(["python experiments/bench.py"] + sys.argv[1:]))
  if flow:
    text += "\n".join(flow_markdown(flow, _FLOW_INPUTS.value)) + "\n"
  print("\n" + text)
  os.makedirs(os.path.dirname(os.path.abspath(_OUTPUT.value)), exist_ok=True)
  with open(_OUTPUT.value, "w") as f:
    f.write(text)
  print(f"table: {_OUTPUT.value}")
  if _RECORD.value:
    path = bench_common.write_record("bench", "/".join(peaks) or "none", max(peaks.values(), default=0.0),
                                     {"methods": rows, "selection": selection, "flow_matching": flow},
                                     dict(run, quick=_QUICK.value))
    print(f"record: {path}")


if __name__ == "__main__":
  cli.run(main)  # The JAX workarounds (faster CPU compiles, identical values); user errors in one line.
