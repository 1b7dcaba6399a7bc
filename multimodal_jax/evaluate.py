r"""Evaluates a trained run: `python -m multimodal_jax.evaluate --workdir=DIR`.

  python -m multimodal_jax.evaluate --workdir=DIR [--num_inputs=16 --num_samples=16 --step=S --evals=a,b]
  python -m multimodal_jax.evaluate --workdir=DIR --out=results.json     # a read-only DIR

Restores the newest (or `--step`) checkpoint of DIR, draws `num_samples`
samples for each of the first `num_inputs` eval examples once, runs the
evaluators the run's config lists (`config.evals`; evaluation/evaluators/,
docs/evaluation.md), prints their summaries, then writes DIR/eval.json and a
copy DIR/eval_<step>.json, and the scalars to TensorBoard as `eval/*`; with
`--out=FILE` only that file, with `--override` only DIR/eval_override.json (so
the run's own evaluation is never replaced by one of changed settings). The
numbers are printed before anything is written: a workdir that cannot be
written (an archive, a colleague's run) skips TensorBoard with a line, and
eval.json fails in one line naming `--out`.
Modules given with `--import` (and those the run was trained with) are
imported first.
"""

from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, not a traceback.
  from multimodal_jax import cli as _cli  # pylint: disable=g-import-not-at-top  # imports no JAX
  _cli.interrupt_in_one_line()

import errno
import json
import os
import time
from typing import Any, Sequence

from absl import app
from absl import flags
from clu import metric_writers
import jax
import numpy as np

from multimodal_jax import cli
from multimodal_jax import config_lib
from multimodal_jax import errors
from multimodal_jax import inference
from multimodal_jax import storage
from multimodal_jax.data import pipeline
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation.evaluators import modes

EVAL_JSON = "eval.json"
EVAL_OVERRIDE_JSON = "eval_override.json"  # the latest evaluation with --override (the overrides inside)
REALITY_CHOICES = ("auto", "on", "off")


class ArgumentError(errors.UserError, ValueError):
  """A bad argument of `evaluate` (the command prints it as one line)."""


class NotWritableError(errors.UserError):
  """eval.json cannot be written into the workdir: `--out` names another file."""


def step_json(step: int) -> str:
  """The file name of one step's evaluation (a copy of eval.json written beside it)."""
  return f"eval_{step}.json"


def evaluator_names(config, evals: str | None = None, reality_mode: str = "auto") -> list[str]:
  """`--evals`, else the config's list (the default for a run older than the key); 'on' / 'off' add / drop reality."""
  names = list(evals.split(",") if evals else config.get("evals") or config_lib.DEFAULT_EVALS)
  if reality_mode not in REALITY_CHOICES:
    raise ArgumentError(f"reality_mode must be one of {REALITY_CHOICES}; got {reality_mode!r}.")
  if reality_mode == "on" and "reality" not in names:
    names.append("reality")
  if reality_mode == "off" and "reality" in names:
    names.remove("reality")
  if why := evaluators.check_names(names):
    raise ArgumentError(f"--evals: {why}")
  return names


def evaluate(workdir: str, num_inputs: int = 16, num_samples: int = 16, step: int | None = None,
             seed: int = 0, weights_dir: str | None = None, mode_samples: int = 64, evals: str | None = None,
             reality_mode: str = "auto", return_samples: bool = False, out: str | None = None,
             overrides: Sequence[str] = ()) -> dict[str, Any]:
  """Evaluates the run in `workdir`; prints, writes eval.json and TensorBoard scalars; returns the json dict.

  `mode_samples`: samples per input for the mode metrics (a second draw with the
  same seed; the same samples when equal to `num_samples`). `return_samples`:
  also return the drawn arrays under "arrays" (samples, mode_samples, true_modes, label).
  `out`: write the json there instead of `workdir`'s eval.json and eval_<step>.json.
  `overrides`: "KEY=VALUE" inference-time settings (`inference.apply_overrides`,
  e.g. flow_matching.sample_steps=8), recorded in the json.
  """
  if num_samples < 2:
    raise ArgumentError(f"--num_samples must be >= 2 to measure diversity; got {num_samples}.")
  if mode_samples < 1:
    raise ArgumentError(f"--mode_samples must be >= 1; got {mode_samples}.")
  start = time.time()
  config, method, state, _ = inference.load_trained(workdir, step, overrides=overrides)
  names = evaluator_names(config, evals, reality_mode)
  batch = pipeline.load_eval_examples(config, num_inputs, allow_fewer=True)
  ctx = evaluators.Context(config, method, state, workdir, batch, samples=None, seed=seed,
                           mode_samples=mode_samples, weights_dir=weights_dir)
  ctx.samples = ctx.draw(num_samples)
  evaluators.run(names, ctx)
  result = {"workdir": storage.resolve(workdir), "step": int(jax.device_get(state.step)), "method": config.method,
            "dataset": config.data.name, "builder_config": config.data.builder_config,
            "num_inputs": len(batch["x"]), "num_samples": num_samples, "mode_samples": mode_samples,
            "seed": seed, "evals": names, **({"overrides": list(overrides)} if overrides else {}), "parameters": evaluators.parameter_counts(state), **ctx.info,
            "metrics": ctx.scalars, "skipped": ctx.skipped}
  print(summary(result, time.time() - start), flush=True)
  if jax.process_index() == 0:
    _write(workdir, result, out)
  if return_samples:
    has_modes = ctx.true_modes() is not None
    result["arrays"] = {"samples": ctx.samples, "true_modes": ctx.true_modes(), "label": batch.get("label"),
                        "mode_samples": modes.mode_samples(ctx) if has_modes else None}
  return result


