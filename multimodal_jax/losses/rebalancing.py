"""Dataset and loss rebalancing of conditional IMLE from layouts (cimle_semantic_layouts_iccv2019 §3.4).

Rare appearances are drawn into the pool more often and weigh more in the loss:

  C_k(p)   the mean colour of class p in training image k (where p appears);
  D_p      a Gaussian kernel density estimate over {C_k(p)}_k;
  R_p(k) = 1 / D_p(C_k(p)) if class p appears in image k, else 0   (the rarity score),
           here divided by its mean over the images that show class p (`rarity_scores`);

  dataset rebalancing: the pool S is split among the `top` classes with the
      largest total area, each part sampled in proportion to R_p;
  loss rebalancing: M^k[j, l] = R_p(k) for pixel (j, l) of class p, normalised
      to (0, 1] by its maximum, multiplies the distance (downsampled to every
      feature layer by `perceptual.resize_mask`).

The per-class mean makes R a ratio, which is what lets the mask compare classes.
1 / D_p is a density's inverse: a colour *volume*, scaled by how spread class
p's colours are. Divided by the largest entry of an image, the raw score ranks
classes by that spread, not by rarity: a class whose colour never varies has a
near-delta density, a raw score ~1e-7 of a varying class's, and drops out of the
loss and the selection (its segments rendered wrong and varied freely). Over the
KDE's own points the mean of 1 / D_p estimates the volume its colours occupy, so

  R_p(k) / mean_k' R_p(k') = (1 / volume) / D_p(C_k(p)),

how many times less likely C_k(p) is than if class p's appearances were spread
evenly: 1 for every image of a class whose appearances are equally likely (one
colour or several), > 1 for the rare ones the paper up-weights, < 1 for the
common ones. Every entry of the mask stays in (0, 1] as §3.4 asks; it is no
smaller than 1 / n^2 (n training images: a KDE's density at its own point is
between 1 / n of its kernel's peak and the peak), where the raw score has no
bound. Dataset rebalancing draws class p's images with R_p(k) / sum_k' R_p(k'),
which a per-class scale leaves unchanged. (The authors' released code,
gen_dataset_weight.py, divides the raw 1 / D_p by the image's maximum as the
paper writes; every class of their GTA-5 photos varies in colour, so none has
a near-delta density there.)

The statistics (`class_colour_means`, `kde_density`, `rarity_scores`,
`pool_sampling_weights`) are numpy, computed once over the training set by the
IMLE method's `prepare`; `rarity_mask` is jnp, inside the compiled steps.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def class_colour_means(label_BxHxW: np.ndarray, image_BxHxWxC: np.ndarray, num_classes: int
                       ) -> tuple[np.ndarray, np.ndarray]:
  """C_k(p) of §3.4 for a batch: (means [B, P, C], areas [B, P] in pixels).

  means[k, p] = sum_ij L^k_ijp I^k_ij / sum_ij L^k_ijp, NaN where class p is absent.
  """
  one_hot_BxHxWxP = np.eye(num_classes, dtype=np.float64)[np.asarray(label_BxHxW)]
  areas_BxP = one_hot_BxHxWxP.sum(axis=(1, 2))
  sums_BxPxC = np.einsum("bhwp,bhwc->bpc", one_hot_BxHxWxP, np.asarray(image_BxHxWxC, np.float64))
  with np.errstate(invalid="ignore", divide="ignore"):
    means_BxPxC = sums_BxPxC / areas_BxP[..., None]
  return means_BxPxC, areas_BxP


def kde_density(points_NxD: np.ndarray, queries_MxD: np.ndarray, bandwidth_factor: float | None = None,
                chunk: int = 4096) -> np.ndarray:
  """Gaussian KDE of `points` evaluated at `queries`: [M].

  The kernel covariance is the points' covariance times factor^2, factor =
  Scott's rule n^(-1 / (d + 4)) by default (as scipy.stats.gaussian_kde). A
  ridge of 1e-9 of the mean variance (plus 1e-12) keeps a singular covariance
  (e.g. a class of one colour) invertible.
  """
  points_NxD, queries_MxD = np.asarray(points_NxD, np.float64), np.asarray(queries_MxD, np.float64)
  n, d = points_NxD.shape
  factor = n**(-1.0 / (d + 4)) if bandwidth_factor is None else bandwidth_factor
  cov_DxD = np.atleast_2d(np.cov(points_NxD, rowvar=False)) if n > 1 else np.zeros((d, d))
  cov_DxD = cov_DxD * factor**2
  cov_DxD += (1e-9 * np.trace(cov_DxD) / d + 1e-12) * np.eye(d)  # a ridge relative to the spread
  inv_DxD = np.linalg.inv(cov_DxD)
  norm = 1.0 / (n * np.sqrt(np.linalg.det(2 * np.pi * cov_DxD)))
  out = np.empty(len(queries_MxD))
  for start in range(0, len(queries_MxD), chunk):  # memory O(chunk * n)
    diff_MxNxD = queries_MxD[start:start + chunk, None] - points_NxD[None]
    mahalanobis_MxN = np.einsum("mnd,de,mne->mn", diff_MxNxD, inv_DxD, diff_MxNxD)
    out[start:start + chunk] = norm * np.exp(-0.5 * mahalanobis_MxN).sum(axis=1)
  return out


RARITY_SCALES = ("class_mean", "paper")  # `imle.rebalance_scale`


def rarity_scores(means_NxPxC: np.ndarray, bandwidth_factor: float | None = None,
                  scale: str = "class_mean") -> np.ndarray:
  """R_p(k) of §3.4 relative to class p's mean: [N, P] float32, 0 where class p is absent from image k.

  scale='class_mean' (`imle.rebalance_scale`, the default): R_p(k) = (1 / D_p(C_k(p))) /
  mean_{k' showing p} (1 / D_p(C_k'(p))): dimensionless, mean 1 over the images that show p, so classes
  compare by rarity, not by how spread their colours are (module docstring). scale='paper': the raw
  1 / D_p(C_k(p)) as §3.4 and the authors' code write it (a class of one colour drops out of the mask).
  """
  if scale not in RARITY_SCALES:
    raise ValueError(f"Unknown rarity scale {scale!r}; valid: {list(RARITY_SCALES)}")
  n, num_classes, _ = means_NxPxC.shape
  rarity_NxP = np.zeros((n, num_classes), np.float64)
  for p in range(num_classes):
    present = ~np.isnan(means_NxPxC[:, p, 0])
    if present.any():
      colours = means_NxPxC[present, p]
      inverse = 1.0 / np.maximum(kde_density(colours, colours, bandwidth_factor), 1e-300)
      if scale == "class_mean":
        inverse /= inverse.max()  # first, so that the mean of inverses up to 1e300 cannot overflow
        inverse /= inverse.mean()
      rarity_NxP[present, p] = inverse
  return rarity_NxP.astype(np.float32)


def pool_sampling_weights(rarity_NxP: np.ndarray, areas_NxP: np.ndarray, top: int = 5) -> np.ndarray:
  """Per-example weights [N] of the rebalanced pool (§3.4 "Dataset Rebalancing").

  The pool is split equally among the `top` classes of largest total area; the
  part of class p draws image k with probability R_p(k) / sum_k' R_p(k'). Each
  slot of S drawn from the mixture of these parts gives the same distribution
  per slot (and |S| / top slots per class in expectation), as one weight per
  image: w_k = sum_{p in top} R_p(k) / sum_k' R_p(k').
  """
  total_area_P = np.asarray(areas_NxP, np.float64).sum(axis=0)
  top_classes = np.argsort(-total_area_P, kind="stable")[:top]
  rarity_NxP = np.asarray(rarity_NxP, np.float64)
  weights_N = np.zeros(rarity_NxP.shape[0])
  for p in top_classes:
    if rarity_NxP[:, p].sum() > 0:
      weights_N += rarity_NxP[:, p] / rarity_NxP[:, p].sum()
  return weights_N / len(top_classes)


def rarity_mask(label_BxHxW: jax.Array, rarity_BxP: jax.Array) -> jax.Array:
  """M^_i of §3.4: [B, H, W] with R_p(i) on the pixels of class p, divided by its maximum -> (0, 1]."""
  mask_BxHxW = jnp.take_along_axis(rarity_BxP[:, None, :], label_BxHxW.reshape(label_BxHxW.shape[0], 1, -1),
                                   axis=-1).reshape(label_BxHxW.shape)
  return mask_BxHxW / jnp.maximum(jnp.max(mask_BxHxW, axis=(1, 2), keepdims=True), 1e-30)
