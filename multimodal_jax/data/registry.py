"""Dataset registry: the name in `config.data.name` -> how to build, read and show it.

Every dataset yields per-example dicts of numpy arrays with the same keys:
  x: the conditioning input, float32 [H, W, Cx] (a one-hot layout, an LR image in
     [0, 1], a masked image, a grey image ...).
  y: the target, float32 [H', W', Cy] in [0, 1].
  plus dataset-specific extras (e.g. `mode` int32 for toy_scenes, `mask`).
Batching, sharding and shuffling are generic (`data/pipeline.py`); a dataset
only says how one stored record becomes one such dict.

Adding a built-in dataset: define its `DatasetSpec` as a module-level constant
in its module under `data/`, then one line in `DATASETS`. A module outside the
package calls `register` instead (`--import=my_data`, docs/extending.md).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
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
    modes_depend_on_input: tfds BuilderConfig -> bool, True where each input has
      its own set of modes, of its own size, that vary only some of its segments
      (toy_scenes_conditional: fixed and free classes). `true_modes` then gives
      each input's set [K_j, H', W', Cy]; the `mode_sets` evaluator measures
      recall and precision over each input's own set (a sample matches a mode
      when every segment of `label` is within `mode_tolerance`) and the spread
      of the samples where the modes agree (spurious variation); the `modes`
      evaluator, which compares whole images, does not apply.
    degrade: for super-resolution data, how an input was made from its target:
      (uint8 HR [H, W, 3], factor) -> uint8 LR. The SR protocol's LR-PSNR
      passes samples through it (a sample consistent with its input scores
      high; the ground truth itself scores its quantisation error only).
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
  modes_depend_on_input: Callable[[Any], bool] | None = None
  degrade: Callable[[np.ndarray, int], np.ndarray] | None = None

  def __post_init__(self):
    if self.true_modes is not None and not (self.mode_tolerance or 0) > 0:
      raise ValueError(f'Dataset {self.tfds_name!r} gives true_modes but no mode_tolerance > 0; '
                       f'got {self.mode_tolerance!r}.')
    if self.class_names is not None and not isinstance(self.class_names, tuple):
      raise TypeError(f'Dataset {self.tfds_name!r}: class_names must be a tuple of str; '
                      f'got {type(self.class_names).__name__}.')


# Built-in datasets: name -> "module:SPEC", the module-level DatasetSpec that
# defines it. Resolved on first use, so asking for one dataset imports only its
# module (and what that module needs), not every dataset's dependencies.
DATASETS: dict[str, str] = {
    'cityscapes_layouts': 'multimodal_jax.data.street_layouts:CITYSCAPES_LAYOUTS',
    'digits_completion': 'multimodal_jax.data.digits_completion:DIGITS_COMPLETION',
    'digits_completion_box': 'multimodal_jax.data.digits_box:DIGITS_COMPLETION_BOX',
    'div2k_x8': 'multimodal_jax.data.paper_sr:DIV2K_X8',
    'facades': 'multimodal_jax.data.facades:FACADES',
    'gta5_layouts': 'multimodal_jax.data.street_layouts:GTA5_LAYOUTS',
    'imagenet_colorization': 'multimodal_jax.data.colorization_photos:IMAGENET_COLORIZATION',
    'imagenet_sr': 'multimodal_jax.data.paper_sr:IMAGENET_SR',
    'lfw_landmarks': 'multimodal_jax.data.pets_lfw:LFW_LANDMARKS',
    'local_photos_sr': 'multimodal_jax.data.local_photos_sr:LOCAL_PHOTOS_SR',
    'pets_normals': 'multimodal_jax.data.pets_lfw:PETS_NORMALS',
    'stl10_colorization': 'multimodal_jax.data.colorization_photos:STL10_COLORIZATION',
    'toy3d': 'multimodal_jax.data.toy3d:TOY3D',
    'toy_scenes': 'multimodal_jax.data.toy_scenes:TOY_SCENES',
    'toy_scenes_colorization': 'multimodal_jax.data.toy_scenes:TOY_SCENES_COLORIZATION',
    'toy_scenes_conditional': 'multimodal_jax.data.toy_scenes:TOY_SCENES_CONDITIONAL',
}

# The specs known so far: built-in ones once resolved, and those that users'
# modules `register`.
_SPECS: dict[str, DatasetSpec] = {}


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
  """Adds a dataset defined outside this package (a user's module, `--import=my_data`)."""
  if name in DATASETS:
    raise ValueError(f"Dataset {name!r} is a built-in dataset ({DATASETS[name]}); register yours "
                     "under another name.")
  if name in _SPECS:
    raise ValueError(f"Dataset {name!r} is registered twice.")
  if inspect.isabstract(spec.builder_cls):  # tfds would fail only when it first builds the dataset.
    cls = spec.builder_cls
    raise TypeError(f"Dataset {name!r}: its builder {cls.__qualname__} ({inspect.getsourcefile(cls)}) does not "
                    f"define {', '.join(sorted(cls.__abstractmethods__))}, which a tfds builder must.")
  _SPECS[name] = spec


def get_dataset(name: str) -> DatasetSpec:
  """The spec of dataset `name`; a built-in one's module is imported on first use."""
  if name not in _SPECS:
    if name not in DATASETS:
      raise ValueError(f"Unknown dataset {name!r}; valid names: {dataset_names()}")
    _SPECS[name] = _resolve(name)
  return _SPECS[name]


def dataset_names() -> list[str]:
  """Every dataset name: the built-in ones and those registered by users' modules (imports nothing)."""
  return sorted(set(DATASETS) | set(_SPECS))


def _resolve(name: str) -> DatasetSpec:
  module, _, attribute = DATASETS[name].partition(':')
  spec = getattr(importlib.import_module(module), attribute)
  if not isinstance(spec, DatasetSpec):
    raise TypeError(f"DATASETS[{name!r}] = {DATASETS[name]!r} is a {type(spec).__name__}, not a DatasetSpec.")
  return spec