_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def _write(workdir: str, result: dict[str, Any], out: str | None = None) -> None:
  """eval.json (the latest evaluation) and eval_<step>.json (kept per step), or `out`; eval/* in TensorBoard.

  With overrides and no `out`: eval_override.json only, so the run's own
  evaluation files are not replaced by one of changed settings.

  Each file written is named in a line. TensorBoard is skipped, with a line,
  when the workdir cannot be written (the json then needs `out`), and for an
  evaluation written to `out` or run with overrides: its eval/* scalars would
  sit at the run's step beside, and look like, the run's own evaluation.
  """
  own = not out and not result.get("overrides")
  if own:
    tensorboard = _write_tensorboard(workdir, result)
    paths = [storage.join(workdir, name) for name in (EVAL_JSON, step_json(result["step"]))]
  else:
    print("  TensorBoard not written: only the run's own evaluation (no --out, no --override) goes there.",
          flush=True)
    tensorboard = False
    paths = [out or storage.join(workdir, EVAL_OVERRIDE_JSON)]  # Beside the run's own evaluation, not over it.
  for path in paths:
    try:
      storage.write_text(storage.resolve(path), json.dumps(result, indent=1))
    except OSError as e:
      if e.errno not in _NOT_WRITABLE:
        raise
      hint = "pass --out=FILE to write it elsewhere" if not out else "give --out a writable path"
      raise NotWritableError(f"{path} cannot be written ({e.strerror}): the numbers are above; {hint}.") from e
  print(f"  written to {paths[0]}" + (f" (and {os.path.basename(paths[1])})" if len(paths) > 1 else "")
        + (" and TensorBoard (eval/*)." if tensorboard else "."), flush=True)


def _write_tensorboard(workdir: str, result: dict[str, Any]) -> bool:
  """The eval/* scalars into the workdir's TensorBoard logs; False, after a line, if it cannot be written."""
  if not _writable_directory(workdir):
    print(f"  TensorBoard skipped: {workdir} cannot be written.", flush=True)
    return False
  writer = metric_writers.create_default_writer(workdir, asynchronous=False)
  writer.write_scalars(result["step"], {f"eval/{k}": v for k, v in result["metrics"].items() if np.isfinite(v)})
  writer.flush()
  writer.close()
  return True


def _writable_directory(directory: str) -> bool:
  """Whether a file can be created in `directory` (tried: `os.access` says yes to root on a read-only mount)."""
  if storage.is_remote(directory):
    return True  # A bucket's permissions show only on a write; the json's write reports them.
  probe = os.path.join(directory, f".evaluate_write_test.{os.getpid()}")
  try:
    with open(probe, "w"):
      pass
    os.remove(probe)
    return True
  except OSError as e:
    if e.errno in _NOT_WRITABLE:
      return False
    raise


def summary(result: dict[str, Any], seconds: float) -> str:
  """A few human-readable lines of eval.json: each evaluator's own, then what was skipped and where it goes."""
  lines = [f"Evaluated {result['method']} on {result['dataset']} at step {result['step']}: "
           f"{result['num_inputs']} inputs x {result['num_samples']} samples ({seconds:.1f}s)."]
  lines += evaluators.summary_lines(result["evals"], result["metrics"], result)
  by_reason: dict[str, list[str]] = {}  # One line per reason (missing LPIPS weights skip three evaluators).
  for name, why in result.get("skipped", {}).items():
    by_reason.setdefault(why, []).append(name)
  lines += [f"  skipped {', '.join(names)}: {why}" for why, names in by_reason.items()]
  return "\n".join(lines)


def _define_flags() -> None:
  # Defined only when run as a program, so tests can import this module next to
  # main.py and sample.py, whose flags share names.
  flags.DEFINE_string("workdir", None, "The --workdir of a training run.", required=True)
  flags.DEFINE_string("out", None, "Write the results (json) here instead of WORKDIR/eval.json and "
                      "eval_<step>.json, e.g. for a read-only workdir.")
  flags.DEFINE_integer("num_inputs", 16, "The first this many eval examples.")
  flags.DEFINE_integer("num_samples", 16, "Samples per input.")
  flags.DEFINE_integer("mode_samples", 64, "Samples per input for mode recall / precision (datasets "
                       "with true modes).")
  flags.DEFINE_integer("step", None, "The checkpoint step to evaluate (default: the newest).")
  flags.DEFINE_integer("seed", 0, "Sampling rng seed.")
  flags.DEFINE_string("weights_dir", None, "Where to look for the LPIPS weights first.")
  flags.DEFINE_string("evals", None, "Comma-separated evaluators to run instead of the config's `evals`.")
  flags.DEFINE_enum("reality", "auto", REALITY_CHOICES, "Reality metrics of layout datasets (a segmentation "
                    "net trained on real images, cached in the workdir): auto = as the config's `evals` say.")
  cli.define_override_flag()
  cli.define_import_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  cli.import_flagged_modules()
  # Not a run, no checkpoint restores, a bad --evals, a workdir that cannot be written: one line
  # (errors.UserError, cli.user_errors).
  evaluate(f.workdir, num_inputs=f.num_inputs, num_samples=f.num_samples, step=f.step, seed=f.seed,
           weights_dir=f.weights_dir, mode_samples=f.mode_samples, evals=f.evals, reality_mode=f.reality,
           out=f.out, overrides=f.override)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
