r"""One table for all methods: every method, same data, same metrics, at its defaults (issues #15, #43).

  python experiments/compare.py --full --workdir=/tmp/compare                 # what has no current record
  python experiments/compare.py --full --workdir=/tmp/compare --only=srim --seeds=1   # rerun chosen rows
  python experiments/compare.py --assemble --update_readme                   # tables from the records: instant
  python experiments/compare.py --quick --workdir=/tmp/compare_quick         # smoke test, ~15 min

`--full` trains each row of `RUNS` at its config's own default budget, for each of --seeds
(0, 1, 2), in `<workdir>/seed<k>/<run>`, evaluates it with `multimodal_jax.evaluate.evaluate`
(the function behind `python -m multimodal_jax.evaluate`: the first 32 test inputs, 16 samples,
64 per input for the mode metrics) and writes one record per run and seed to
experiments/results/runs/<table>/<run>/seed<k>.json (compare_records.py: the metrics, train
wall time and steps, parameters, commit, machine, jax version, the command). It skips every run
and seed whose record is current (its fingerprint: the config and the source of the method's,
models' and dataset's modules), so the whole set (about 40 rows x 3 seeds, roughly a day of a
2-core CPU) is produced in sittings of a few hours, each resuming where the last stopped; a run
stopped half-way resumes from its checkpoint. `--only` reruns the named rows even where current.
Records are small and committed; checkpoints are not.

`--assemble` (also run at the end of `--full`) reads the records alone and writes, to
--results_dir (default experiments/results/):

  compare.md, compare.csv      five tables, every number the mean ± standard deviation over the
                               seeds recorded: toy_scenes layouts -> images (mode recall and
                               precision against the 12 exactly known modes, LPIPS and pixel
                               diversity), rare modes on toy_scenes:skewed_mild, input-dependent
                               modes on toy_scenes_conditional (recall, precision, spurious
                               variation), super-resolution x8 with the NTIRE 2021 protocol
                               (LPIPS, diversity score, LR-PSNR, PSNR/SSIM RGB and Y; a bicubic
                               row), digit completion; train time, parameters, steps, seeds
  compare_quality_diversity.png  quality against diversity per table
  compare_recall.png           mode recall against the number of samples drawn (toy_scenes)
  compare_sr.png               the SR diversity score against LR-PSNR, one point per record
  compare_sheet.png            one layout, 8 samples per toy_scenes method

and with --update_readme the README's Results section (between its `<!-- compare.py:begin -->` /
`<!-- compare.py:end -->` markers): the same records give the same bytes on any machine.
A row whose records predate a change of its code is marked stale; a row without records says so.

`--quick` is a smoke test (each run's `quick_steps`, 3-15% of its budget, one seed, 8 inputs:
compare_quick.{md,csv} and plots, never the README): almost no sample is yet within a mode's
tolerance at that budget, so it ranks nothing. The L1 regression baseline's mode recall is 0
(its samples are identical and blurred: nearest-mode recall exactly 1/K); a multimodal method is
above it when its samples cover several modes.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
import time
import traceback
from typing import Any

from absl import flags
from absl import logging
import jax
import numpy as np

import bench_common
import compare_records as records
import exp_util
from multimodal_jax import cli
from multimodal_jax import evaluate
from multimodal_jax.data import toy_scenes
from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base as evaluator_base

TOY, SKEWED, CONDITIONAL, SR, DIGITS = ("toy_scenes", "toy_scenes_skewed_mild", "toy_scenes_conditional",
                                         "super_resolution", "digit_completion")
TABLES = (TOY, SKEWED, CONDITIONAL, SR, DIGITS)
TABLE_TITLES = {TOY: "Layouts -> images on toy_scenes (K = 12 exactly known modes per layout)",
                SKEWED: "Rare modes: toy_scenes:skewed_mild (p(mode k) ~ 0.85^k; mode 11 is 2.9% of the images)",
                CONDITIONAL: "Input-dependent modes: toy_scenes_conditional (each layout its own 1-16 modes)",
                SR: "Super-resolution x8 on local_photos_sr (8x8 -> 64x64), the NTIRE 2021 protocol",
                DIGITS: "Digit completion on digits_completion (masked top -> whole digit)"}
README_BEGIN, README_END = "<!-- compare.py:begin -->", "<!-- compare.py:end -->"
SHEET_SAMPLES = 8
SEEDS = (0, 1, 2)
_SKEWED_MILD = (("data.builder_config", "skewed_mild"),)


@dataclasses.dataclass(frozen=True)
class Run:
  """One row: a config (file, argument and overrides, as on the command line) and its quick budget."""
  slug: str
  name: str
  table: str
  config: str  # configs/<file>, or "imle_digits" (see `imle_digits_config`)
  arg: str = ""
  quick_steps: int = 0  # train.num_steps under --quick (a whole number of the method's rounds)
  overrides: tuple[tuple[str, Any], ...] = ()  # (dotted config key, value): --config.KEY=VALUE

  @property
  def spec(self) -> str:
    return f"{self.config}:{self.arg}" + "".join(f" --config.{k}={v}" for k, v in self.overrides)


_FM = "flow matching (iterative reference: 16 Euler steps, x-prediction)"
RUNS = (
    Run("regression", "L1 regression (baseline)", TOY, "regression.py", "", 150),
    Run("crn_best_of_9", "CRN, 9 outputs, best-of-k", TOY, "layout_imle.py", "crn_best_of_k", 150),
    Run("crn_noise_regression", "CRN + noise, regression", TOY, "layout_imle.py", "crn_noise_regression", 150),
    Run("cimle", "cIMLE (noise encoder, rebalancing)", TOY, "layout_imle.py", "", 240),
    Run("cimle_no_rebalance", "cIMLE w/o rebalancing", TOY, "layout_imle.py", "no_rebalance", 240),
    Run("cimle_no_encoder", "cIMLE w/o noise encoder", TOY, "layout_imle.py", "no_encoder", 240),
    Run("cgml", "cGML default (best-of-M starts, Eq. 4 with a fitted gain: 0 where Z learned no direction)",
        TOY, "cgml.py", "toy_scenes", 60),
    Run("cgml_paper", "cGML as published (persistent codes, Eq. 4)", TOY, "cgml.py", "toy_scenes,paper", 60),
    Run("codes_shared", "drop-out codes, shared", TOY, "latent_codes.py", "", 24),
    Run("codes_shared_no_neighbours", "drop-out codes, shared, w/o neighbours", TOY, "latent_codes.py",
        "no_neighbours", 24),
    Run("codes_separate", "drop-out codes, separate", TOY, "latent_codes.py", "separate", 24),
    Run("codes_separate_no_neighbours", "drop-out codes, separate, w/o neighbours", TOY, "latent_codes.py",
        "separate,no_neighbours", 24),
    Run("pix2pix_diversity", "pix2pix + diversity loss", TOY, "diversity.py", "", 60),
    Run("pix2pix", "pix2pix (+ noise channel)", TOY, "diversity.py", "no_diversity", 60),
    Run("pix2pix_published", "pix2pix as published (dropout noise only)", TOY, "diversity.py", "no_noise_input", 60),
    Run("crn_diversity", "CRN + diversity loss", TOY, "diversity.py", "crn", 60),
    Run("crn", "CRN (+ noise channel)", TOY, "diversity.py", "crn,no_diversity", 60),
    Run("flow_matching", _FM, TOY, "flow_matching.py", "", 240),
    Run("skewed_regression", "L1 regression (baseline)", SKEWED, "regression.py", "", 150, _SKEWED_MILD),
    Run("skewed_cimle", "cIMLE (noise encoder, rebalancing)", SKEWED, "layout_imle.py", "skewed_mild", 240),
    Run("skewed_cimle_no_rebalance", "cIMLE w/o rebalancing", SKEWED, "layout_imle.py", "skewed_mild,no_rebalance",
        240),
    Run("skewed_cgml", "cGML default", SKEWED, "cgml.py", "toy_scenes", 60, _SKEWED_MILD),
    Run("skewed_codes_shared", "drop-out codes, shared", SKEWED, "latent_codes.py", "", 24, _SKEWED_MILD),
    Run("skewed_pix2pix_diversity", "pix2pix + diversity loss", SKEWED, "diversity.py", "", 60, _SKEWED_MILD),
    Run("skewed_flow_matching", _FM, SKEWED, "flow_matching.py", "", 240, _SKEWED_MILD),
    Run("conditional_regression", "L1 regression (baseline)", CONDITIONAL, "regression.py", "conditional", 150),
    Run("conditional_cimle", "cIMLE (noise encoder, rebalancing)", CONDITIONAL, "layout_imle.py", "conditional",
        240),
    Run("conditional_cimle_no_rebalance", "cIMLE w/o rebalancing", CONDITIONAL, "layout_imle.py",
        "conditional,no_rebalance", 240),
    Run("conditional_cgml", "cGML default", CONDITIONAL, "cgml.py", "conditional", 60),
    Run("conditional_codes_shared", "drop-out codes, shared", CONDITIONAL, "latent_codes.py", "conditional", 24),
    Run("conditional_pix2pix_diversity", "pix2pix + diversity loss", CONDITIONAL, "diversity.py", "conditional", 60),
    Run("conditional_crn_diversity", "CRN + diversity loss", CONDITIONAL, "diversity.py", "crn,conditional", 60),
    Run("sr_regression", "L1 regression (SRIM's RRDB and bicubic skip, pixel l1)", SR, "regression.py", "srim_net",
        150),
    Run("sr_regression_perceptual", "perceptual regression (SRIM's RRDB, pixels + VGG-16 relu5_3)", SR,
        "regression.py", "srim_net,vgg16", 150),
    Run("srim", "SRIM (conditional IMLE)", SR, "srim.py", "", 150),
    Run("sr_flow_matching", "flow matching (iterative reference, bicubic residual)", SR, "flow_matching.py", "sr",
        150),
    Run("digits_regression", "L1 regression", DIGITS, "regression.py", "data=digits_completion", 150),
    Run("digits_cgml", "cGML default", DIGITS, "cgml.py", "completion", 42),
    Run("digits_imle", "conditional IMLE", DIGITS, "imle_digits", "", 160),
    Run("digits_flow_matching", _FM, DIGITS, "flow_matching.py", "digits", 150),
)


def imle_digits_config(seed: int, data_dir: str):
  """Conditional IMLE on digits_completion: the regression baseline's generator and distance,
  with the layout config's IMLE schedule (|S| = 32, m = 16, L = 80, |S~| = 16) and no rebalancing."""
  config = exp_util.load_config("regression.py", "data=digits_completion", seed, data_dir)
  layouts = exp_util.load_config("layout_imle.py", "", seed, data_dir)
  config.unlock()
  config.method = "imle"
  config.data.batch_size = layouts.data.batch_size
  config.imle = layouts.imle.copy_and_resolve_references()
  config.imle.code_channels = 4
  config.imle.rebalance_dataset = config.imle.rebalance_loss = False
  config.train.num_steps = 2400  # 30 rounds
  config.train.checkpoint_every = 800
  config.train.log_every = 400
  return config


