"""Per-run records of `compare.py --full` (issue 43): one small JSON per run and seed, committed.

  experiments/results/runs/<table>/<run>/seed<k>.json    the evaluate metrics, train wall time and
                                                          steps, parameter count, commit, machine,
                                                          jax version, the exact command, fingerprint
  experiments/results/runs/<table>/<run>/seed<k>.png     its first eval input's samples (the sheet)

The README's tables are assembled from these files alone (`compare.py --assemble`), so
they can be produced in several sittings, on several machines, and reproduced byte for
byte from a clone. Checkpoints are not committed.

A record is *current* when its fingerprint equals the run's fingerprint now: sha256 of
RECORD_VERSION, the run's resolved config (the seed and data_dir left out: the seed is
the record's, the data are the same wherever they are prepared) and the source of the
files that define what it trains: the method's module, the modules of the models its
config names and the dataset's module. A change anywhere else (the training loop, the
evaluators, a shared layer) leaves records current: rerun the rows it affects with
`compare.py --full --only=...`, or bump RECORD_VERSION to rerun everything.
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import importlib.util
import json
import os
from typing import Any, Iterable

import ml_collections
import numpy as np

import exp_util
from multimodal_jax.data import registry as data_registry
from multimodal_jax.methods import base as methods_base
from multimodal_jax.models import registry as model_registry

RECORD_VERSION = 1
RUNS_DIR = os.path.join(exp_util.REPO, "experiments", "results", "runs")
_UNHASHED_KEYS = ("seed",)
_UNHASHED_DATA_KEYS = ("data_dir",)


def _module_file(module: str) -> str:
  spec = importlib.util.find_spec(module)
  if spec is None or spec.origin is None:
    raise ValueError(f"module {module} not found")
  return spec.origin


def _model_names(tree: Any) -> Iterable[str]:
  """Every `name` in the config that names a registered model (G, a discriminator, ...)."""
  if isinstance(tree, dict):
    if isinstance(tree.get("name"), str) and tree["name"] in model_registry.MODELS:
      yield tree["name"]
    for value in tree.values():
      yield from _model_names(value)


def source_files(config: ml_collections.ConfigDict) -> list[str]:
  """The files whose source enters the fingerprint: method, models, dataset (paths relative to the repo)."""
  modules = {methods_base.METHODS[config.method]}
  modules |= {model_registry.MODELS[name][0].partition(":")[0] for name in _model_names(config.to_dict())}
  if config.data.name in data_registry.DATASETS:
    modules.add(data_registry.DATASETS[config.data.name].partition(":")[0])
  return sorted(os.path.relpath(_module_file(m), exp_util.REPO) for m in modules)


def _hashed_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  tree = json.loads(config.to_json_best_effort())
  for key in _UNHASHED_KEYS:
    tree.pop(key, None)
  for key in _UNHASHED_DATA_KEYS:
    tree.get("data", {}).pop(key, None)
  return tree


def fingerprint(config: ml_collections.ConfigDict) -> str:
  """sha256 (first 16 hex digits) of RECORD_VERSION, the config (no seed, data_dir) and source_files."""
  h = hashlib.sha256(f"record version {RECORD_VERSION}\n".encode())
  h.update(json.dumps(_hashed_config(config), sort_keys=True).encode())
  for path in source_files(config):
    h.update(f"\n{path}\n".encode())
    with open(os.path.join(exp_util.REPO, path), "rb") as f:
      h.update(f.read())
  return h.hexdigest()[:16]


def record_path(runs_dir: str, table: str, slug: str, seed: int, ext: str = "json") -> str:
  return os.path.join(runs_dir, table, slug, f"seed{seed}.{ext}")


def utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write(record: dict[str, Any], runs_dir: str, sheet_HxWxC: np.ndarray | None = None) -> str:
  """Writes the record (and its sample sheet as PNG) atomically; returns the JSON's path."""
  path = record_path(runs_dir, record["table"], record["run"], record["seed"])
  os.makedirs(os.path.dirname(path), exist_ok=True)
  if sheet_HxWxC is not None:
    from PIL import Image  # pylint: disable=g-import-not-at-top  (matplotlib's dependency)
    image = np.round(np.clip(sheet_HxWxC, 0, 1) * 255).astype(np.uint8)
    Image.fromarray(image).save(record_path(runs_dir, record["table"], record["run"], record["seed"], "png"))
  with open(path + ".tmp", "w") as f:
    json.dump(record, f, indent=1, sort_keys=True, allow_nan=True)
    f.write("\n")
  os.replace(path + ".tmp", path)
  return path


def read(runs_dir: str, table: str, slug: str, seed: int) -> dict[str, Any] | None:
  path = record_path(runs_dir, table, slug, seed)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def read_all(runs_dir: str, table: str, slug: str) -> list[dict[str, Any]]:
  """A run's records, by seed."""
  records = []
  for path in glob.glob(os.path.join(runs_dir, table, slug, "seed*.json")):
    with open(path) as f:
      records.append(json.load(f))
  return sorted(records, key=lambda r: r["seed"])


def read_sheet(runs_dir: str, record: dict[str, Any]) -> np.ndarray | None:
  path = record_path(runs_dir, record["table"], record["run"], record["seed"], "png")
  if not os.path.exists(path):
    return None
  from PIL import Image  # pylint: disable=g-import-not-at-top
  return np.asarray(Image.open(path).convert("RGB"), np.float32) / 255.0


def mean_spread(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
  """(mean, sample standard deviation, n) of the finite values; spread None for n < 2, mean None for 0."""
  finite = [float(v) for v in values if v is not None and np.isfinite(v)]
  if not finite:
    return None, None, 0
  spread = float(np.std(finite, ddof=1)) if len(finite) > 1 else None
  return float(np.mean(finite)), spread, len(finite)
