"""What a method gives the one training loop, and the registry of methods.

A method is a bundle of *pure* functions. The loop (train.py) owns everything
else: the mesh, jit with shardings and donation, the data iterator, metrics,
checkpoints. A method never imports the loop.

The unit the loop iterates over is a *round*: it takes one global batch from
the data iterator and calls `Method.run_round`, which calls the method's
compiled steps (the loop compiled them from `Method.steps`) in whatever order
the method's algorithm needs: `regression` does one update; conditional IMLE
(Alg. 1 of cimle_srim_ijcv) does a selection step over the pool S followed by
L update steps on minibatches of S; cGML (Alg. 1 of cgml_iclr2021) alternates
z, Z-network and generator steps. `Method.steps_per_round` optimiser updates
happen per round, and `state.step` counts optimiser updates.

Every step has the signature `step(state, batch) -> (state, metrics)` where
`metrics` is a flat dict of scalar float arrays (per-step means). The state is
a `common.MethodState` (step, rng, one `common.Network` record per network)
extended with the method's own fields. Randomness comes from named streams
`common.step_rngs(state.rng, state.step, "codes", ...)` inside the step, so a
resumed run replays the same random stream. Batches carry each example's
stable `index` in the training set besides x and y.

A method module provides `make_method(config, batch_spec, prepared)`, may
provide `validate_config(config)` (checks of its own keys, before anything
compiles) and `prepare(config, train_source)` (state computed once over the
training set, multimodal_jax/prepared.py), and is registered in `METHODS`.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Mapping, Protocol

import jax
import ml_collections
import numpy as np

from multimodal_jax import config_lib
from multimodal_jax.models import registry as model_registry

PyTree = Any
Batch = Mapping[str, jax.Array]
Prepared = Mapping[str, np.ndarray]
# A prepared array of this name ([N], one weight per training example) makes the
# train iterator draw examples with replacement in proportion to it.
SAMPLING_WEIGHTS = "sampling_weights"
Metrics = dict[str, jax.Array]
# Extras named GRADATION_PREFIX + <class id> sweep the noise of that class's segment
# (the diversity loss); `evaluate` turns them into the noise-linking ratio.
GRADATION_PREFIX = "gradation_"
StepFn = Callable[[PyTree, Batch], tuple[PyTree, Metrics]]


class CompiledSteps(Protocol):
  """The loop's compiled versions of `Method.steps`, called by name.

  Calling one also accumulates its metrics on device (no host sync).
  """

  def __call__(self, name: str, state: PyTree, batch: Batch) -> PyTree:
    ...


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method bound to a config, as the loop sees it.

  Attributes:
    init: rng -> initial state, a `common.MethodState` (or subclass). The loop traces it with
      `jax.eval_shape` for an abstract restore target, and jits it with
      replicated output shardings.
    steps: name -> pure step function (state, batch) -> (state, metrics).
    run_round: (compiled_steps, state, batch) -> state. Host-side
      orchestration of one round; must not sync with the device.
    sample: (state, x_BxHxWxC, rng, num_samples) -> samples [B, N, H', W', C']
      in [0, 1]. Pure; the loop jits it with `num_samples` static.
    steps_per_round: optimiser updates one round makes.
    description: a one-line summary for logs (e.g. the distance in use).
    learning_rates: {network name: step -> learning rate}, logged by the loop
      as `learning_rate` (one network) or `learning_rate/<name>`.
    extras: method-specific inference functions for the sample/evaluate
      CLIs (`sample --extra=NAME`), e.g. "interpolate" (IMLE: outputs along
      a line between two codes) or "trajectory" (cGML: outputs as z
      converges). Pure; the caller jits them with the sample's signature.
    timed_steps: the loop adds `seconds`, each step's run time on the device
      (read by host callbacks, `train.CompiledSteps.timed_step`), to every
      step's metrics (IMLE: `imle.time_steps`).
  """
  init: Callable[[jax.Array], PyTree]
  steps: Mapping[str, StepFn]
  run_round: Callable[[CompiledSteps, PyTree, Batch], PyTree]
  sample: Callable[[PyTree, jax.Array, jax.Array, int], jax.Array]
  steps_per_round: int = 1
  description: str = ""
  learning_rates: Mapping[str, Callable[[int], Any]] = dataclasses.field(default_factory=dict)
  extras: Mapping[str, Callable[..., Any]] = dataclasses.field(default_factory=dict)
  timed_steps: bool = False


def single_step_round(step_name: str = "train") -> Callable[[CompiledSteps, PyTree, Batch], PyTree]:
  """The round of a method with one update per batch."""

  def run_round(compiled: CompiledSteps, state: PyTree, batch: Batch) -> PyTree:
    return compiled(step_name, state, batch)

  return run_round


METHODS: dict[str, str] = {
    # name -> module defining `make_method(config, batch_spec, prepared) -> Method`,
    # where batch_spec is the global batch as ShapeDtypeStructs and prepared
    # the module's `prepare` arrays ({} without one; multimodal_jax/prepared.py).
    "regression": "multimodal_jax.methods.regression",
    "imle": "multimodal_jax.methods.imle",
    "cgml": "multimodal_jax.methods.cgml",
    "latent_codes": "multimodal_jax.methods.latent_codes",
    "diversity": "multimodal_jax.methods.diversity",
    "flow_matching": "multimodal_jax.methods.flow_matching",
}


def register_method(name: str, module: str) -> None:
  """Adds a method defined outside this package (e.g. from `--import=my_pkg.my_method`)."""
  if METHODS.get(name, module) != module:
    raise ValueError(f"Method {name!r} is registered twice ({METHODS[name]} and {module}).")
  METHODS[name] = module


def check_method_sections(config: ml_collections.ConfigDict) -> None:
  """Raises ValueError naming a key of a method's section (`config.imle`, `config.cgml`, ...) it does not read.

  Every registered method module may declare `CONFIG_SCHEMA` ({section:
  {key: None or a base section}}, `config_lib.check_section_keys`); its
  sections are checked wherever they appear (a regression config that keeps
  an unused `imle` section too), so an unlocked config's typo there fails
  before anything compiles.
  """
  for module in METHODS.values():
    for section, schema in getattr(importlib.import_module(module), "CONFIG_SCHEMA", {}).items():
      config_lib.check_section_keys(config, section, schema)


def check_method_name(name: str) -> None:
  if name not in METHODS:
    raise ValueError(f"Unknown method {name!r}; valid methods: {sorted(METHODS)}")


def validate_method_config(config: ml_collections.ConfigDict) -> None:
  """Runs the method module's own `validate_config(config)`, if it has one.

  A method checks the keys it alone reads (its model name, its section of
  the config) so that bad values fail before anything compiles.
  """
  check_method_name(config.method)
  module = importlib.import_module(METHODS[config.method])
  if hasattr(module, "validate_config"):
    module.validate_config(config)


def make_method(config: ml_collections.ConfigDict, batch_spec: Batch,
                prepared: Prepared | None = None) -> Method:
  """Builds the method named by `config.method`, bound to `config`, the batch shapes and its prepared state.

  Its networks and distances compute in the run's `config.compute_dtype`
  (models/registry.py `compute_dtype_scope`): one place for every method.
  """
  check_method_name(config.method)
  module = importlib.import_module(METHODS[config.method])
  with model_registry.compute_dtype_scope(config_lib.resolve_compute_dtype(config)):
    return module.make_method(config, batch_spec, dict(prepared or {}))
