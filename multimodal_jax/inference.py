"""Inference apart from the training loop: restoring a trained run to sample from it (`load_trained`).

`sample`, `evaluate` and the experiments import this module, never `train`:
restoring a run needs its config (`run_info.json`, multimodal_jax/workdir.py),
its prepared state (`prepared.npz`, see `multimodal_jax/prepared.py`) and a
checkpoint (multimodal_jax/checkpointing.py), not the training data or the
loop. The sample grids are in multimodal_jax/evaluation/grids.py, the mesh in
multimodal_jax/sharding.py.
"""

from __future__ import annotations


import jax
import ml_collections
import numpy as np

from multimodal_jax import checkpointing
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


def load_trained(workdir: str, step: int | None = None):
  """Restores a trained run for inference: (config, method, state, batch_spec).

  Reads `run_info.json`, the prepared state (`prepared.npz`) and the newest (or
  the given) checkpoint of `workdir`; the state is placed on the local
  devices, replicated. The user modules the run was trained with (`--import`)
  are imported first: they register its dataset or method.
  """
  storage.check_client(workdir)
  path = storage.join(workdir, workdir_lib.RUN_INFO)
  if not storage.exists(path):
    raise NotARunError(f"{path} not found: is {workdir} the --workdir of a training run?")
  info = workdir_lib.read_run_info(workdir)
  plugins.import_modules(info.get("imports", []), origin=f"recorded in {path}")
  config = ml_collections.ConfigDict(info["config"])
  config.lock()
  batch_spec = {k: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                for k, (shape, dtype) in info["batch_spec"].items()}
  replicated = sharding.replicated(sharding.make_mesh())
  try:
    method = methods_base.make_method(config, batch_spec, prepared_lib.for_inference(config, workdir))
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
