r"""One table for all methods: every method, same data, same metrics, same machine (issue #15).

  python experiments/compare.py --workdir=/tmp/compare --quick           # 13.7 min on a 2-core CPU
  python experiments/compare.py --workdir=/tmp/compare                   # each config's own budget
  python experiments/compare.py --workdir=/tmp/compare --quick --update_readme
  python experiments/compare.py --workdir=/tmp/compare --only=cimle,regression

Trains every method of `RUNS` with a fixed, documented budget and seed, in one
process, evaluates each with `multimodal_jax.evaluate.evaluate` (the same
function as `python -m multimodal_jax.evaluate`) and writes, to --results_dir
(default experiments/results/):

  compare.md, compare.csv      three tables: toy_scenes layouts -> images (12
                               exactly known modes per layout: mode recall,
                               precision, pairwise diversity, best-of-N PSNR/SSIM),
                               super-resolution on local_photos_sr x8 (bicubic,
                               L1 regression, SRIM: best-of-N and mean PSNR/SSIM,
                               diversity, faithfulness-weighted variance, IJCV
                               Table 1's columns) and digit completion; each with
                               the train wall time and the parameter count
  compare_quality_diversity.png  quality (best-of-N PSNR) against diversity, one point
                               per method (He et al. Fig. 11 style)
  compare_recall.png           mode recall against the number of samples drawn
  compare_sheet.png            one layout, 8 samples per method, side by side

and with --update_readme, the README's Results section (between its
`<!-- compare.py:begin -->` / `<!-- compare.py:end -->` markers).

Budgets. Full (default): every config's own defaults (each config's
docstring gives its budget and measured time; about 2.5 hours in all on a
2-core CPU). `--quick`: each run's `quick_steps` (3-15% of its budget), 8
evaluation inputs; the ranking of the methods, not their converged quality.
Either way the seed is --seed (0) and the runs are trained in `--workdir/<run>`
and reused when the script runs again with the same budget (a partial run
resumes; a workdir of another budget is refused: delete it or use another
--workdir). The L1 regression baseline's mode recall is 0 (its samples are
identical and blurred: nearest-mode recall exactly 1/K); a multimodal method
is above it when its samples cover several modes.
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
import numpy as np

import bench_common
import exp_util
from multimodal_jax import cli
from multimodal_jax import evaluate
from multimodal_jax.data import toy_scenes
from multimodal_jax.evaluation import metrics
from multimodal_jax.evaluation.evaluators import base as evaluator_base

TOY, SR, DIGITS = "toy_scenes", "super_resolution", "digit_completion"
TABLE_TITLES = {TOY: "Layouts -> images on toy_scenes (K = 12 exactly known modes per layout)",
                SR: "Super-resolution x8 on local_photos_sr (8x8 -> 64x64)",
                DIGITS: "Digit completion on digits_completion (masked top -> whole digit)"}
README_BEGIN, README_END = "<!-- compare.py:begin -->", "<!-- compare.py:end -->"
SHEET_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class Run:
  """One row: a config (file and argument, as on the command line) and its quick budget."""
  slug: str
  name: str
  table: str
  config: str  # configs/<file>, or "imle_digits" (see `imle_digits_config`)
  arg: str = ""
  quick_steps: int = 0  # train.num_steps under --quick (a whole number of the method's rounds)


RUNS = (
    Run("regression", "L1 regression (baseline)", TOY, "regression.py", "", 150),
    Run("crn_best_of_9", "CRN, 9 outputs, best-of-k", TOY, "layout_imle.py", "crn_best_of_k", 150),
    Run("crn_noise_regression", "CRN + noise, regression", TOY, "layout_imle.py", "crn_noise_regression", 150),
    Run("cimle", "cIMLE (noise encoder, rebalancing)", TOY, "layout_imle.py", "", 240),
    Run("cimle_no_rebalance", "cIMLE w/o rebalancing", TOY, "layout_imle.py", "no_rebalance", 240),
    Run("cimle_no_encoder", "cIMLE w/o noise encoder", TOY, "layout_imle.py", "no_encoder", 240),
    Run("cgml", "cGML", TOY, "cgml.py", "toy_scenes", 60),
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
    Run("flow_matching", "flow matching (iterative reference)", TOY, "flow_matching.py", "", 240),
    Run("sr_regression", "L1 regression", SR, "regression.py", "data=local_photos_sr", 150),
    Run("srim", "SRIM (conditional IMLE)", SR, "srim.py", "", 150),
    Run("sr_flow_matching", "flow matching (iterative reference)", SR, "flow_matching.py", "sr", 150),
    Run("digits_regression", "L1 regression", DIGITS, "regression.py", "data=digits_completion", 150),
    Run("digits_cgml", "cGML", DIGITS, "cgml.py", "completion", 42),
    Run("digits_imle", "conditional IMLE", DIGITS, "imle_digits", "", 160),
    Run("digits_flow_matching", "flow matching (iterative reference)", DIGITS, "flow_matching.py", "digits", 150),
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
  """Trains (or reuses) the run; its wall time is kept in workdir/compare_train.json."""
  record_path = os.path.join(workdir, "compare_train.json")
  if os.path.exists(record_path):
    with open(record_path) as f:
      record = json.load(f)
    if record["num_steps"] == config.train.num_steps:
      exp_util.check_same_config(config, workdir)  # trained to the end: reuse it
      return record
  resumed = os.path.isdir(os.path.join(workdir, "checkpoints"))
  start = time.time()
  exp_util.train_or_reuse(config, workdir)
  record = {"train_seconds": time.time() - start, "resumed": resumed, "num_steps": config.train.num_steps}
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


def evaluate_run(workdir: str, quick: bool, seed: int) -> dict[str, Any]:
  """evaluate.evaluate's result (eval.json), the parameter count and the plots' data from its samples."""
  result = evaluate.evaluate(workdir, num_inputs=8 if quick else 32, num_samples=16, seed=seed,
                             mode_samples=32 if quick else 64, reality_mode="off", return_samples=True)
  arrays = result.pop("arrays")
  out = {"eval": result, "parameters": sum(result["parameters"].values()),
         "sheet": arrays["samples"][0, :SHEET_SAMPLES], "label": arrays["label"]}
  if arrays["true_modes"] is not None:
    out["recall_at"] = recall_at(arrays["mode_samples"], arrays["true_modes"], result["mode_tolerance"])
  return out


def run_all(runs: list[Run], args) -> list[dict[str, Any]]:
  rows = []
  for i, run in enumerate(runs):
    workdir = os.path.join(args["workdir"], run.slug)
    config = run_config(run, args["quick"], args["seed"], args["data_dir"])
    print(f"[{i + 1}/{len(runs)}] {run.name} ({run.table}): {run.config}:{run.arg}, "
          f"{config.train.num_steps} steps -> {workdir}", flush=True)
    row = {"run": run, "num_steps": config.train.num_steps}
    try:
      row.update(train_timed(config, workdir))
      row.update(evaluate_run(workdir, args["quick"], args["seed"]))
      print(f"  trained in {row['train_seconds']:.0f} s", flush=True)
    except Exception as e:  # pylint: disable=broad-except
      traceback.print_exc()
      row["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
      print(f"  FAILED: {row['error']}", flush=True)
    rows.append(row)
  return rows


# ------------------------------------------------------------------ tables

def _metric(row: dict[str, Any], key: str) -> float | None:
  if "eval" not in row:
    return None
  m = row["eval"]["metrics"]
  key = key.format(d=evaluator_base.PIXEL)
  return m.get(key)


def columns(table: str) -> list[tuple[str, str, str]]:
  """(header, metric key ('{d}' = the diversity distance), format) of one table."""
  quality = [("PSNR best", "psnr_best", ".2f"), ("SSIM best", "ssim_best", ".3f")]
  if table == TOY:
    return [("mode recall", "mode_recall", ".3f"), ("precision", "mode_precision", ".3f"),
            ("recall (nearest)", "mode_recall_nearest", ".3f"),
            ("pairwise diversity", "pairwise_{d}_40pairs", ".4f")] + quality
  both = [("PSNR best", "psnr_best", ".2f"), ("PSNR mean", "psnr_mean", ".2f"),
          ("SSIM best", "ssim_best", ".3f"), ("SSIM mean", "ssim_mean", ".3f"),
          ("diversity", "diversity_{d}", ".4f")]
  if table == SR:
    return both + [(f"FWV σ={s:g}", metrics.fwv_key("{d}", s), ".3g") for s in metrics.FWV_SIGMAS]
  return both


def _fmt(value, spec: str) -> str:
  if value is None:
    return "—"
  if isinstance(value, float) and not np.isfinite(value):
    return "nan"
  return format(value, spec)


def table_rows(rows: list[dict[str, Any]], table: str) -> tuple[list[str], list[list[str]]]:
  """Header and formatted cells of one table (SR gets a bicubic row from the first SR run's evaluation)."""
  cols = columns(table)
  header = ["method", *[c[0] for c in cols], "train time", "parameters", "steps"]
  body = []
  selected = [r for r in rows if r["run"].table == table]
  if table == SR and selected and "eval" in selected[0]:
    ref = {"psnr_best": "bicubic/psnr", "psnr_mean": "bicubic/psnr", "ssim_best": "bicubic/ssim",
           "ssim_mean": "bicubic/ssim"}
    cells = [_fmt(_metric(selected[0], ref[key]) if key in ref else (0.0 if key.startswith("diversity") else None),
                  spec) for _, key, spec in cols]
    body.append(["bicubic upsampling (baseline)", *cells, "—", "0", "—"])
  for row in selected:
    if "error" in row:
      body.append([row["run"].name, *["—"] * len(cols), f"failed: {row['error']}", "—", str(row["num_steps"])])
      continue
    cells = [_fmt(_metric(row, key), spec) for _, key, spec in cols]
    body.append([row["run"].name, *cells, f"{row['train_seconds'] / 60:.1f} min" + (" (resumed: this part only)" if row["resumed"] else ""), f"{row['parameters']:,}",
                 str(row["num_steps"])])
  return header, body


def markdown(rows: list[dict[str, Any]], quick: bool, seed: int, seconds: float, plot_paths: list[str]) -> str:
  budget = "`--quick` budget" if quick else "each config's full budget"
  evaluated = "8 eval inputs, 16 samples each (32 for the mode metrics)" if quick else \
      "32 eval inputs, 16 samples each (64 for the mode metrics)"
  lines = [f"Generated by `python experiments/compare.py{' --quick' if quick else ''}` "
           f"({budget}, seed {seed}; {evaluated}; {len(rows)} runs, {seconds / 60:.1f} min in all "
           f"on {_machine_line()}). Mode recall counts the true modes hit by a sample within "
           "the tolerance, precision the share of such samples; the diversity column is "
           f"`{_diversity_name(rows)}`.", ""]
  for table in (TOY, SR, DIGITS):
    header, body = table_rows(rows, table)
    if len(body) == 0:
      continue
    lines += [f"**{TABLE_TITLES[table]}**", "", "| " + " | ".join(header) + " |",
              "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in body]
    lines.append("")
  for path in plot_paths:
    lines.append(f"![{os.path.basename(path)}]({path})")
  return "\n".join(lines).rstrip() + "\n"


def _machine_line() -> str:
  info = bench_common.machine()
  return (f"{info['cpu_count']} x {info['cpu']}" if info["backend"] == "cpu"
          else f"{info['device_count']} x {info['device_kind']}") + f", jax {info['jax']}"


def _diversity_name(rows: list[dict[str, Any]]) -> str:
  del rows  # the pixel metrics keep their distance's name; LPIPS has keys of its own (lpips_*)
  return evaluator_base.PIXEL


def write_csv(rows: list[dict[str, Any]], path: str) -> None:
  """Every metric of every run, one row each (the evaluation's whole metric dict)."""
  keys = sorted({k for r in rows if "eval" in r for k in r["eval"]["metrics"]})
  with open(path, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["table", "run", "method", "config", "num_steps", "train_seconds", "parameters", "error",
                     *keys])
    for r in rows:
      run, m = r["run"], r.get("eval", {}).get("metrics", {})
      writer.writerow([run.table, run.slug, run.name, f"{run.config}:{run.arg}", r["num_steps"],
                       f"{r['train_seconds']:.1f}" if "train_seconds" in r else "", r.get("parameters", ""),
                       r.get("error", ""), *[m.get(k, "") for k in keys]])


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


def plot_quality_diversity(rows, path: str) -> None:
  plt = _pyplot()
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
  for ax, table in zip(axes, (TOY, SR, DIGITS)):
    for row in (r for r in rows if r["run"].table == table and "eval" in r):
      x, y = _metric(row, "diversity_{d}"), _metric(row, "psnr_best")
      ax.scatter([x], [y])
      ax.annotate(row["run"].name, (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_title(TABLE_TITLES[table], fontsize=9)
    ax.set_xlabel(f"diversity ({_diversity_name(rows)} between samples)")
    ax.set_ylabel("best-of-16 PSNR (dB)")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot_recall(rows, path: str) -> None:
  """Mode recall (within the tolerance, and of the nearest mode) against the samples drawn per layout."""
  plt = _pyplot()
  fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
  titles = ("mode recall (a sample within the tolerance)", "nearest-mode recall (no tolerance)")
  for i, row in enumerate(r for r in rows if "recall_at" in r):
    ns = sorted(row["recall_at"])
    for j, ax in enumerate(axes):
      ax.plot(ns, [row["recall_at"][n][j] for n in ns], marker="os^v"[i % 4], linestyle=("-", "--")[i // 10 % 2],
              label=row["run"].name)
  for ax, title in zip(axes, titles):
    ax.set_xscale("log", base=2)
    ax.set_xlabel("samples per layout")
    ax.set_ylabel("share of the K = 12 modes")
    ax.set_title(f"toy_scenes: {title}", fontsize=9)
  axes[1].legend(fontsize=6, loc="upper left")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def sample_sheet(rows, path: str) -> None:
  """One toy_scenes layout (the first eval input), its label map and 8 samples per method, a row each."""
  plt = _pyplot()
  toy = [r for r in rows if r["run"].table == TOY and "sheet" in r]
  if not toy:
    return
  fig, axes = plt.subplots(len(toy), SHEET_SAMPLES + 1, figsize=(1.6 * (SHEET_SAMPLES + 1), 0.9 * len(toy)),
                           squeeze=False)
  for ax_row, row in zip(axes, toy):
    images = [toy_scenes.label_to_rgb(row["label"][0])] + list(row["sheet"])
    for ax, image in zip(ax_row, images):
      ax.imshow(np.clip(image, 0, 1))
      ax.set_xticks([])
      ax.set_yticks([])
    ax_row[0].set_ylabel(row["run"].name, rotation=0, ha="right", va="center", fontsize=7)
  fig.tight_layout(pad=0.2)
  fig.savefig(path, dpi=100)
  plt.close(fig)


def _define_flags() -> None:
  # Defined only when run as a program, so tests can import this module next to the benchmarks.
  flags.DEFINE_string("workdir", None, "Where the runs are trained (one sub-directory each).", required=True)
  flags.DEFINE_bool("quick", False, "Each run's quick budget (13.7 minutes for all, measured on a 2-core CPU).")
  flags.DEFINE_list("only", [], "Run only these runs (their slugs; default: all).")
  flags.DEFINE_integer("seed", 0, "Training and sampling seed of every run.")
  flags.DEFINE_string("data_dir", "", "tfds data dir (default: the configs' default).")
  flags.DEFINE_string("results_dir", os.path.join(exp_util.REPO, "experiments", "results"),
                      "Where the tables and plots go.")
  flags.DEFINE_bool("update_readme", False, "Rewrite the README's Results section.")


def main(argv):
  del argv
  fl = flags.FLAGS
  logging.set_verbosity(logging.WARNING)
  runs = [r for r in RUNS if not fl.only or r.slug in fl.only]
  unknown = set(fl.only) - {r.slug for r in RUNS}
  if unknown:
    cli.fail(f"unknown --only runs {sorted(unknown)}; valid: {[r.slug for r in RUNS]}")
  start = time.time()
  rows = run_all(runs, {"workdir": fl.workdir, "quick": fl.quick, "seed": fl.seed,
                        "data_dir": fl.data_dir})
  os.makedirs(fl.results_dir, exist_ok=True)
  out = lambda name: os.path.join(fl.results_dir, name)
  plots = {"compare_quality_diversity.png": plot_quality_diversity, "compare_recall.png": plot_recall,
           "compare_sheet.png": sample_sheet}
  for name, plot in plots.items():
    plot(rows, out(name))
  seconds = time.time() - start
  with open(out("compare.md"), "w") as md:
    md.write(markdown(rows, fl.quick, fl.seed, seconds, list(plots)))
  readme_dir = os.path.relpath(fl.results_dir, exp_util.REPO)
  section = markdown(rows, fl.quick, fl.seed, seconds, [os.path.join(readme_dir, name) for name in plots])
  write_csv(rows, out("compare.csv"))
  print(section)
  print(f"Wrote {out('compare.md')}, compare.csv and {len(plots)} plots ({(time.time() - start) / 60:.1f} min).")
  if fl.update_readme:
    update_readme(section)
    print("Updated the README's Results section.")
  failed = [r["run"].slug for r in rows if "error" in r]
  if failed:
    sys.exit(f"error: {len(failed)} run(s) failed: {', '.join(failed)} (tracebacks above).")


if __name__ == "__main__":
  # The JAX workarounds (faster CPU compiles, identical values), then errors a user can fix as one line.
  _define_flags()
  cli.run(main)