def run_config(run: Run, quick: bool, seed: int, data_dir: str):
  """The run's config at the chosen budget (unlocked; the loop validates it)."""
  if run.config == "imle_digits":
    config = imle_digits_config(seed, data_dir)
  else:
    config = exp_util.load_config(run.config, run.arg, seed, data_dir)
  config.unlock()
  config.update_from_flattened_dict(dict(run.overrides))
  config.train.sample_every = 0  # the final grid only: the table needs no intermediate grids
  config.train.eval_every = 0
  if "imle" in config:
    config.imle.time_steps = False
  if quick:
    steps = run.quick_steps
    config.train.num_steps = steps
    config.train.checkpoint_every = steps
    config.train.log_every = max(1, steps // 4)
    if "imle" in config and config.imle.zero_code_steps:  # SRIM's z = 0 phase: the first third, whole rounds
      l = config.imle.updates_per_selection
      config.imle.zero_code_steps = max(l, steps // 3 // l * l)
  return config


def train_timed(config, workdir: str) -> dict[str, Any]:
  """Trains (or reuses) the run; its wall time is kept in workdir/compare_train.json.

  A run stopped early (SIGTERM, Ctrl-C: the loop saves and returns) is an error, not a result:
  running the script again resumes it.
  """
  record_path = os.path.join(workdir, "compare_train.json")
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
    if record["num_steps"] == config.train.num_steps:
      exp_util.check_same_config(config, workdir)  # trained to the end: reuse it
      return record
  resumed = os.path.isdir(os.path.join(workdir, "checkpoints"))
  start, load = time.time(), os.getloadavg()[0]
  state = exp_util.train_or_reuse(config, workdir)
  step = int(np.asarray(jax.device_get(state.step)))
  if step < config.train.num_steps:
    raise RuntimeError(f"training stopped at step {step} of {config.train.num_steps}: run again to resume it")
  record = {"train_seconds": time.time() - start, "resumed": resumed, "num_steps": config.train.num_steps,
            "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
  with open(record_path, "w") as f:
    json.dump(record, f)
  return record


RECALL_KEYS = ("mode_recall", "mode_recall_nearest")


def recall_at(mode_samples_BxMx, true_modes_BxKx, tolerance: float) -> dict[int, tuple[float, float]]:
  """(mode recall, nearest-mode recall) from the first n = 1, 2, 4, ... of the M samples per input."""
  m = mode_samples_BxMx.shape[1]
  out = {}
  for n in (n for n in (1, 2, 4, 8, 16, 32, 64, 128) if n <= m):
    scores = metrics.mode_metrics(mode_samples_BxMx[:, :n], true_modes_BxKx, tolerance)
    out[n] = tuple(scores[k] for k in RECALL_KEYS)
  return out


def _sheet(run: Run, arrays: dict[str, Any]) -> np.ndarray:
  """The first eval input's first SHEET_SAMPLES samples side by side, after its label map on toy_scenes."""
  images = list(np.asarray(arrays["samples"][0, :SHEET_SAMPLES], np.float32))
  if run.table in (TOY, SKEWED, CONDITIONAL):
    images.insert(0, toy_scenes.label_to_rgb(np.asarray(arrays["label"][0])))
  return np.concatenate([np.clip(i, 0, 1)[..., :3] if i.shape[-1] >= 3 else np.repeat(np.clip(i, 0, 1), 3, -1)
                         for i in images], axis=1)


def evaluate_run(run: Run, config, workdir: str, quick: bool, seed: int) -> tuple[dict[str, Any], np.ndarray]:
  """The record's evaluation part (evaluate.evaluate's result, as in eval.json) and the sample sheet.

  The config's evaluators, and on digit completion also `completion` (PSNR in the hole and with the
  known pixels pasted: the rows' methods treat the visible pixels differently).
  """
  evals = list(config.evals) + (["completion"] if run.table == DIGITS and "completion" not in config.evals else [])
  result = evaluate.evaluate(workdir, num_inputs=8 if quick else 32, num_samples=16, seed=seed,
                             mode_samples=32 if quick else 64, reality_mode="off", return_samples=True,
                             evals=",".join(evals))
  arrays = result.pop("arrays")
  out = {"eval": {k: result.get(k) for k in ("step", "num_inputs", "num_samples", "mode_samples", "num_modes",
                                             "mode_tolerance")} | {"metrics": result["metrics"]},
         "parameters": int(sum(result["parameters"].values()))}
  if arrays["true_modes"] is not None:
    scores = recall_at(arrays["mode_samples"], arrays["true_modes"], result["mode_tolerance"])
    out["recall_at"] = {str(n): list(v) for n, v in scores.items()}
  return out, _sheet(run, arrays)


def _machine() -> dict[str, Any]:
  info = bench_common.machine()
  return {k: info[k] for k in ("cpu", "cpu_count", "backend", "device_kind", "device_count", "jax", "jaxlib")}


def run_one(run: Run, workdir: str, seed: int, quick: bool, data_dir: str) -> tuple[dict[str, Any], np.ndarray]:
  """Trains (or resumes, or reuses) and evaluates one run: its record and sample sheet."""
  config = run_config(run, quick, seed, data_dir)
  trained = train_timed(config, workdir)
  evaluated, sheet = evaluate_run(run, config, workdir, quick, seed)
  record = {"version": records.RECORD_VERSION, "run": run.slug, "name": run.name, "table": run.table,
            "seed": seed, "config": run.spec, "budget": "quick" if quick else "full",
            "command": f"python experiments/compare.py --{'quick' if quick else 'full'} --only={run.slug} "
                       f"--seeds={seed} --workdir=WORKDIR",
            "fingerprint": records.fingerprint(config), "source_files": records.source_files(config),
            "commit": exp_util.git_commit(), "date": records.utc_now(), "machine": _machine(), **trained, **evaluated}
  return record, sheet


def _error(e: BaseException) -> str:
  return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def run_quick(runs: list[Run], args) -> list[dict[str, Any]]:
  """--quick: every run at its quick budget with --seeds' first seed; rows from unwritten records."""
  rows, seed = [], args["seeds"][0]
  for i, run in enumerate(runs):
    workdir = os.path.join(args["workdir"], run.slug)
    print(f"[{i + 1}/{len(runs)}] {run.name} ({run.table}): {run.spec}, quick budget -> {workdir}", flush=True)
    try:
      record, sheet = run_one(run, workdir, seed, True, args["data_dir"])
      rows.append(aggregate(run, [record], sheet=sheet))
      print(f"  trained in {record['train_seconds']:.0f} s", flush=True)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      rows.append(aggregate(run, [], error=_error(e)))
      print(f"  FAILED: {rows[-1]['error']}", flush=True)
  return rows


def run_full(runs: list[Run], args, force: bool) -> list[str]:
  """--full: each run x seed without a current record (or every one of them with `force`) is trained
  in `<workdir>/seed<k>/<run>` (resumed where a sitting stopped) and evaluated, and its record
  written. Returns the failures ('run seed k: error')."""
  todo, failures = [], []
  for run in runs:
    fp = records.fingerprint(run_config(run, False, 0, args["data_dir"]))  # the seed is not in it
    for seed in args["seeds"]:
      current = records.read(args["runs_dir"], run.table, run.slug, seed)
      if force or current is None or current.get("fingerprint") != fp:
        todo.append((run, seed, "no record" if current is None else ("stale record" if not force else "--only")))
  print(f"{len(todo)} run(s) x seed(s) to train and evaluate: "
        + (", ".join(f"{r.slug} seed {s} ({why})" for r, s, why in todo) or "every record is current"), flush=True)
  for i, (run, seed, _) in enumerate(todo):
    workdir = os.path.join(args["workdir"], f"seed{seed}", run.slug)
    print(f"[{i + 1}/{len(todo)}] {run.slug} seed {seed}: {run.spec} -> {workdir}", flush=True)
    try:
      record, sheet = run_one(run, workdir, seed, False, args["data_dir"])
      path = records.write(record, args["runs_dir"], sheet)
      print(f"  trained in {record['train_seconds'] / 60:.1f} min; wrote {path}", flush=True)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      failures.append(f"{run.slug} seed {seed}: {_error(e)}")
      print(f"  FAILED: {failures[-1]}", flush=True)
  return failures


# ------------------------------------------------------------------ rows from records

def aggregate(run: Run, recs: list[dict[str, Any]], *, stale: int = 0, sheet: np.ndarray | None = None,
              error: str | None = None) -> dict[str, Any]:
  """One table row from a run's records: every metric's per-seed values, train times, parameters."""
  keys = sorted({k for r in recs for k in r["eval"]["metrics"]})
  row = {"run": run, "seeds": [r["seed"] for r in recs], "stale": stale, "error": error, "sheet": sheet,
         "metrics": {k: [r["eval"]["metrics"].get(k) for r in recs] for k in keys},
         "train_seconds": [r["train_seconds"] for r in recs],
         "parameters": recs[0]["parameters"] if recs else None,
         "num_steps": recs[0]["num_steps"] if recs else None,
         "resumed": any(r.get("resumed") for r in recs),
         "machines": sorted({_machine_name(r["machine"]) for r in recs}),
         "jax": sorted({r["machine"]["jax"] for r in recs})}
  curves = [r["recall_at"] for r in recs if r.get("recall_at")]
  if curves:
    ns = sorted({int(n) for c in curves for n in c})
    row["recall_at"] = {n: tuple(float(np.mean([c[str(n)][j] for c in curves if str(n) in c])) for j in range(2))
                        for n in ns}
  return row


def assemble(runs: list[Run], runs_dir: str, data_dir: str = "") -> list[dict[str, Any]]:
  """Every run's row from its committed records (stale ones kept and counted: the table marks them)."""
  rows = []
  for run in runs:
    recs = records.read_all(runs_dir, run.table, run.slug)
    fp = records.fingerprint(run_config(run, False, 0, data_dir))  # the seed is not in it
    stale = sum(r.get("fingerprint") != fp for r in recs)
    sheet = records.read_sheet(runs_dir, recs[0]) if recs else None
    rows.append(aggregate(run, recs, stale=stale, sheet=sheet))
  return rows


# ------------------------------------------------------------------ tables

def _values(row: dict[str, Any], key: str) -> list[float | None]:
  return row["metrics"].get(key.format(d=evaluator_base.PIXEL), [])


def _mean(row: dict[str, Any], key: str) -> float | None:
  return records.mean_spread(_values(row, key))[0]


def columns(table: str) -> list[tuple[str, str, str]]:
  """(header, metric key ('{d}' = the pixel diversity distance), format) of one table."""
  lpips_div = ("LPIPS diversity", "lpips_diversity", ".3f")
  if table == TOY:
    return [("mode recall", "mode_recall", ".3f"), ("precision", "mode_precision", ".3f"),
            ("recall (nearest)", "mode_recall_nearest", ".3f"), lpips_div,
            ("pixel diversity", "pairwise_{d}_40pairs", ".4f")]
  if table == SKEWED:
    return [("mode recall", "mode_recall", ".3f"), ("rare-mode recall", "mode_recall_rare", ".3f"),
            ("precision", "mode_precision", ".3f"), ("recall (nearest)", "mode_recall_nearest", ".3f"), lpips_div]
  if table == CONDITIONAL:
    return [("recall, K > 1", "mode_set_recall/multimodal", ".3f"),
            ("precision, K > 1", "mode_set_precision/multimodal", ".3f"), ("recall, all", "mode_set_recall", ".3f"),
            ("spurious variation", "spurious_variation", ".4f"), ("free variation", "free_variation", ".4f"),
            lpips_div]
  if table == SR:
    return [("LPIPS mean", "lpips_mean", ".3f"), ("LPIPS best", "lpips_best", ".3f"),
            ("diversity score", "sr_diversity_score", ".2f"), ("LR-PSNR mean", "lr_psnr_mean", ".1f"),
            ("LR-PSNR worst", "lr_psnr_worst", ".1f"), ("PSNR best", "psnr_best", ".2f"),
            ("PSNR mean", "psnr_mean", ".2f"), ("SSIM mean", "ssim_mean", ".3f"),
            ("PSNR-Y mean", "psnr_y_mean", ".2f"), ("SSIM-Y mean", "ssim_y_mean", ".3f"), lpips_div,
            ("LPIPS FWV σ=0.3", "lpips_fwv_sigma0.3", ".4f")]
  return [("hole PSNR best", "psnr_hole_best", ".2f"), ("hole PSNR mean", "psnr_hole_mean", ".2f"),
          ("pasted PSNR best", "psnr_pasted_best", ".2f"), ("PSNR best", "psnr_best", ".2f"),
          ("PSNR mean", "psnr_mean", ".2f"), ("SSIM best", "ssim_best", ".3f"),
          ("pixel diversity", "diversity_{d}", ".4f"), lpips_div]


def _fmt(values: list[float | None], spec: str) -> str:
  """'mean ± standard deviation' over the seeds ('mean' alone for one seed, '—' for none)."""
  if values and all(v is not None and not np.isfinite(v) for v in values):
    return "nan"
  mean, spread, _ = records.mean_spread(values)
  if mean is None:
    return "—"
  return format(mean, spec) + ("" if spread is None else f" ± {format(spread, spec)}")


# bicubic upsampling's numbers are in every SR evaluation, under "bicubic/...": its row, from the first SR run's.
_BICUBIC = {"lpips_mean": "bicubic/lpips", "lpips_best": "bicubic/lpips", "lr_psnr_mean": "bicubic/lr_psnr",
            "lr_psnr_worst": "bicubic/lr_psnr", "psnr_best": "bicubic/psnr", "psnr_mean": "bicubic/psnr",
            "ssim_mean": "bicubic/ssim", "psnr_y_mean": "bicubic/psnr_y", "ssim_y_mean": "bicubic/ssim_y"}


def _bicubic_cells(rows: list[dict[str, Any]], cols) -> list[str] | None:
  ref = next((r for r in rows if r["seeds"] and "bicubic/psnr" in r["metrics"]), None)
  if ref is None:
    return None
  zero = ("sr_diversity_score", "lpips_diversity", "lpips_fwv_sigma0.3")
  # One value: bicubic is the same on the same inputs whatever the seed.
  return [_fmt(_values(ref, _BICUBIC[key])[:1] if key in _BICUBIC else ([0.0] if key in zero else []), spec)
          for _, key, spec in cols]


def table_rows(rows: list[dict[str, Any]], table: str) -> tuple[list[str], list[list[str]]]:
  """Header and formatted cells of one table (SR gets a bicubic row from the first SR run's evaluation)."""
  cols = columns(table)
  header = ["method", *[c[0] for c in cols], "seeds", "train time (min)", "parameters", "steps"]
  body = []
  selected = [r for r in rows if r["run"].table == table]
  bicubic = _bicubic_cells(selected, cols) if table == SR else None
  if bicubic:
    body.append(["bicubic upsampling (baseline)", *bicubic, "—", "—", "0", "—"])
  for row in selected:
    name = row["run"].name + (f" ({row['stale']} stale record(s): code changed since)" if row["stale"] else "")
    if row["error"] or not row["seeds"]:
      status = f"failed: {row['error']}" if row["error"] else "no record yet"
      body.append([name, *["—"] * len(cols), "0", status, "—", "—"])
      continue
    minutes = [s / 60 for s in row["train_seconds"]]
    body.append([name, *[_fmt(_values(row, key), spec) for _, key, spec in cols], str(len(row["seeds"])),
                 _fmt(minutes, ".1f") + (" (resumed: this part only)" if row["resumed"] else ""),
                 f"{row['parameters']:,}", str(row["num_steps"])])
  return header, body


def markdown(rows: list[dict[str, Any]], intro: str, plot_paths: list[str]) -> str:
  lines = [intro, ""]
  for table in TABLES:
    header, body = table_rows(rows, table)
    if not body:
      continue
    lines += [f"**{TABLE_TITLES[table]}**", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines.append("")
  for path in plot_paths:
    lines.append(f"![{os.path.basename(path)}]({path})")
  return "\n".join(lines).rstrip() + "\n"


def assembled_intro(rows: list[dict[str, Any]], runs_dir: str) -> str:
  """What the tables are, from the records themselves (no clock, no machine of this call: reproducible)."""
  done = [r for r in rows if r["seeds"]]
  n_records = sum(len(r["seeds"]) for r in done)
  machines = sorted({m for r in done for m in r["machines"]})
  versions = sorted({v for r in done for v in r["jax"]})
  hours = sum(sum(r["train_seconds"]) for r in done) / 3600
  return (f"Assembled by `python experiments/compare.py --assemble` from {n_records} records in "
          f"`{os.path.relpath(runs_dir, exp_util.REPO)}` ({len(done)} of {len(rows)} rows have one; "
          f"{hours:.1f} hours of training wall time in all) on {'; '.join(machines) or 'no machine yet'}, "
          f"jax {', '.join(versions) or '—'}. Each row is its config's full default budget; "
          f"every number is the mean ± standard deviation over the seeds recorded (the `seeds` column), "
          "evaluated on the first 32 test inputs with 16 samples each (64 per input for the mode metrics). "
          "Mode recall counts the true modes hit by a sample within the tolerance, precision the share of "
          "such samples; LPIPS is AlexNet v0.1.")


def quick_intro(rows: list[dict[str, Any]], seed: int, seconds: float) -> str:
  return (f"Smoke test: `python experiments/compare.py --quick` (each run 3-15% of its budget, seed {seed}; "
          f"8 eval inputs, 16 samples each, 32 for the mode metrics; {len(rows)} runs, {seconds / 60:.1f} min "
          f"on {_machine_line()}). It checks that every row trains and evaluates; its numbers rank nothing.")


def _machine_name(info: dict[str, Any]) -> str:
  """'2 x <cpu model>' on CPU, '8 x <device kind>' elsewhere (a record's `machine` or bench_common.machine())."""
  return (f"{info['cpu_count']} x {info['cpu']}" if info["backend"] == "cpu"
          else f"{info['device_count']} x {info['device_kind']}")


def _machine_line() -> str:
  info = bench_common.machine()
  return f"{_machine_name(info)}, jax {info['jax']}"


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
  """Every metric of every row: mean, standard deviation and seed count."""
  keys = sorted({k for r in rows for k in r["metrics"]})
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["table", "run", "method", "config", "seeds", "num_steps", "train_seconds", "parameters",
                     "error", *[f"{k}{s}" for k in keys for s in ("", ":std")]])
    for r in rows:
      stats = [records.mean_spread(r["metrics"].get(k, [])) for k in keys]
      train = records.mean_spread(r["train_seconds"])[0]
      writer.writerow([r["run"].table, r["run"].slug, r["run"].name, r["run"].spec, len(r["seeds"]),
                       r["num_steps"] or "", "" if train is None else f"{train:.1f}", r["parameters"] or "",
                       r["error"] or "", *[("" if v is None else f"{v:.6g}") for s in stats for v in s[:2]]])


def update_readme(section: str, path: str = os.path.join(exp_util.REPO, "README.md")) -> None:
  with open(path) as f:
    text = f.read()
  begin, end = text.find(README_BEGIN), text.find(README_END)
  if begin < 0 or end < begin:
    raise ValueError(f"{path} has no {README_BEGIN} ... {README_END} markers to write the results between.")
  with open(path, "w") as f:
    f.write(text[:begin + len(README_BEGIN)] + "\n" + section + text[end:])


# ------------------------------------------------------------------ plots

def _pyplot():
  """matplotlib.pyplot on the file-only Agg backend (imported when a plot is drawn, not at start-up)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


# (x, y) of each table's quality-diversity plot: (header, metric key)
_QUALITY_DIVERSITY = {TOY: (("LPIPS diversity", "lpips_diversity"), ("mode precision", "mode_precision")),
                      SKEWED: (("LPIPS diversity", "lpips_diversity"), ("rare-mode recall", "mode_recall_rare")),
                      CONDITIONAL: (("LPIPS diversity", "lpips_diversity"),
                                    ("precision, K > 1", "mode_set_precision/multimodal")),
                      SR: (("LPIPS diversity", "lpips_diversity"), ("LPIPS to the truth (lower: better)",
                                                                   "lpips_mean")),
                      DIGITS: (("pixel diversity", "diversity_{d}"), ("best-of-16 hole PSNR (dB)", "psnr_hole_best"))}


def _save(fig, plt, path: str) -> None:
  fig.tight_layout()
  fig.savefig(path, dpi=100, metadata={"Software": None})
  plt.close(fig)


def plot_quality_diversity(rows, path: str) -> None:
  """Per table, each row's quality against its diversity (He et al. Fig. 11 style), means over seeds."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, len(TABLES), figsize=(5 * len(TABLES), 4.5))
  for ax, table in zip(axes, TABLES):
    (x_name, x_key), (y_name, y_key) = _QUALITY_DIVERSITY[table]
    for row in (r for r in rows if r["run"].table == table and r["seeds"]):
      x, y = _mean(row, x_key), _mean(row, y_key)
      if x is None or y is None:
        continue
      ax.scatter([x], [y])
      ax.annotate(row["run"].name[:40], (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_title(TABLE_TITLES[table][:60], fontsize=8)
    ax.set_xlabel(x_name)
    ax.set_ylabel(y_name)
  _save(fig, plt, path)


def plot_recall(rows, path: str) -> None:
  """Mode recall (within the tolerance, and of the nearest mode) against the samples drawn per layout."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
  titles = ("mode recall (a sample within the tolerance)", "nearest-mode recall (no tolerance)")
  for i, row in enumerate(r for r in rows if r["run"].table == TOY and "recall_at" in r):
    ns = sorted(row["recall_at"])
    for j, ax in enumerate(axes):
      ax.plot(ns, [row["recall_at"][n][j] for n in ns], marker="os^v"[i % 4], linestyle=("-", "--")[i // 10 % 2],
              label=row["run"].name[:50])
  for ax, title in zip(axes, titles):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per layout")
    ax.set_ylabel("share of the K = 12 modes")
    ax.set_title(f"toy_scenes: {title}", fontsize=9)
  axes[1].legend(fontsize=6, loc="upper left")
  _save(fig, plt, path)


def plot_sr_protocol(rows, path: str) -> None:
  """The NTIRE diversity score against LR-PSNR, one point per SR record (bicubic: score 0)."""
  plt = _pyplot()
  fig, ax = plt.subplots(figsize=(6.5, 4.5))
  for row in (r for r in rows if r["run"].table == SR and r["seeds"]):
    points = [(x, y) for x, y in zip(_values(row, "lr_psnr_mean"), _values(row, "sr_diversity_score"))
              if x is not None and y is not None]
    if points:
      ax.scatter(*zip(*points), label=row["run"].name[:50])
  ax.axvline(45, color="grey", linestyle=":", linewidth=1)
  ax.axhline(10, color="grey", linestyle=":", linewidth=1)
  ax.set_xlabel("LR-PSNR mean (dB; the challenge's target 45)")
  ax.set_ylabel("diversity score (SRFlow x8: 10.6)")
  ax.set_title("Super-resolution x8: diversity against LR consistency", fontsize=9)
  ax.legend(fontsize=6)
  _save(fig, plt, path)


def sample_sheet(rows, path: str) -> None:
  """One toy_scenes layout (the first eval input), its label map and 8 samples per method, a row each."""
  plt = _pyplot()
  toy = [r for r in rows if r["run"].table == TOY and r["sheet"] is not None]
  if not toy:
    return
  fig, axes = plt.subplots(len(toy), 1, figsize=(1.6 * (SHEET_SAMPLES + 1), 0.9 * len(toy)), squeeze=False)
  for (ax,), row in zip(axes, toy):
    ax.imshow(row["sheet"], interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_ylabel(row["run"].name[:40], rotation=0, ha="right", va="center", fontsize=7)
  _save(fig, plt, path)


PLOTS = {"compare_quality_diversity.png": plot_quality_diversity, "compare_recall.png": plot_recall,
         "compare_sr.png": plot_sr_protocol, "compare_sheet.png": sample_sheet}


def write_outputs(rows, intro: str, results_dir: str, prefix: str, link_dir: str | None = None) -> str:
  """Plots, <prefix>.md and <prefix>.csv in results_dir; returns the markdown for the README, its plots
  linked in link_dir (default: results_dir relative to the repository)."""
  os.makedirs(results_dir, exist_ok=True)
  names = []
  for name, plot in PLOTS.items():
    name = f"{prefix}{name[len('compare'):]}"
    if os.path.exists(os.path.join(results_dir, name)):
      os.remove(os.path.join(results_dir, name))  # a plot with nothing to show is not drawn: no stale one
    plot(rows, os.path.join(results_dir, name))
    if os.path.exists(os.path.join(results_dir, name)):
      names.append(name)
  with open(os.path.join(results_dir, f"{prefix}.md"), "w") as md:
    md.write(markdown(rows, intro, names))
  write_csv(rows, os.path.join(results_dir, f"{prefix}.csv"))
  link_dir = os.path.relpath(results_dir, exp_util.REPO) if link_dir is None else link_dir
  return markdown(rows, intro, [os.path.join(link_dir, name) for name in names])


def _define_flags() -> None:
  # Defined only when run as a program, so tests can import this module next to the benchmarks.
  flags.DEFINE_bool("full", False, "Train and evaluate what has no current record (every run x --seeds), "
                    "write the records, then assemble.")
  flags.DEFINE_bool("assemble", False, "Only assemble the tables and plots from the committed records (instant).")
  flags.DEFINE_bool("quick", False, "Smoke test: every run's quick budget, one seed (not the README's table).")
  flags.DEFINE_string("workdir", None, "Where runs are trained (--full: <workdir>/seed<k>/<run>; --quick: "
                      "<workdir>/<run>).")
  flags.DEFINE_list("only", [], "Only these runs (their slugs); with --full they are rerun even where current.")
  flags.DEFINE_list("seeds", [str(s) for s in SEEDS], "Seeds of --full (--quick: the first).")
  flags.DEFINE_string("data_dir", "", "tfds data dir (default: the configs' default).")
  flags.DEFINE_string("results_dir", os.path.join(exp_util.REPO, "experiments", "results"),
                      "Where the tables and plots go.")
  flags.DEFINE_string("runs_dir", records.RUNS_DIR, "The per-run records.")
  flags.DEFINE_bool("update_readme", False, "Rewrite the README's Results section (--full or --assemble).")


def _check_flags(fl) -> list[Run]:
  modes = [m for m in ("full", "assemble", "quick") if getattr(fl, m)]
  if len(modes) != 1:
    cli.fail("choose one of --full (train what has no current record), --assemble (tables from the records) "
             "and --quick (smoke test)")
  if modes[0] != "assemble" and not fl.workdir:
    cli.fail(f"--{modes[0]} trains: give --workdir")
  if fl.quick and fl.update_readme:
    cli.fail("--quick is a smoke test: the README shows the assembled records (--assemble --update_readme)")
  unknown = set(fl.only) - {r.slug for r in RUNS}
  if unknown:
    cli.fail(f"unknown --only runs {sorted(unknown)}; valid: {[r.slug for r in RUNS]}")
  if not all(s.isdigit() for s in fl.seeds):
    cli.fail(f"--seeds takes non-negative integers; got {fl.seeds}")
  return [r for r in RUNS if not fl.only or r.slug in fl.only]


def main(argv):
  del argv
  fl = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  runs = _check_flags(fl)
  args = {"workdir": fl.workdir, "data_dir": fl.data_dir, "seeds": [int(s) for s in fl.seeds],
          "runs_dir": fl.runs_dir}
  start, failures = time.time(), []
  if fl.quick:
    rows = run_quick(runs, args)
    section = write_outputs(rows, quick_intro(rows, args["seeds"][0], time.time() - start), fl.results_dir,
                            "compare_quick")
    failures = [f"{r['run'].slug}: {r['error']}" for r in rows if r["error"]]
  else:
    if fl.full:
      failures = run_full(runs, args, force=bool(fl.only))
    rows = assemble(list(RUNS), fl.runs_dir, fl.data_dir)
    section = write_outputs(rows, assembled_intro(rows, fl.runs_dir), fl.results_dir, "compare")
  print(section)
  print(f"Wrote the tables and plots to {fl.results_dir} ({(time.time() - start) / 60:.1f} min).")
  if fl.update_readme:
    update_readme(section)
    print("Updated the README's Results section.")
  if failures:
    sys.exit(f"error: {len(failures)} run(s) failed: {'; '.join(failures)} (tracebacks above).")


if __name__ == "__main__":
  # The JAX workarounds (faster CPU compiles, identical values), then errors a user can fix as one line.
  _define_flags()
  cli.run(main)
