"""Inference apart from the training loop: restoring a trained run to sample from it (`load_trained`).

`sample`, `evaluate` and the experiments import this module, never `train`:
restoring a run needs its config (`run_info.json`, multimodal_jax/workdir.py),
its prepared state (`prepared.npz`, see `multimodal_jax/prepared.py`) and a
checkpoint (multimodal_jax/checkpointing.py), not the training data or the
loop. The sample grids are in multimodal_jax/evaluation/grids.py, the mesh in
multimodal_jax/sharding.py.
"""

from __future__ import annotations

import importlib
from typing import Sequence

import jax
import ml_collections
import numpy as np

from multimodal_jax import checkpointing
from multimodal_jax import errors
from multimodal_jax import plugins
from multimodal_jax import prepared as prepared_lib
from multimodal_jax import sharding
from multimodal_jax import storage
from multimodal_jax import workdir as workdir_lib
from multimodal_jax.methods import base as methods_base


class NotARunError(workdir_lib.WorkdirError, FileNotFoundError):
  """The workdir holds no training run (no run_info.json): `evaluate` and `sample` print one line."""


class RunPredatesCodeError(workdir_lib.WorkdirError):
  """run_info.json lacks a config key the method reads now: the run was trained by an older version."""


def _missing_config_key(error: AttributeError) -> str | None:
  """The key a locked ConfigDict did not have, when `error` is its missing-attribute error (else None)."""
  cause = error.args[0] if error.args else None
  return str(cause.args[0]).strip("'") if isinstance(cause, KeyError) and cause.args else None


class OverrideError(errors.UserError, ValueError):
  """A bad `--override KEY=VALUE` of evaluate / sample (printed as one line)."""


def apply_overrides(config: ml_collections.ConfigDict, overrides: Sequence[str]) -> ml_collections.ConfigDict:
  """`config` (unlocked copy) with "KEY=VALUE" settings applied; only the method's `INFERENCE_KEYS` may change.

  Those are the keys that act at sampling alone (e.g. flow matching's
  `flow_matching.sample_steps`), so the trained state restores unchanged.
  VALUE is read as the key's current type (int, float, bool or str).
  """
  allowed = getattr(importlib.import_module(methods_base.METHODS[config.method]), "INFERENCE_KEYS", ())
  config = ml_collections.ConfigDict(config.to_dict())
  for item in overrides:
    key, sep, text = item.partition("=")
    if not sep or key not in allowed:
      valid = ", ".join(allowed) if allowed else f"none: method {config.method!r} has no inference-time settings"
      raise OverrideError(f"--override {item!r}: expected KEY=VALUE with KEY one of the run's inference-time "
                          f"settings ({valid}).")
    section, name = key.rsplit(".", 1)
    # A run recorded before the key existed: the method's default (its `.get`) had the key's type.
    current = config[section].get(name, _literal(text))
    try:
      if isinstance(current, bool):
        if text.lower() not in ("true", "false", "1", "0"):
          raise ValueError(text)
        value = text.lower() in ("true", "1")
      else:
        value = type(current)(text)
    except ValueError:
      kind = type(current).__name__
      raise OverrideError(f"--override {item!r}: {key} is {'an' if kind[0] in 'aeiou' else 'a'} {kind}; "
                          f"got {text!r}.") from None
    config[section][name] = value
  return config


def _literal(text: str):
  """'true' / 'false' -> bool, then int, float, or the text itself."""
  if text.lower() in ("true", "false"):
    return text.lower() == "true"
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def load_trained(workdir: str, step: int | None = None, overrides: Sequence[str] = ()):
  """Restores a trained run for inference: (config, method, state, batch_spec).

  Reads `run_info.json`, the prepared state (`prepared.npz`) and the newest (or
  the given) checkpoint of `workdir`; the state is placed on the local
  devices, replicated. The user modules the run was trained with (`--import`)
  are imported first: they register its dataset or method. `overrides`:
  "KEY=VALUE" inference-time settings (`apply_overrides`), validated like a
  training config.
  """
  storage.check_client(workdir)
  path = storage.join(workdir, workdir_lib.RUN_INFO)
  if not storage.exists(path):
    raise NotARunError(f"{path} not found: is {workdir} the --workdir of a training run?")
  info = workdir_lib.read_run_info(workdir)
  plugins.import_modules(info.get("imports", []), origin=f"recorded in {path}")
  config = recorded = ml_collections.ConfigDict(info["config"])
  recorded.lock()
  if overrides:
    config = apply_overrides(recorded, overrides)
    try:
      methods_base.validate_method_config(config)
    except ValueError as e:
      raise OverrideError(f"--override: {e}") from None
  config.lock()
  batch_spec = {k: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                for k, (shape, dtype) in info["batch_spec"].items()}
  replicated = sharding.replicated(sharding.make_mesh())
  try:
    # The prepared state was computed for the recorded config (an override acts at sampling only).
    method = methods_base.make_method(config, batch_spec, prepared_lib.for_inference(recorded, workdir))
    abstract_state = sharding.abstract_state(method.init, jax.random.PRNGKey(config.seed), replicated)
  except AttributeError as e:
    key = _missing_config_key(e)
    if key is None:
      raise
    raise RunPredatesCodeError(
        f"{path} has no config key {key!r}, which method {config.get('method')!r} reads now: the run was "
        f"trained by an older version (its checkpoint would not restore into the current state); retrain it.") from e
  # The newest checkpoint that restores (or `step`).
  state, _ = checkpointing.restore_for_inference(workdir, abstract_state, step)
  return config, method, state, batch_spec
