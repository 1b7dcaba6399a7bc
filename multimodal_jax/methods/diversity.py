"""`diversity`: a base network trained with the diversity loss (diversity_loss_yang_liu_cai, Eq. 1-8, Algorithm 1).

The generator G(l, n) is any registry generator (`config.model`) fed the
layout l (one-hot, `x`) and the one-channel noise input of §IV-A built from
n ~ U[-1, 1]^{|C|} (`losses.diversity.noise_channel`; the batch must carry
the layout's class ids `label`). Two base networks (`diversity.base`):

  * 'pix2pix' (§III-A): G a U-Net with dropout (`model.name='unet'`), D a
    PatchGAN (`config.discriminator`, `name='patchgan'`) on concat(l, image).
      L_D (Eq. 1, maximised) as the logistic loss of D on real and generated
      pairs, halved as in pix2pix: 0.5 (softplus(-D(l, i)) + softplus(D(l, G(l, n))));
      L_G (Eq. 2) with pix2pix's non-saturating form of the adversarial term,
      -log D(l, G(l, n)) = softplus(-D(l, G(l, n))), plus alpha ||G(l, n) - i||_1
      (alpha = `diversity.l1_weight`, 100).
    D and G are two networks of the state with their own Adam states; each
    round runs the compiled "discriminator" step then the "generator" step on
    the same batch (Eq. 3, alternating). `state.step` counts G updates.
  * 'crn' (§III-B): G a CRN with one noise channel (`model.name='crn'`,
    `noise_channels=1`), L_B = `config.distance` (the VGG content loss; the
    pixel l1 on the local default) between G(l, n) and the image. With
    `layer_weights=()` its weights are equal-contribution ones (IJCV §3.7)
    from the prepared state (`prepare`, methods/calibration.py); the VGG
    weights live in the state's `frozen` (`common.split_frozen`).

The diversity loss (Eq. 7, `losses.diversity`) is added with weight beta
(`diversity.beta`; 0.1 with pix2pix, 10 with CRN, §IV-A; 0 = the base network
alone, `:no_diversity`), G(l, n) and G(l, 0) coming from one forward pass over
a batch of two per example (Algorithm 1). The base loss is taken on G(l, n),
the output Eq. 2 names.

`diversity.noise_input = False` (only with beta = 0, `:no_noise_input`) feeds
zeros in the noise channel, which is the base network as published (a zero
input channel changes nothing): pix2pix's only noise is then its dropout, the
setting of pix2pix's "the generator simply learned to ignore the noise" that
the paper cites (§III-A, §IV-B "Comparison").

Sampling (which sees only x) takes the class ids as argmax of the one-hot layout
x, and draws a fresh n per sample (and, for pix2pix, keeps dropout on, as
pix2pix does at test time; `diversity.sample_dropout = False` turns it off,
also on a trained run: `evaluate --override=diversity.sample_dropout=false`,
to tell the variation the noise input makes from the dropout's). Extras `gradation_<c>` (class id c; §IV-B, Fig. 2-3): for
each input, the outputs as n^c sweeps from -1 to 1 with the other entries fixed
at one random draw; `evaluate` turns them into the noise-linking ratio.
"""

from __future__ import annotations

import inspect
from typing import Callable, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from multimodal_jax import config_lib
from multimodal_jax.losses import diversity as div
from multimodal_jax.losses import perceptual
from multimodal_jax.methods import base
from multimodal_jax.methods import calibration
from multimodal_jax.methods import common
from multimodal_jax.models import registry as models

BASES = ("pix2pix", "crn")
# The prepared state's config sections (besides data): the base, and the distance's calibration.
PREPARE_DEPENDS_ON = ("diversity", "distance")
# The keys of `config.diversity` this module reads (`config_lib.check_section_keys`).
CONFIG_SCHEMA = {"diversity": dict.fromkeys(("base", "beta", "l1_weight", "lambda_c", "noise_input",
                                             "sample_dropout"))}
