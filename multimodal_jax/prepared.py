"""Prepared dataset state: what a method computes once over the whole training set.

A method module may define

    def prepare(config, train_source) -> dict[str, np.ndarray]

(KDE rarity, neighbour lists, distance calibration ...). `train_source` is the
train split with its deterministic (evaluation) transforms, every example
carrying its stable `index` (`data.pipeline.PrepareSource`: `len`, `[i]`,
`batches(n)` with a progress line). The loop runs it once before
`make_method`, saves the arrays in the workdir (`prepared.npz`) with a
fingerprint of what they depend on, restores them on resume and at inference
(`inference.load_trained`: `sample --input x.png` needs no dataset), and
recomputes them when the fingerprint changes. The arrays reach the method as
`make_method(config, batch_spec, prepared)`.

A prepared array named `SAMPLING_WEIGHTS` (= `methods.base.SAMPLING_WEIGHTS`;
[N], one weight per training example) makes the train iterator draw examples
with replacement in proportion to it (`data.pipeline.create_train_iterator`).

The fingerprint covers `config.method`, `config.data` (less the keys that do
not change the data: data_dir, num_workers, batch_size) and the config
sections the module lists in `PREPARE_DEPENDS_ON` (default: the section named
like the method, e.g. `config.imle`, if there is one).
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from multimodal_jax import storage
from multimodal_jax.methods import base as methods_base

PREPARED_FILE = "prepared.npz"
SAMPLING_WEIGHTS = methods_base.SAMPLING_WEIGHTS
_FINGERPRINT_KEY = "__fingerprint__"
# config.data keys that say where and how fast to read, not what: no recompute.
_DATA_KEYS_IGNORED = ("data_dir", "num_workers", "batch_size")

Prepared = methods_base.Prepared


def method_module(config: ml_collections.ConfigDict):
  methods_base.check_method_name(config.method)
  return importlib.import_module(methods_base.METHODS[config.method])


def depends_on(config: ml_collections.ConfigDict) -> tuple[str, ...]:
  """The config sections (besides `data`) the method's `prepare` reads."""
  module = method_module(config)
  default = (config.method,) if config.method in config else ()
  return tuple(getattr(module, "PREPARE_DEPENDS_ON", default))


def fingerprint(config: ml_collections.ConfigDict) -> str:
  """A hash of everything the prepared state depends on (the module docstring)."""
  data = {k: v for k, v in json.loads(config.data.to_json_best_effort()).items()
          if k not in _DATA_KEYS_IGNORED}
  parts = {"method": config.method, "data": data}
  for key in depends_on(config):
    value = config[key]
    parts[key] = json.loads(value.to_json_best_effort()) if isinstance(
        value, ml_collections.ConfigDict) else value
  text = json.dumps(parts, sort_keys=True, default=str)
  return hashlib.sha256(text.encode()).hexdigest()[:16]


def has_prepare(config: ml_collections.ConfigDict) -> bool:
  return hasattr(method_module(config), "prepare")


def save(workdir: str, arrays: Prepared, fp: str) -> None:
  """Writes `prepared.npz` whole or not at all (`storage.write_bytes`: a disk or a bucket)."""
  buffer = io.BytesIO()
  np.savez(buffer, **{_FINGERPRINT_KEY: np.array(fp)}, **{k: np.asarray(v) for k, v in arrays.items()})
  storage.write_bytes(storage.join(workdir, PREPARED_FILE), buffer.getvalue())


def load(workdir: str) -> tuple[dict[str, np.ndarray], str] | None:
  """(arrays, fingerprint) from `workdir/prepared.npz`, or None if there is none."""
  path = storage.join(workdir, PREPARED_FILE)
  if not storage.exists(path):
    return None
  with np.load(io.BytesIO(storage.read_bytes(path)), allow_pickle=False) as data:
    arrays = {k: data[k] for k in data.files if k != _FINGERPRINT_KEY}
    return arrays, str(data[_FINGERPRINT_KEY])


def compute(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
  """Runs the method's `prepare` over the train split (with a progress line); {} if it has none."""
  module = method_module(config)
  if not hasattr(module, "prepare"):
    return {}
  from multimodal_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  source = pipeline.PrepareSource(config)
  print(f"Preparing {config.method}'s dataset state over the {len(source)} training examples of "
        f"{config.data.name}...", flush=True)
  start = time.time()
  arrays = {k: np.asarray(v) for k, v in module.prepare(config, source).items()}
  print(f"Prepared {', '.join(f'{k} {list(v.shape)}' for k, v in arrays.items()) or 'nothing'} in "
        f"{time.time() - start:.1f}s.", flush=True)
  return arrays


def prepare_or_restore(config: ml_collections.ConfigDict, workdir: str,
                       compute_fn: Callable[[ml_collections.ConfigDict], dict[str, np.ndarray]] = compute
                       ) -> dict[str, np.ndarray]:
  """The prepared state of `config`: restored from `workdir` if its fingerprint matches, else computed.

  Every process computes (or loads) the same arrays; process 0 writes them.
  """
  if not has_prepare(config):
    return {}
  fp = fingerprint(config)
  stored = load(workdir)
  if stored is not None and stored[1] == fp:
    print(f"Restored the prepared dataset state from {storage.join(workdir, PREPARED_FILE)}.", flush=True)
    return stored[0]
  if stored is not None:
    print(f"The prepared state in {workdir} was made for other settings (fingerprint {stored[1]} != "
          f"{fp}): recomputing it.", flush=True)
  arrays = compute_fn(config)
  if jax.process_index() == 0:
    save(workdir, arrays, fp)
  return arrays


def for_inference(config: ml_collections.ConfigDict, workdir: str) -> dict[str, np.ndarray]:
  """The prepared state a trained run used: from its workdir; recomputed (needs the data) if absent."""
  if not has_prepare(config):
    return {}
  stored = load(workdir)
  if stored is not None:
    if stored[1] != fingerprint(config):
      raise ValueError(f"{storage.join(workdir, PREPARED_FILE)} does not match the run's config "
                       f"(fingerprint {stored[1]} != {fingerprint(config)}); was the workdir reused?")
    return stored[0]
  print(f"{storage.join(workdir, PREPARED_FILE)} is missing: recomputing the prepared state from the "
        "training data.", flush=True)
  return compute(config)
