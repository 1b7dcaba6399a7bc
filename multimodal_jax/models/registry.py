"""The model registry: `config.model.name` (or `config.discriminator.name`) -> a Flax module.

Every network of every method is built here, from its own config section and
the shapes of the data:

    module = registry.make_model(config.model, registry.ModelIO.of(batch_spec))

A builder `build(cfg, io) -> nn.Module | dict[str, nn.Module]` reads the
fields of its section it needs (`cfg.features`, ...); a family of networks
trained together (cGML's encoder, generator and Z-network) comes back as a
dict of named modules. A GAN's second network has its own section,
`config.discriminator`, with its own `name`.

Generators follow one calling convention:

    module.apply(variables, x_BxHxWxC, z=None, **options) -> y [B, H*s, W*s, Cy] in [0, 1]

`z` is an optional code: a spatial code [B, H, W, Cz] at x's size, or a vector
[B, Dz] broadcast over space; it is concatenated to x's channels
(`concat_code`). A generator whose codes act otherwise (latent drop-out masks,
cGML's z on the sphere) says so in its docstring. `options` are the
network's own switches (RRDB / ConvGenerator: `bilinear` upsampling).

Super-resolution generators (RRDB, ConvGenerator) take `model.global_skip`:
'bicubic' (or 'bilinear') adds the upsampled input to the network's output,
so the network learns only the residual and starts exactly at the reference
upsampling (`upsample_reference`); 'none' is the papers' plain network;
'auto' (the default) means 'bicubic' when the input is an RGB image at a
lower resolution than the output, else 'none'.

Adding a model: write its module and builder, then one line in `MODELS` (its
kind says which methods can use it: `model_names(GENERATOR)`).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
from typing import Callable, Iterator, Mapping, Union

from absl import logging
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

Built = Union[nn.Module, Mapping[str, nn.Module]]
Builder = Callable[[ml_collections.ConfigDict, "ModelIO"], Built]

GENERATOR = "generator"  # one module following the generator convention below
CGML = "cgml"  # cGML's {encoder, generator, znet}
DISCRIMINATOR = "discriminator"  # a GAN's D(x, y) -> logits, built from config.discriminator
BRANCHED = "branched"  # n hypotheses per input: apply(x, z=None) -> [B, N, H, W, Cy] (models/dropout_codes.py)
VELOCITY = "velocity"  # a flow's field: apply(x, y_t, t) -> v [B, H, W, Cy] (models/velocity_unet.py)

MODELS: dict[str, tuple[str, str]] = {
    # name -> ("module:builder", kind)
    "conv_generator": ("multimodal_jax.models.conv_generator:build", GENERATOR),
    "rrdb": ("multimodal_jax.models.rrdb:build", GENERATOR),
    "crn": ("multimodal_jax.models.crn:build", GENERATOR),
    "dropout_crn": ("multimodal_jax.models.dropout_codes:build", BRANCHED),
    "cgml_mlp": ("multimodal_jax.models.cgml_nets:build_mlp", CGML),
    "cgml_unet": ("multimodal_jax.models.cgml_nets:build_unet", CGML),
    "unet": ("multimodal_jax.models.pix2pix:build_unet", GENERATOR),
    "patchgan": ("multimodal_jax.models.pix2pix:build_patchgan", DISCRIMINATOR),
    "velocity_unet": ("multimodal_jax.models.velocity_unet:build", VELOCITY),
}


# Fields of a model's config section that are widths, depths or counts, whichever
# model reads them: `validation.validate` requires each present one to be a
# positive int (or a tuple of them, e.g. CRN's per-level features), so a 0 fails
# before compilation instead of as a ZeroDivisionError in an initialiser.
SIZE_FIELDS = ("features", "num_blocks", "growth", "num_layers", "num_downs", "num_levels", "num_branches",
               "num_outputs", "base_height", "base_width", "h_dim", "hidden", "power_iterations")


def is_positive_size(value) -> bool:
  """A positive int (not a bool), or a non-empty tuple/list of them."""
  values = tuple(value) if isinstance(value, (tuple, list)) else (value,)
  return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


GLOBAL_SKIPS = ("auto", "none", "bicubic", "bilinear")


@dataclasses.dataclass(frozen=True)
class ModelIO:
  """What a builder knows of the data: one example's input and output shapes, and the code's.

  Attributes:
    x_shape: (H, W, Cx) of the input.
    y_shape: (H', W', Cy) of the output the network must produce.
    code_shape: the shape of one example's code z, if the method feeds one
      ((h, w, c) spatial, or (D,)); () when there is none.
  """
  x_shape: tuple[int, ...]
  y_shape: tuple[int, ...]
  code_shape: tuple[int, ...] = ()

  @classmethod
  def of(cls, batch_spec: Mapping[str, jax.ShapeDtypeStruct], code_shape: tuple[int, ...] = (),
         y_shape: tuple[int, ...] | None = None) -> "ModelIO":
    """From the global batch's shapes ([B, ...] per key)."""
    return cls(x_shape=tuple(batch_spec["x"].shape[1:]),
               y_shape=tuple(y_shape or batch_spec["y"].shape[1:]), code_shape=tuple(code_shape))

  @property
  def upsample_factor(self) -> int:
    """The spatial factor from input to output (1 for same-size tasks)."""
    factor = self.y_shape[0] // self.x_shape[0]
    if factor < 1 or factor * self.x_shape[0] != self.y_shape[0] or factor * self.x_shape[1] != self.y_shape[1]:
      raise ValueError(f"The output's spatial shape {self.y_shape[:2]} is not an integer multiple of the "
                       f"input's {self.x_shape[:2]}.")
    return factor

  def resolve_global_skip(self, skip: str) -> str:
    """`model.global_skip` for these shapes: 'auto' -> 'bicubic' for RGB super-resolution, else 'none'."""
    if skip not in GLOBAL_SKIPS:
      raise ValueError(f"Unknown global_skip {skip!r}; valid: {list(GLOBAL_SKIPS)}")
    if skip != "auto":
      return skip
    return "bicubic" if self.upsample_factor > 1 and self.x_shape[-1] == self.y_shape[-1] else "none"