# Keys `evaluate --override` / `sample --override` may change on a trained run (inference.apply_overrides).
INFERENCE_KEYS = ("diversity.sample_dropout",)


def validate_config(config: ml_collections.ConfigDict) -> None:
  dv = config.diversity
  config_lib.require(config, dv.base in BASES, "diversity.base", f"valid: {list(BASES)}")
  config_lib.require(config, config.model.name in models.model_names(models.GENERATOR), "model.name",
                     f"valid: {models.model_names(models.GENERATOR)}")
  if dv.base == "pix2pix":
    config_lib.require(config, config.discriminator.name in models.model_names(models.DISCRIMINATOR),
                       "discriminator.name", f"valid: {models.model_names(models.DISCRIMINATOR)}")
  config_lib.require(config, dv.beta >= 0, "diversity.beta", "must be >= 0 (0 = the base network alone)")
  config_lib.require(config, _noise_input(dv) or dv.beta == 0, "diversity.noise_input",
                     "the diversity loss (beta > 0) needs the noise input")
  config_lib.require(config, dv.lambda_c > 0, "diversity.lambda_c", "must be > 0")
  config_lib.require(config, dv.l1_weight >= 0, "diversity.l1_weight", "must be >= 0")


def prepare(config: ml_collections.ConfigDict, train_source) -> dict[str, np.ndarray]:
  """Equal-contribution weights of 'crn''s L_B with layer_weights=() (nothing otherwise; reads no example)."""
  if config.diversity.base != "crn":  # pix2pix's L_B is the GAN loss and l1: no distance
    return {}
  return calibration.calibration_arrays({"loss": config.distance}, train_source)


def _noise_input(dv: ml_collections.ConfigDict) -> bool:
  # Runs recorded before the key existed (their run_info.json) had the noise input.
  return dv.get("noise_input", True)


class _Parts(NamedTuple):
  """What the step and sampling builders share: the config, shapes and networks of one method."""
  dv: ml_collections.ConfigDict  # config.diversity
  num_classes: int
  generator: nn.Module
  discriminator: nn.Module | None  # pix2pix's PatchGAN; None for 'crn'
  distance: common.FrozenDistance | None  # L_B of 'crn', without its network's arrays (state.frozen)
  takes_train: bool  # the generator's __call__ takes `train` (dropout on)
  noise_input: bool  # diversity.noise_input

  @property
  def gan(self) -> bool:
    return self.discriminator is not None

  def generate(self, params, x, z, rng, paired: bool = False, dropout: bool = True):
    """G(x, z); `paired`: x is two halves that share one dropout mask (`div.paired_outputs`)."""
    kwargs = {"train": dropout, "paired_dropout": paired} if self.takes_train else {}
    return self.generator.apply({"params": params}, x, z, rngs={"dropout": rng}, **kwargs)

  def logits(self, params, x, y):
    return self.discriminator.apply({"params": params}, x, y.astype(x.dtype))

  def channel(self, label, n_BxC):
    """The noise input channel; zeros without `diversity.noise_input` (the base network as published)."""
    z = div.noise_channel(label, n_BxC)
    return z if self.noise_input else jnp.zeros_like(z)

  def noise_of(self, rng, batch):
    n = div.sample_noise(rng, batch["x"].shape[0], self.num_classes)
    return n, self.channel(batch["label"], n)

  def outputs_for_noise(self, state, x, n_NxBxC, rngs_N):
    """[B, N, H, W, C]: G(l, n_j) for N noise vectors per input (the layout's argmax is its label)."""
    params = state.networks["generator"].params
    label = jnp.argmax(x, axis=-1)
    dropout = self.dv.get("sample_dropout", True)  # runs recorded before the key sampled with dropout
    y_NxB = jax.lax.map(lambda a: self.generate(params, x, self.channel(label, a[0]), a[1], dropout=dropout),
                        (n_NxBxC, rngs_N))
    return jnp.swapaxes(y_NxB, 0, 1)


