r"""Issue 37's table: SR workdirs under the NTIRE'21 protocol, in one run, with bicubic's row.

  python experiments/sr_table.py srim=/tmp/srim regression=/tmp/sr_regression [--num_inputs=32 --num_samples=10]

Evaluates each workdir with `multimodal_jax.evaluate.evaluate` (the first
`--num_inputs` test inputs, `--num_samples` samples, seed 0, every default
evaluator) and prints one markdown row per workdir, plus bicubic's row from
the first evaluation (the same inputs): LPIPS mean (best), the diversity
score, LR-PSNR mean / worst, PSNR RGB best / mean, SSIM RGB mean, PSNR / SSIM
on Y (BasicSR: border crop of the scale), pairwise LPIPS between samples.
"""

from __future__ import annotations

import sys

from multimodal_jax import cli
from multimodal_jax import evaluate

COLUMNS = ("LPIPS mean (best)", "diversity score", "LR-PSNR mean / worst", "PSNR RGB best / mean", "SSIM RGB mean",
           "PSNR Y mean", "SSIM Y mean", "LPIPS pairwise")


def row(name: str, m: dict) -> str:
  get = lambda key, fmt: format(m[key], fmt) if key in m else "—"
  cells = [f"{get('lpips_mean', '.3f')} ({get('lpips_best', '.3f')})", get("sr_diversity_score", ".2f"),
           f"{get('lr_psnr_mean', '.2f')} / {get('lr_psnr_worst', '.2f')}",
           f"{get('psnr_best', '.2f')} / {get('psnr_mean', '.2f')}", get("ssim_mean", ".3f"),
           get("psnr_y_mean", ".2f"), get("ssim_y_mean", ".4f"), get("lpips_diversity", ".4f")]
  return f"| {name} | " + " | ".join(cells) + " |"


def bicubic_row(m: dict) -> str:
  ref = {"lpips_mean": m.get("bicubic/lpips"), "lpips_best": m.get("bicubic/lpips"), "sr_diversity_score": 0.0,
         "lr_psnr_mean": m.get("bicubic/lr_psnr"), "lr_psnr_worst": m.get("bicubic/lr_psnr"),
         "psnr_best": m.get("bicubic/psnr"), "psnr_mean": m.get("bicubic/psnr"), "ssim_mean": m.get("bicubic/ssim"),
         "psnr_y_mean": m.get("bicubic/psnr_y"), "ssim_y_mean": m.get("bicubic/ssim_y"), "lpips_diversity": 0.0}
  return row("bicubic", {k: v for k, v in ref.items() if v is not None})


def main(argv: list[str]) -> None:
  options = {"num_inputs": 32, "num_samples": 10}
  runs = []
  for arg in argv:
    if arg.startswith("--"):
      key, _, value = arg[2:].partition("=")
      if key not in options:
        cli.fail(f"unknown flag --{key}; valid: {sorted(options)}")
      options[key] = int(value)
    else:
      name, sep, workdir = arg.rpartition("=")  # the last '=': a row's name may hold one
      if not sep:
        cli.fail(f"expected NAME=WORKDIR, got {arg!r}")
      runs.append((name, workdir))
  if not runs:
    cli.fail("give at least one NAME=WORKDIR (the SR runs to tabulate)")
  lines = ["| row | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
  for i, (name, workdir) in enumerate(runs):
    print(f"evaluating {name} ({workdir}) ...", flush=True)
    metrics = evaluate.evaluate(workdir, seed=0, **options)["metrics"]
    if i == 0:
      lines.append(bicubic_row(metrics))
    lines.append(row(name, metrics))
  print("\n".join(lines))


if __name__ == "__main__":
  with cli.user_errors():
    main(sys.argv[1:])
