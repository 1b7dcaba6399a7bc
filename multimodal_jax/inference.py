"""Inference apart from the training loop: the mesh, run info, restoring a trained run, grids.

`sample`, `evaluate` and the experiments import this module, never `train`:
restoring a run needs its config (`run_info.json`), its prepared state
(`prepared.npz`, see `multimodal_jax/prepared.py`) and a checkpoint, not the
training data or the loop.
"""

from __future__ import annotations

import json
import os
from typing import Sequence

import jax
import ml_collections
import numpy as np

from multimodal_jax import plugins
from multimodal_jax import prepared as prepared_lib
from multimodal_jax import workdir as workdir_lib
from multimodal_jax.methods import base as methods_base
from multimodal_jax.models import registry as models_registry

RUN_INFO = workdir_lib.RUN_INFO


def make_mesh() -> jax.sharding.Mesh:
  """A 1-D mesh over all devices of all processes, axis `data`."""
  return jax.make_mesh((jax.device_count(),), ("data",),
                       axis_types=(jax.sharding.AxisType.Auto,))


def write_run_info(workdir: str, config: ml_collections.ConfigDict, batch_spec,
                   imports: Sequence[str] | None = None) -> None:
  """Saves the config, the global batch shapes and the user modules, so CLIs can rebuild the method.

  Args:
    workdir: the run's directory.
    config: the run's config.
    batch_spec: the global batch, {key: ShapeDtypeStruct}.
    imports: the `--import` modules the run needs (they register its dataset or
      method); None = those imported so far, `plugins.imported()`.
  """
  imports = plugins.imported() if imports is None else list(imports)
  info = {"config": json.loads(config.to_json_best_effort()),
          "batch_spec": {k: [list(v.shape), np.dtype(v.dtype).name] for k, v in batch_spec.items()},
          "imports": imports}
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, RUN_INFO)
  with open(path + ".tmp", "w") as f:
    json.dump(info, f, indent=1)
  os.replace(path + ".tmp", path)  # Atomic: a run killed mid-write leaves the previous file whole.


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
  path = os.path.join(workdir, RUN_INFO)
  if not os.path.exists(path):
    raise NotARunError(f"{path} not found: is {workdir} the --workdir of a training run?")
  with open(path) as f:
    info = json.load(f)
  plugins.import_modules(info.get("imports", []), origin=f"recorded in {path}")
  config = ml_collections.ConfigDict(info["config"])
  config.lock()
  batch_spec = {k: jax.ShapeDtypeStruct(tuple(shape), np.dtype(dtype))
                for k, (shape, dtype) in info["batch_spec"].items()}
  mesh = make_mesh()
  replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
  try:
    method = methods_base.make_method(config, batch_spec, prepared_lib.for_inference(config, workdir))
    abstract_state = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                                  jax.eval_shape(method.init, jax.random.PRNGKey(config.seed)))
  except AttributeError as e:
    key = _missing_config_key(e)
    if key is None:
      raise
    raise RunPredatesCodeError(
        f"{path} has no config key {key!r}, which method {config.get('method')!r} reads now: the run was "
        f"trained by an older version (its checkpoint would not restore into the current state); retrain it.") from e
  # The newest checkpoint that restores (or `step`). Imported here: checkpointing -> workdir -> inference.
  from multimodal_jax import checkpointing  # pylint: disable=g-import-not-at-top
  state, _ = checkpointing.restore_for_inference(workdir, abstract_state, step)
  return config, method, state, batch_spec


def sample_grid(x_rgb: np.ndarray, samples: np.ndarray, y: np.ndarray, pad: int = 2) -> np.ndarray:
  """Rows of input | samples | ground truth, as one float32 RGB image in [0, 1].

  For super-resolution (an RGB input smaller than the samples) a column of the
  input's bicubic upsampling (`models.registry.upsample_reference`, the
  trivial baseline) follows the input: input | bicubic | samples | truth.

  Args:
    x_rgb: [B, h, w, 3] inputs shown as RGB (resized to the target size).
    samples: [B, N, H, W, C] samples in [0, 1].
    y: [B, H, W, C] ground truth.
  """
  b, n, h, w, _ = samples.shape
  to_rgb = lambda a: np.repeat(a, 3, axis=-1) if a.shape[-1] == 1 else a[..., :3]
  columns = [np.asarray(jax.image.resize(x_rgb, (b, h, w, 3), "nearest"))[:, None]]
  if x_rgb.shape[1] < h and h % x_rgb.shape[1] == 0:
    columns.append(np.asarray(models_registry.upsample_reference(x_rgb, h // x_rgb.shape[1]))[:, None])
  tiles = np.concatenate(columns + [to_rgb(samples), to_rgb(y)[:, None]], axis=1)  # [B, cols, H, W, 3]
  cols = tiles.shape[1]
  grid = np.ones((b * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
  for i in range(b):
    for j in range(cols):
      top, left = pad + i * (h + pad), pad + j * (w + pad)
      grid[top:top + h, left:left + w] = tiles[i, j]
  return np.clip(grid, 0.0, 1.0)