def _make_generator_step(parts: _Parts) -> base.StepFn:
  dv = parts.dv

  def generator_step(state: common.MethodState, batch):
    """Eq. 8: L_B(G(l, n)) + beta L_Div, G(l, n) and G(l, 0) from one batch of two (Algorithm 1)."""
    rngs = common.step_rngs(state.rng, state.step, "noise", "dropout")
    n, z = parts.noise_of(rngs["noise"], batch)
    x, y = batch["x"], batch["y"]

    def loss_fn(params):
      if dv.beta > 0:
        y_n, y_0 = div.paired_outputs(lambda x2, z2: parts.generate(params, x2, z2, rngs["dropout"], paired=True), x, z)
        l_div = jnp.mean(div.diversity_loss(y_0, y_n, batch["label"], n, dv.lambda_c))
      else:
        y_n, l_div = parts.generate(params, x, z, rngs["dropout"]), jnp.zeros(())
      if parts.gan:  # Eq. 2, non-saturating adversarial term
        adversarial = jnp.mean(jax.nn.softplus(-parts.logits(state.networks["discriminator"].params, x, y_n)))
        l1 = jnp.mean(jnp.abs(y_n - y)) * div.IMAGE_RANGE_SCALE  # pix2pix's [-1, 1] units
        l_base = adversarial + dv.l1_weight * l1
        terms = {"adversarial": adversarial, "l1": l1}
      else:
        l_base = jnp.mean(common.bind(parts.distance, state.frozen)(y_n, y))
        terms = {}
      return l_base + dv.beta * l_div, {"base_loss": l_base, "diversity_loss": l_div, **terms}

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.networks["generator"].params)
    state = state.apply_gradients("generator", grads)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms}

  return generator_step


def _make_discriminator_step(parts: _Parts) -> base.StepFn:

  def discriminator_step(state: common.MethodState, batch):
    """Eq. 1 as a loss to minimise, on real pairs and on G's (frozen) outputs; `step` does not advance."""
    rngs = common.step_rngs(state.rng, state.step, "discriminator_noise", "discriminator_dropout")
    _, z = parts.noise_of(rngs["discriminator_noise"], batch)
    x, y = batch["x"], batch["y"]
    fake = jax.lax.stop_gradient(parts.generate(state.networks["generator"].params, x, z,
                                                rngs["discriminator_dropout"]))

    def loss_fn(params):
      real_logits, fake_logits = parts.logits(params, x, y), parts.logits(params, x, fake)
      loss = 0.5 * (jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits)))
      return loss, {"real_accuracy": jnp.mean(real_logits > 0), "fake_accuracy": jnp.mean(fake_logits < 0)}

    (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.networks["discriminator"].params)
    state = state.apply_gradients("discriminator", grads, count_step=False)
    return state, {"loss": loss, "grad_norm": optax.tree.norm(grads), **terms}

  return discriminator_step


def _make_sampling(parts: _Parts) -> tuple[Callable, dict[str, Callable]]:
  """`sample` (a fresh n per sample) and the `gradation_<c>` extras (§IV-B, Fig. 2-3)."""

  def sample(state, x, rng, num_samples):
    """N samples per input, a fresh n ~ U[-1, 1]^{|C|} each."""
    noise_rng, dropout_rng = jax.random.split(rng)
    n = jax.random.uniform(noise_rng, (num_samples, x.shape[0], parts.num_classes), minval=-1.0, maxval=1.0)
    return parts.outputs_for_noise(state, x, n, jax.random.split(dropout_rng, num_samples))

  def gradation(c):
    def sweep(state, x, rng, num_samples):
      """n^c from -1 to 1 in N steps, the other entries fixed at one draw; one dropout mask."""
      noise_rng, dropout_rng = jax.random.split(rng)
      n = jax.random.uniform(noise_rng, (1, x.shape[0], parts.num_classes), minval=-1.0, maxval=1.0)
      n = jnp.repeat(n, num_samples, axis=0).at[:, :, c].set(jnp.linspace(-1.0, 1.0, num_samples)[:, None])
      return parts.outputs_for_noise(state, x, n, jnp.repeat(dropout_rng[None], num_samples, axis=0))
    return sweep

  # Without the noise input there is no n^c to sweep (and so no noise-linking metric).
  extras = ({f"{base.GRADATION_PREFIX}{c}": gradation(c) for c in range(parts.num_classes)}
            if parts.noise_input else {})
  return sample, extras


