"""Config helpers: the fields every config declares, `:arg` parsing, validation.

Configs are locked ConfigDicts: every key is declared in the config file, so
`--config.train.num_stpes=5` fails at once with the key's name. `validate`
checks values (ranges, names, divisibility) before anything is compiled.
"""

from __future__ import annotations

import ast
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.losses import perceptual

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")


def parse_arg(arg: str | None, lazy: bool = False, **spec: Any) -> ml_collections.ConfigDict:
  """Parses `variant=B,runlocal,steps=3` into typed fields (big_vision style).

  Args:
    arg: the text after `:` in `--config=configs/x.py:arg`, or None.
    lazy: accept keys that `spec` does not declare (typed by literal_eval).
    **spec: name -> default; a bare name in `arg` sets a bool default to True,
      `name=value` is converted to the default's type.

  Returns:
    A locked ConfigDict with every key of `spec`.
  """
  out = ml_collections.ConfigDict(dict(spec))
  for token in filter(None, (arg or "").split(",")):
    name, has_value, value = token.partition("=")
    name = name.strip()
    if name not in spec and not lazy:
      raise ValueError(f"Unknown config argument {name!r}; valid: {sorted(spec)}")
    default = spec.get(name)
    if not has_value:
      if default is not None and not isinstance(default, bool):
        raise ValueError(f"Config argument {name!r} needs a value ({name}=...)")
      out[name] = True
    elif isinstance(default, bool):
      out[name] = value.lower() in ("1", "true", "yes")
    elif isinstance(default, str):
      out[name] = value
    elif default is None:
      try:
        out[name] = ast.literal_eval(value)
      except (ValueError, SyntaxError):
        out[name] = value
    else:
      out[name] = type(default)(value)
  out.lock()
  return out


def base_config() -> ml_collections.ConfigDict:
  """Every field the loop reads, with defaults. Config files override values."""
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.method = "regression"
  # The dtype networks compute in (`resolve_compute_dtype`); parameters stay float32.
  c.compute_dtype = "auto"

  c.data = ml_collections.ConfigDict()
  c.data.name = "toy_scenes"
  c.data.builder_config = ""  # A TFDS BuilderConfig name of the dataset; '' = its default.
  c.data.data_dir = ""  # '' -> $MULTIMODAL_JAX_DATA_DIR or ~/tensorflow_datasets.
  c.data.batch_size = 32  # Global, over all devices and processes.
  c.data.num_workers = 0  # grain worker processes per host (0 = in the main process).
  c.data.options = ml_collections.ConfigDict()  # Dataset-specific transform options.

  c.model = ml_collections.ConfigDict()
  c.model.name = "conv_generator"
  c.model.features = 32
  c.model.num_blocks = 4
  # SR generators: add the upsampled input to the output (models/registry.py GLOBAL_SKIPS).
  c.model.global_skip = "auto"

  # The image distance of the method's loss (losses/perceptual.py); logged at start.
  c.distance = perceptual.default_distance_config("pixel")

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_steps = 0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 0.0  # 0 = no clipping.

  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 1000
  c.train.log_every = 50
  c.train.checkpoint_every = 250
  c.train.sample_every = 250  # 0 = only at the end.
  c.train.num_grid_inputs = 4  # Rows of the sample grid.
  c.train.num_grid_samples = 4  # Samples per row.
  c.train.max_checkpoints_to_keep = 2
  # PSNR/SSIM of the method's samples on a fixed eval batch, to TensorBoard as eval/* (periodic_eval.py).
  c.train.eval_every = 0  # 0 = never during training.
  c.train.eval_inputs = 16
  c.train.eval_samples = 4
  c.train.async_checkpointing = True
  return c


