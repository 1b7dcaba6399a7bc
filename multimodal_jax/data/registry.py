"""Dataset registry: the name in `config.data.name` -> how to build, read and show it.

Every dataset yields per-example dicts of numpy arrays with the same keys:
  x: the conditioning input, float32 [H, W, Cx] (a one-hot layout, an LR image in
     [0, 1], a masked image, a grey image ...).
  y: the target, float32 [H', W', Cy] in [0, 1].
  plus dataset-specific extras (e.g. `mode` int32 for toy_scenes, `mask`).
Batching, sharding and shuffling are generic (`data/pipeline.py`); a dataset
only says how one stored record becomes one such dict.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any, Callable, Sequence

from etils import epath
import grain
import ml_collections
import numpy as np
import tensorflow_datasets as tfds


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of this package's offline builders (they download nothing).

  tfds' default `code_path` evaluates `importlib_resources.abc` (a backport it
  only declares for Python < 3.9) for packages installed in place; the
  subclass's own module file is the same answer without that import.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(sys.modules[cls.__module__].__file__)


def data_option(data_config: ml_collections.ConfigDict | None, key: str, default: Any) -> Any:
  """`data_config.options[key]`, or `default` for configs without it (the paper's value)."""
  if data_config is not None and 'options' in data_config and key in data_config.options:
    return data_config.options[key]
  return default


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How the training loop reads one dataset.

  Attributes:
    tfds_name: the TFDS builder name (with an optional `/config`).
    builder_cls: a local `tfds.core.GeneratorBasedBuilder` that downloads
      nothing and is prepared on first use; None for datasets in the TFDS
      catalogue (paper variants), which are read with `tfds.data_source`.
    train_split / eval_split: TFDS split names.
    make_transforms: (data_config, train) -> grain transformations mapping one
      stored record to the {'x', 'y', ...} dict. Random transforms draw from the
      rng grain passes them, so a pipeline is deterministic given its seed.
    input_to_rgb: batch of x [B, H, W, Cx] -> RGB float32 [B, H, W, 3] in [0, 1]
      for sample grids.
    builder_kwargs: extra keyword arguments for the builder constructor.
  """
  tfds_name: str
  builder_cls: type | None
  train_split: str
  eval_split: str
  make_transforms: Callable[[ml_collections.ConfigDict, bool], Sequence[grain.transforms.Transformation]]
  input_to_rgb: Callable[[np.ndarray], np.ndarray]
  builder_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)


DATASETS: dict[str, DatasetSpec] = {}


def register(name: str, spec: DatasetSpec) -> None:
  if name in DATASETS:
    raise ValueError(f"Dataset {name!r} is registered twice.")
  DATASETS[name] = spec


def get_dataset(name: str) -> DatasetSpec:
  _import_all()
  try:
    return DATASETS[name]
  except KeyError:
    raise ValueError(
        f"Unknown dataset {name!r}; valid names: {sorted(DATASETS)}") from None


def dataset_names() -> list[str]:
  _import_all()
  return sorted(DATASETS)


def _import_all() -> None:
  # Dataset modules register themselves on import.
  from multimodal_jax.data import datasets  # pylint: disable=g-import-not-at-top,unused-import
