"""A config's values checked before anything compiles: `validate(config)`.

It lives at the loop's level, not in `config_lib` (a leaf every layer may
use), because it asks the registries: the method's own `validate_config`, the
dataset names, the models' size fields. `main` calls it before training and
`train.train_and_evaluate` again for callers that skip `main`.
"""

from __future__ import annotations

import functools

import jax
import ml_collections

from multimodal_jax import config_lib
from multimodal_jax.data import registry as data_registry
from multimodal_jax.evaluation import evaluators
from multimodal_jax.methods import base as methods_base
from multimodal_jax.methods import common
from multimodal_jax.models import consistency
from multimodal_jax.models import registry as models_registry


def validate(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first unknown key (`config_lib.check_known_keys`) or invalid value."""
  config_lib.check_known_keys(config)  # An unlocked config's typo, before any value is read,
  methods_base.check_method_sections(config)  # in the base sections or a method's own.
  check = functools.partial(config_lib.require, config)

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
  check(config.optimizer.name in common.OPTIMIZERS, "optimizer.name", f"valid: {list(common.OPTIMIZERS)}")
  check(config.optimizer.schedule in common.SCHEDULES, "optimizer.schedule", f"valid: {list(common.SCHEDULES)}")
  check(config.method in methods_base.METHODS, "method", f"valid: {sorted(methods_base.METHODS)}")
  check(config.compute_dtype in config_lib.COMPUTE_DTYPES, "compute_dtype",
        f"valid: {list(config_lib.COMPUTE_DTYPES)}")
  names = data_registry.dataset_names()
  check(config.data.name in names, "data.name", f"valid: {names}")
  if "evals" in config:  # a config written before the key: evaluate uses the default list
    why = evaluators.check_names(config.evals)
    check(why is None, "evals", str(why))
  if config.train.get("final_evals"):
    why = evaluators.check_names(tuple(config.train.final_evals))
    check(why is None, "train.final_evals", str(why))
  _validate_model_sections(config)
  methods_base.validate_method_config(config)


def _validate_model_sections(config: ml_collections.ConfigDict) -> None:
  """The size fields of `config.model` (and `config.discriminator`), and the model's global skip."""
  check = functools.partial(config_lib.require, config)
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
  if "consistency" in config.model:
    check(config.model.consistency in consistency.CONSISTENCIES, "model.consistency",
          f"valid: {list(consistency.CONSISTENCIES)}")
