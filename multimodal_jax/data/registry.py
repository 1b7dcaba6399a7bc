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
from tensorflow_datasets.core import dataset_metadata


class LocalBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of offline builders (they download nothing), this package's and users' own.

  tfds looks for a builder's code and metadata (README.md, CITATIONS.bib,
  TAGS.txt) through the *package* its module path names. That fails for a
  builder defined in a user's top-level module or script (`my_data`,
  `__main__`): the "package" is the .py file itself, and listing it raises
  NotADirectoryError. For packages installed in place, tfds' default also
  evaluates `importlib_resources.abc`, a backport it only declares for
  Python < 3.9. The module's own file, and the directory holding it, give
  tfds what it means in every case, without either failure.
  """

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path | None:
    module_file = getattr(sys.modules.get(cls.__module__), '__file__', None)
    # None (a builder typed into a REPL or notebook) is allowed by tfds: no
    # checksums file and, below, no metadata files.
    return epath.Path(module_file) if module_file else None

  @classmethod
  def _get_pkg_dir_path(cls) -> epath.Path:
    if cls.pkg_dir_path is not None:  # Set explicitly, as tfds allows.
      return cls.pkg_dir_path
    if cls.code_path is None:
      raise FileNotFoundError(f'{cls.__name__} is not defined in a file; it has no metadata directory.')
    return cls.code_path.parent

  @classmethod
  def get_metadata(cls) -> dataset_metadata.DatasetMetadata:
    if cls.pkg_dir_path is None and cls.code_path is None:
      return dataset_metadata.DatasetMetadata(description=None, citation=None, tags=[])
    return super().get_metadata()


def data_option(data_config: ml_collections.ConfigDict | None, key: str, default: Any) -> Any:
  """`data_config.options[key]`, or `default` for configs without it (the paper's value)."""
  if data_config is not None and 'options' in data_config and key in data_config.options:
    return data_config.options[key]
  return default


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
  """How the training loop reads one dataset, and what evaluation knows about it.

  Attributes:
    tfds_name: the TFDS builder name (with an optional `/config`).
    builder_cls: a local `tfds.core.GeneratorBasedBuilder` that downloads
      nothing and is prepared on first use (subclass `LocalBuilder`); None for
      datasets in the TFDS catalogue (paper variants), which are read with
      `tfds.data_source`.
    train_split / eval_split: TFDS split names.
    make_transforms: (data_config, train) -> grain transformations mapping one
      stored record to the {'x', 'y', ...} dict. Random transforms draw from the
      rng grain passes them, so a pipeline is deterministic given its seed.
    input_to_rgb: batch of x [B, H, W, Cx] -> RGB float32 [B, H, W, 3] in [0, 1]
      for sample grids.
    builder_kwargs: extra keyword arguments for the builder constructor.
    class_names: for datasets whose x is a one-hot layout and whose examples
      carry its class ids as `label` [H, W]: the name of each of the Cx
      classes, which names evaluation's per-class variance (default `class{c}`).
    true_modes: (label_HxW, tfds BuilderConfig or None) -> float32
      [K, H', W', Cy], the K exactly known modes (noise-free targets) of the
      example whose `label` is given, for datasets that know p(y | x) exactly
      (None for a variant without discrete modes).
      Evaluation then measures mode recall and precision
      (`evaluation.metrics.mode_metrics`); it needs `label` in eval batches.
    mode_frequencies: tfds BuilderConfig -> [K], how often each true mode
      occurs in the training data; evaluation then also reports the recall of
      the rarer half of the modes (`mode_recall_rare`).
    mode_tolerance: a sample is "precise" when its mean absolute error to its
      nearest true mode is below this; required with `true_modes`, since only
      the dataset knows its noise level and how far apart its modes are.
    independent_segments: tfds BuilderConfig -> bool, True where every class
      of the layout draws its own mode: the true modes are then all K^|C|
      combinations of the K modes' colours per class, and mode metrics are per
      segment (`evaluation.metrics.segment_mode_metrics`).
  """
  tfds_name: str
  builder_cls: type | None
  train_split: str
  eval_split: str
  make_transforms: Callable[[ml_collections.ConfigDict, bool], Sequence[grain.transforms.Transformation]]
  input_to_rgb: Callable[[np.ndarray], np.ndarray]
  builder_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
  class_names: tuple[str, ...] | None = None
  true_modes: Callable[[np.ndarray, Any], np.ndarray] | None = None
  mode_tolerance: float | None = None
  mode_frequencies: Callable[[Any], np.ndarray] | None = None
  independent_segments: Callable[[Any], bool] | None = None

  def __post_init__(self):
    if self.true_modes is not None and not (self.mode_tolerance or 0) > 0:
      raise ValueError(f'Dataset {self.tfds_name!r} gives true_modes but no mode_tolerance > 0; '
                       f'got {self.mode_tolerance!r}.')
    if self.class_names is not None and not isinstance(self.class_names, tuple):
      raise TypeError(f'Dataset {self.tfds_name!r}: class_names must be a tuple of str; '
                      f'got {type(self.class_names).__name__}.')


DATASETS: dict[str, DatasetSpec] = {}


def manual_dir(dl_manager, dataset: str, needs: str, builder: str) -> epath.Path:
  """The builder's manual_dir, or a one-line FileNotFoundError naming the folder and what it must hold.

  (tfds' own message spans many lines: it repeats the instructions.)
  """
  try:
    return epath.Path(dl_manager.manual_dir)
  except AssertionError:
    folder = getattr(dl_manager, '_manual_dir', None)
    raise FileNotFoundError(f'{dataset} manual_dir {folder} does not exist or is empty; it needs {needs} '
                            f'(see {builder}.MANUAL_DOWNLOAD_INSTRUCTIONS).') from None


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