def set_runlocal_schedule(config: ml_collections.ConfigDict, checkpoint_every: int = 4) -> None:
  """The `:runlocal` smoke-test schedule shared by the configs: 6 steps, every output exercised."""
  config.train.num_steps = 6
  config.train.log_every = 2
  config.train.checkpoint_every = checkpoint_every
  config.train.sample_every = checkpoint_every
  config.train.num_grid_inputs = 2
  config.train.num_grid_samples = 2
  if config.train.eval_every:
    config.train.eval_every = checkpoint_every
  config.train.eval_inputs = 2
  config.train.eval_samples = 2


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the key of the first invalid value."""
  # Imported here: the registries import the method and dataset modules.
  from multimodal_jax.data import registry as data_registry  # pylint: disable=g-import-not-at-top
  from multimodal_jax.methods import base as methods_base  # pylint: disable=g-import-not-at-top
  from multimodal_jax.models import registry as models_registry  # pylint: disable=g-import-not-at-top

  check = functools.partial(require, config)

  t = config.train
  for key in ("num_steps", "log_every", "checkpoint_every", "num_grid_inputs", "num_grid_samples",
              "max_checkpoints_to_keep"):
    check(t[key] > 0, f"train.{key}", "must be > 0")
  check(t.sample_every >= 0, "train.sample_every", "must be >= 0 (0 = only at the end)")
  check(t.eval_every >= 0, "train.eval_every", "must be >= 0 (0 = never during training)")
  check(t.eval_inputs > 0, "train.eval_inputs", "must be > 0")
  check(t.eval_samples > 0, "train.eval_samples", "must be > 0")
  check(config.data.batch_size > 0, "data.batch_size", "must be > 0")
  n = jax.device_count()
  check(config.data.batch_size % n == 0, "data.batch_size",
          f"the global batch must be divisible by the number of devices ({n})")
  check(config.data.num_workers >= 0, "data.num_workers", "must be >= 0")
  check(config.optimizer.learning_rate > 0, "optimizer.learning_rate", "must be > 0")
  check(config.optimizer.warmup_steps >= 0, "optimizer.warmup_steps", "must be >= 0")
  check(config.optimizer.name in ("adam", "adamw"), "optimizer.name", "valid: ['adam', 'adamw']")
  check(config.optimizer.schedule in ("constant", "cosine", "poly"), "optimizer.schedule",
          "valid: ['constant', 'cosine', 'poly']")
  check(config.method in methods_base.METHODS, "method", f"valid: {sorted(methods_base.METHODS)}")
  check(config.compute_dtype in COMPUTE_DTYPES, "compute_dtype", f"valid: {list(COMPUTE_DTYPES)}")
  names = data_registry.dataset_names()
  check(config.data.name in names, "data.name", f"valid: {names}")
  for section in ("model", "discriminator"):
    # Widths, depths and counts of any registered model: a 0 or negative one would
    # fail deep in Flax (or train a degenerate network silently).
    cfg = config.get(section)
    if cfg is not None and cfg.get("name"):
      for key in models_registry.SIZE_FIELDS:
        if key in cfg:
          check(models_registry.is_positive_size(cfg[key]), f"{section}.{key}",
                "must be a positive int (or a non-empty tuple of them)")
  if "global_skip" in config.model:
    check(config.model.global_skip in models_registry.GLOBAL_SKIPS, "model.global_skip",
          f"valid: {list(models_registry.GLOBAL_SKIPS)}")
  methods_base.validate_method_config(config)


def resolve_compute_dtype(config: ml_collections.ConfigDict) -> jnp.dtype:
  """The dtype every network of the run computes in: `config.compute_dtype`, 'auto' resolved.

  'auto' is bfloat16 on GPU and TPU, whose matrix units run it at 2x (GPU) to
  4x+ the float32/TF32 rate, and float32 on CPU, where bfloat16 only loses
  precision (experiments/bench_imle.py on a 2-core CPU: the small-RRDB
  selection 0.84x the float32 samples/s, its update step no faster).
  Parameters, optimiser state, losses, distances and the IMLE argmin stay
  float32 whatever this says
  (models/registry.py `compute_dtype_scope`). A config restored from a run
  recorded before the key existed computed in float32.
  """
  name = config.compute_dtype if "compute_dtype" in config else "float32"
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={name!r} is invalid: valid: {list(COMPUTE_DTYPES)}")
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


def require(config: ml_collections.ConfigDict, ok: bool, key: str, why: str) -> None:
  """Raises ValueError naming `config.<key>` and its value (or that it is missing) unless `ok`."""
  if not ok:
    try:
      shown = f"config.{key}={_get(config, key)!r} is invalid"
    except (KeyError, AttributeError):  # e.g. a config written before the key existed
      shown = f"config.{key} is missing"
    raise ValueError(f"{shown}: {why}")


def require_whole_rounds(config: ml_collections.ConfigDict, steps_per_round: int, round_key: str) -> None:
  """Raises ValueError unless `train.num_steps` is a whole number of rounds, naming the nearest valid values.

  `train.num_steps` counts optimiser updates, and a method whose round makes
  several of them (`Method.steps_per_round`: IMLE's L updates per selection,
  cGML's inner steps) runs each round whole: any other budget would overshoot.
  Called by such a method's `validate_config`; `round_key` names the key that
  sets the round's length.
  """
  num_steps = config.train.num_steps
  if num_steps % steps_per_round:
    below = num_steps // steps_per_round * steps_per_round
    nearest = " or ".join(str(v) for v in (below, below + steps_per_round) if v > 0)
    require(config, False, "train.num_steps",
            f"must be a multiple of {round_key}={steps_per_round} (the updates of one round, which runs "
            f"whole); nearest valid: {nearest}")


def _get(config, dotted):
  for part in dotted.split("."):
    config = config[part]
  return config