def make_method(config: ml_collections.ConfigDict, batch_spec: base.Batch,
                prepared: base.Prepared | None = None) -> base.Method:
  """The diversity-loss method bound to `config`, the batch shapes and the prepared calibration (if any)."""
  dv = config.diversity
  if "label" not in batch_spec:
    raise ValueError(f"The diversity loss needs the layout's class ids (`label` [H, W]) in the batches of "
                     f"{config.data.name!r}; it has {sorted(batch_spec)}.")
  x_shape, y_shape = tuple(batch_spec["x"].shape[1:]), tuple(batch_spec["y"].shape[1:])
  code_shape = x_shape[:2] + (1,)
  generator = models.make_model(config.model, models.ModelIO.of(batch_spec, code_shape=code_shape))
  gan = dv.base == "pix2pix"
  discriminator = models.make_model(config.discriminator, models.ModelIO.of(batch_spec)) if gan else None
  distance = perceptual.make_distance(config.distance)
  if not gan:
    distance = calibration.calibrated(distance, "loss", prepared or {}, "diversity")
  # pix2pix uses no distance: nothing of it goes into the state.
  frozen_distances, frozen = common.split_frozen({} if gan else {"loss": distance})
  parts = _Parts(dv=dv, num_classes=x_shape[-1], generator=generator, discriminator=discriminator,
                 distance=frozen_distances.get("loss"),
                 takes_train="train" in inspect.signature(generator.__call__).parameters,
                 noise_input=_noise_input(dv))

  def init(rng):
    g_rng, d_rng, state_rng = jax.random.split(rng, 3)
    x = jnp.zeros((1,) + x_shape, jnp.float32)
    tx = common.make_optimizer(config.optimizer, config.train.num_steps)
    variables = generator.init({"params": g_rng, "dropout": g_rng}, x, jnp.zeros((1,) + code_shape),
                               **({"train": False} if parts.takes_train else {}))
    networks = {"generator": common.Network.create(variables, tx)}
    if gan:
      networks["discriminator"] = common.Network.create(
          discriminator.init(d_rng, x, jnp.zeros((1,) + y_shape)), tx)
    return common.create_state(rng=state_rng, networks=networks, frozen=jax.tree.map(jnp.asarray, frozen))

  def run_round(compiled: base.CompiledSteps, state, batch):
    if gan:
      state = compiled("discriminator", state, batch)
    return compiled("generator", state, batch)

  steps = {"generator": _make_generator_step(parts)}
  if gan:
    steps["discriminator"] = _make_discriminator_step(parts)
  sample, extras = _make_sampling(parts)
  learning_rates = (common.learning_rates(config, generator=config.optimizer, discriminator=config.optimizer)
                    if gan else common.learning_rates(config, generator=config.optimizer))
  base_text = (f"pix2pix ({config.model.name} + {config.discriminator.name}, alpha = {dv.l1_weight})" if gan
               else f"{config.model.name}, L_B = {distance.describe()}")
  text = (f"diversity loss (Eq. 7-8: beta = {dv.beta}, lambda_c = {dv.lambda_c}) on {base_text}" if dv.beta > 0
          else f"the base network alone: {base_text}, "
               f"{'with the noise input channel' if parts.noise_input else 'no noise input (as published)'}")
  return base.Method(init=init, steps=steps, run_round=run_round, sample=sample, steps_per_round=1,
                     learning_rates=learning_rates, extras=extras, description=text)