def upsample_reference(x_BxhxwxC: jax.Array, factor: int, method: str = "bicubic") -> jax.Array:
  """The input upsampled by `factor` with `method` (jax.image.resize), clipped to [0, 1].

  The trivial super-resolution baseline every SR result is compared with
  (evaluate's reference row) and the base a `global_skip` model adds its
  residual to. Bicubic is Keys' kernel with a = -0.5, as PIL's.
  """
  b, h, w, c = x_BxhxwxC.shape
  up = jax.image.resize(jnp.asarray(x_BxhxwxC, jnp.float32), (b, h * factor, w * factor, c), method)
  return jnp.clip(up, 0.0, 1.0)


def model_names(kind: str | None = None) -> list[str]:
  """The registered names (of one kind: `GENERATOR`, `CGML`, ...)."""
  return sorted(name for name, (_, k) in MODELS.items() if kind in (None, k))


def register_model(name: str, builder: str, kind: str = GENERATOR) -> None:
  """Adds a model defined outside this package: `builder` is 'module:function'."""
  if MODELS.get(name, (builder, kind)) != (builder, kind):
    raise ValueError(f"Model {name!r} is registered twice ({MODELS[name]} and {(builder, kind)}).")
  MODELS[name] = (builder, kind)


def get_builder(name: str) -> Builder:
  if name not in MODELS:
    raise ValueError(f"Unknown model name {name!r}; valid: {model_names()}")
  module, _, function = MODELS[name][0].partition(":")
  return getattr(importlib.import_module(module), function)


def code_shape(cfg: ml_collections.ConfigDict, x_shape: tuple[int, ...]) -> tuple[int, ...] | None:
  """The code shape (one example) the model named by `cfg.name` takes for inputs x_shape, if it says.

  A model module may define `code_shape(cfg, x_shape)` (CRN: its noise
  channels, or the noise encoder's input); None means the method chooses
  (IMLE: x's spatial size + `imle.code_channels`).
  """
  module = importlib.import_module(MODELS[cfg.name][0].partition(":")[0]) if cfg.name in MODELS else None
  shape = getattr(module, "code_shape", lambda *_: None)(cfg, tuple(x_shape))
  return None if shape is None else tuple(shape)


def make_model(cfg: ml_collections.ConfigDict, io: ModelIO, dtype: jnp.dtype | None = None) -> Built:
  """The network(s) named by `cfg.name`, built from `cfg`'s fields for the shapes in `io`.

  Every module with a `dtype` field computes in `dtype` (default: the
  enclosing `compute_dtype_scope`'s; float32 outside one). Builders need not
  know: the dtype is set here, after they return.
  """
  built = get_builder(cfg.name)(cfg, io)
  return with_compute_dtype(built, current_compute_dtype() if dtype is None else dtype)


# The compute dtype of the networks being built. A context variable rather than
# an argument of every method's make_method: methods build their networks from
# config *sections* (config.model, config.distance), and a method written
# outside this package gets mixed precision without knowing about it.
# `methods.base.make_method` enters the scope with the run's
# `config_lib.resolve_compute_dtype(config)`.
_COMPUTE_DTYPE: contextvars.ContextVar[jnp.dtype] = contextvars.ContextVar(
    "compute_dtype", default=jnp.dtype(jnp.float32))


@contextlib.contextmanager
def compute_dtype_scope(dtype) -> Iterator[None]:
  """Networks built inside (`make_model`, `perceptual.make_distance`) compute in `dtype`.

  Parameters stay float32 (Linen's param_dtype) and generators return float32
  images, so losses, distances and the optimiser never see the compute dtype.
  """
  token = _COMPUTE_DTYPE.set(jnp.dtype(dtype))
  try:
    yield
  finally:
    _COMPUTE_DTYPE.reset(token)


def current_compute_dtype() -> jnp.dtype:
  """The dtype of the enclosing `compute_dtype_scope` (float32 outside any)."""
  return _COMPUTE_DTYPE.get()


def with_compute_dtype(built: Built, dtype) -> Built:
  """`built` (a module or a dict of modules) with `dtype` in every module that has that field.

  A module without one (a user's model) keeps computing as it was written;
  the log says so once when the dtype asked for is not float32.
  """
  dtype = jnp.dtype(dtype)
  if not isinstance(built, nn.Module):
    return {name: with_compute_dtype(module, dtype) for name, module in built.items()}
  if "dtype" in {f.name for f in dataclasses.fields(built)}:
    return built.clone(dtype=dtype)
  if dtype != jnp.float32:
    logging.log_first_n(logging.WARNING, "%s has no `dtype` field: it computes as written, not in %s.", 1,
                        type(built).__name__, dtype)
  return built


def concat_code(x_BxHxWxC: jax.Array, z: jax.Array | None) -> jax.Array:
  """The code convention: x with z concatenated to its channels (a vector z broadcast over space)."""
  if z is None:
    return x_BxHxWxC
  if z.ndim == 2:
    z = jnp.broadcast_to(z[:, None, None, :], x_BxHxWxC.shape[:3] + z.shape[-1:])
  return jnp.concatenate([x_BxHxWxC, z.astype(x_BxHxWxC.dtype)], axis=-1)
