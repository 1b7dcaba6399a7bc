"""cGML's tasks (`cgml.task`), each a per-example energy E and a map from G's output to an image.

  direct        E = mean |G - y| (the paper's L1, cgml_iclr2021 §3). The toy
                (§4) and any dataset whose x and y are paired images.
  completion    x = [masked image, mask] (digits_completion): G's output is
                pasted into the hole, y_hat = x (1 - m) + G m, E = mean |y_hat - y|.
  colorization  §5.2: H sees L/100 of x (the grey image read as an sRGB grey),
                G predicts (a, b) normalised to [0, 1] by (v + AB_RANGE) /
                (2 AB_RANGE); E = mean |a - a_gt| + mean |b - b_gt|
                + lambda (KL(p_a || U) + KL(p_b || U)), with p_a, p_b the
                per-image histograms of the predicted a, b made differentiable
                by Gaussian soft binning (`colour.soft_histogram`). The target
                (a, b) come from y by `colour.rgb_to_lab`; samples are
                `colour.lab_to_rgb(L(x), a, b)` (sRGB, D65; losses/colour.py).

E is a per-example mean, so the z step's gradient of the batch sum is each
example's own gradient (methods/cgml.py).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections

from multimodal_jax.losses import colour

TASKS = ["direct", "completion", "colorization"]


class Task(NamedTuple):
  """How G's raw output relates to x and y for one task (see the module docstring)."""
  out_shape: tuple[int, ...]  # G's output (H, W, C)
  encoder_input: Callable[[jax.Array], jax.Array]  # x -> H's input
  energy: Callable[[jax.Array, jax.Array, jax.Array], jax.Array]  # (x, g, y) -> E [B]
  to_image: Callable[[jax.Array, jax.Array], jax.Array]  # (x, g) -> image in [0, 1]


def _per_example_mean(a_Bx_: jax.Array) -> jax.Array:
  return jnp.mean(a_Bx_.reshape(a_Bx_.shape[0], -1), axis=-1)


def _colorization_task(cgml: ml_collections.ConfigDict, y_shape) -> Task:
  """§5.2: G predicts (a, b) in [0, 1]; E = L1 on (a, b) + lambda KL of their histograms to uniform."""

  def energy(x, g_ab, y):
    del x
    ab_gt = (colour.rgb_to_lab(y)[..., 1:] + colour.AB_RANGE) / (2 * colour.AB_RANGE)
    l1 = _per_example_mean(jnp.abs(g_ab[..., 0] - ab_gt[..., 0])) + _per_example_mean(
        jnp.abs(g_ab[..., 1] - ab_gt[..., 1]))
    b = g_ab.shape[0]
    kl = sum(colour.kl_to_uniform(colour.soft_histogram(g_ab[..., i].reshape(b, -1), cgml.histogram_bins))
             for i in range(2))
    return l1 + cgml.kl_weight * kl

  def to_image(x, g_ab):
    lab = jnp.concatenate([colour.grey_to_lightness(x), g_ab * (2 * colour.AB_RANGE) - colour.AB_RANGE],
                          axis=-1)
    return colour.lab_to_rgb(lab)

  return Task(out_shape=tuple(y_shape[1:3]) + (2,),
              encoder_input=lambda x: colour.grey_to_lightness(x) / 100.0, energy=energy, to_image=to_image)


def make_task(cgml: ml_collections.ConfigDict, x_shape, y_shape) -> Task:
  """The `cgml.task` for batches with x of `x_shape` and y of `y_shape` ([B, H, W, C])."""
  if cgml.task == "direct":
    return Task(out_shape=tuple(y_shape[1:]), encoder_input=lambda x: x,
                energy=lambda x, g, y: _per_example_mean(jnp.abs(g - y)),
                to_image=lambda x, g: jnp.clip(g, 0.0, 1.0))

  if cgml.task == "completion":
    c = y_shape[-1]
    if x_shape[-1] != c + 1 or x_shape[1:3] != y_shape[1:3]:
      raise ValueError(f"cgml.task='completion' needs x = [masked image, mask] with {c + 1} channels "
                       f"and y's size; got x {x_shape}, y {y_shape}.")

    def composite(x, g):
      mask = x[..., c:]
      return x[..., :c] * (1.0 - mask) + g * mask

    return Task(out_shape=tuple(y_shape[1:]), encoder_input=lambda x: x,
                energy=lambda x, g, y: _per_example_mean(jnp.abs(composite(x, g) - y)),
                to_image=lambda x, g: jnp.clip(composite(x, g), 0.0, 1.0))

  if cgml.task == "colorization":
    if x_shape[-1] != 1 or y_shape[-1] != 3:
      raise ValueError(f"cgml.task='colorization' needs a grey x and an RGB y; got x {x_shape}, "
                       f"y {y_shape}.")
    return _colorization_task(cgml, y_shape)
  raise ValueError(f"Unknown cgml.task {cgml.task!r}; valid: {TASKS}")
