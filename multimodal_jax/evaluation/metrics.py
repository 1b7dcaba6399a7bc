"""Evaluation metrics of multimodal conditional image synthesis.

Every function takes the samples of a method as `samples_BxNxHxWxC` (B inputs,
N samples per input, values in [0, 1]) — the layout `Method.sample` returns —
and is a pure jnp / numpy function of its arguments. Image distances are any
callable `distance(a, b) -> [...]` that reduces the last three axes
([..., H, W, C] -> [...]) and broadcasts the leading ones, e.g. a
`losses.perceptual.Distance` (LPIPS, or the `pixel` l1 distance when the LPIPS
weights are absent).

  quality     `psnr_ssim_best_and_mean`: dm-pix PSNR / SSIM against ground truth.
  diversity   `mean_pairwise_distance`: mean distance between samples of one input
              (mean pairwise LPIPS in the literature).
              `per_class_pixel_variance`: cimle_semantic_layouts_iccv2019 §4.3,
              Table 1.
  both        `faithfulness_weighted_variance`: cimle_srim_ijcv §5.1.5.
  modes       `mode_metrics`: mode recall and precision against exactly known
              modes (a dataset's `DatasetSpec.true_modes`, e.g. toy_scenes).
"""

from __future__ import annotations

from typing import Callable, Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

Distance = Callable[[jax.Array, jax.Array], jax.Array]

# The IJCV paper's kernel bandwidths (Table 1).
FWV_SIGMAS = (0.3, 0.2, 0.15)


def _check_samples(samples_BxNxHxWxC, ground_truth_BxHxWxC=None) -> None:
  if samples_BxNxHxWxC.ndim != 5:
    raise ValueError(f"samples must be [B, N, H, W, C]; got shape {samples_BxNxHxWxC.shape}.")
  if ground_truth_BxHxWxC is not None:
    b, _, h, w, c = samples_BxNxHxWxC.shape
    if tuple(ground_truth_BxHxWxC.shape) != (b, h, w, c):
      raise ValueError(f"ground truth must be [B, H, W, C] = {(b, h, w, c)} to match the samples; "
                       f"got {tuple(ground_truth_BxHxWxC.shape)}.")


# ------------------------------------------------------------ faithfulness-weighted variance


def faithfulness_weighted_variance_from_distances(d_to_mean_BxN: jax.Array, d_to_truth_BxN: jax.Array,
                                                  sigma: float) -> jax.Array:
  """cimle_srim_ijcv §5.1.5 from precomputed distances (see `faithfulness_weighted_variance`).

  Args:
    d_to_mean_BxN: d(y~_ij, y-bar_j), sample i of input j to the mean sample of input j.
    d_to_truth_BxN: d(y~_ij, y_j), sample i of input j to its ground truth.
    sigma: the Gaussian kernel's bandwidth.

  Returns:
    A scalar: (1 / (B N)) sum_j sum_i w_ij d(y~_ij, y-bar_j),
    w_ij = exp(-d(y~_ij, y_j) / (2 sigma^2)).
  """
  w_BxN = jnp.exp(-d_to_truth_BxN / (2.0 * sigma**2))
  return jnp.mean(w_BxN * d_to_mean_BxN)


def fwv_distances(samples_BxNxHxWxC: jax.Array, ground_truth_BxHxWxC: jax.Array,
                  distance: Distance) -> tuple[jax.Array, jax.Array]:
  """(d(y~_ij, y-bar_j), d(y~_ij, y_j)), each [B, N]; y-bar_j is the pixel-wise mean sample."""
  _check_samples(samples_BxNxHxWxC, ground_truth_BxHxWxC)
  mean_Bx1xHxWxC = jnp.mean(samples_BxNxHxWxC, axis=1, keepdims=True)
  d_to_mean_BxN = distance(samples_BxNxHxWxC, jnp.broadcast_to(mean_Bx1xHxWxC, samples_BxNxHxWxC.shape))
  d_to_truth_BxN = distance(samples_BxNxHxWxC,
                            jnp.broadcast_to(ground_truth_BxHxWxC[:, None], samples_BxNxHxWxC.shape))
  return d_to_mean_BxN, d_to_truth_BxN


def faithfulness_weighted_variance(samples_BxNxHxWxC: jax.Array, ground_truth_BxHxWxC: jax.Array,
                                   distance: Distance, sigma: float) -> jax.Array:
  """Average faithfulness-weighted variance, cimle_srim_ijcv §5.1.5.

  The paper defines

    M = sum_i sum_j w_i d(y~_ij, y-bar_j),   w_i = exp(-d(y~_ij, y_j) / (2 sigma^2)),

  with y~_ij the i-th sample for the j-th input, y-bar_j the mean sample of
  input j (the pixel-wise mean of its N samples), y_j its ground truth and d
  LPIPS; the weight w_i depends on (i, j). The paper reports the "average
  faithfulness-weighted variance" (Table 1) without stating the normaliser. We
  define it as the MEAN over all samples i and inputs j, i.e. M / (N B), so the
  value does not depend on how many samples or inputs were drawn:

    FWV_sigma = (1 / (B N)) sum_{j=1..B} sum_{i=1..N} w_ij d(y~_ij, y-bar_j).

  A sample counts only if it is faithful (close to the ground truth at the
  scale sigma) and adds how far it is from the mean (its spread). Identical
  samples give 0.

  Args:
    samples_BxNxHxWxC: N samples for each of B inputs, in [0, 1].
    ground_truth_BxHxWxC: the B ground-truth targets.
    distance: d(a, b) over the last three axes, e.g. a `perceptual.Distance`.
    sigma: the kernel bandwidth (the paper: 0.3, 0.2, 0.15).

  Returns:
    A scalar.
  """
  d_to_mean_BxN, d_to_truth_BxN = fwv_distances(samples_BxNxHxWxC, ground_truth_BxHxWxC, distance)
  return faithfulness_weighted_variance_from_distances(d_to_mean_BxN, d_to_truth_BxN, sigma)


def fwv_key(distance_name: str, sigma: float) -> str:
  return f"fwv_{distance_name}_sigma{sigma:g}"


def all_fwv(samples_BxNxHxWxC, ground_truth_BxHxWxC, distance: Distance,
            sigmas: Sequence[float] = FWV_SIGMAS) -> dict[float, jax.Array]:
  """`faithfulness_weighted_variance` at several sigmas, computing the distances once."""
  d_to_mean_BxN, d_to_truth_BxN = fwv_distances(samples_BxNxHxWxC, ground_truth_BxHxWxC, distance)
  return {s: faithfulness_weighted_variance_from_distances(d_to_mean_BxN, d_to_truth_BxN, s)
          for s in sigmas}


# ------------------------------------------------------------ quality


def _flat_images(a: jax.Array) -> jax.Array:
  return jnp.reshape(a, (-1,) + tuple(a.shape[-3:]))


def psnr_ssim_best_and_mean(samples_BxNxHxWxC: jax.Array, ground_truth_BxHxWxC: jax.Array
                            ) -> dict[str, jax.Array]:
  """PSNR and SSIM (dm-pix, dynamic range 1) of N samples against the ground truth.

  For each input j and sample i, q_ij = PSNR(y~_ij, y_j) (resp. SSIM). Then

    *_best = mean_j max_i q_ij    (best of N: the sample closest to the truth; each
                                   metric picks its own best sample)
    *_mean = mean_j mean_i q_ij   (mean over N: the expected quality of one sample)

  PSNR = -10 log10 mean((a - b)^2) is +inf for identical images. SSIM uses an
  11x11 Gaussian window (sigma 1.5), narrowed to the image size for smaller images.

  Returns:
    {'psnr_best', 'psnr_mean', 'ssim_best', 'ssim_mean'}: scalars.
  """
  _check_samples(samples_BxNxHxWxC, ground_truth_BxHxWxC)
  b, n, h, w, _ = samples_BxNxHxWxC.shape
  samples_BxNxHxWxC = jnp.asarray(samples_BxNxHxWxC, jnp.float32)
  truth_BxNxHxWxC = jnp.broadcast_to(jnp.asarray(ground_truth_BxHxWxC, jnp.float32)[:, None],
                                     samples_BxNxHxWxC.shape)
  flat_s, flat_t = _flat_images(samples_BxNxHxWxC), _flat_images(truth_BxNxHxWxC)
  psnr_BxN = dm_pix.psnr(flat_s, flat_t).reshape(b, n)
  ssim_BxN = dm_pix.ssim(flat_s, flat_t, filter_size=min(11, h, w)).reshape(b, n)
  return {
      "psnr_best": jnp.mean(jnp.max(psnr_BxN, axis=1)),
      "psnr_mean": jnp.mean(psnr_BxN),
      "ssim_best": jnp.mean(jnp.max(ssim_BxN, axis=1)),
      "ssim_mean": jnp.mean(ssim_BxN),
  }


# ------------------------------------------------------------ diversity


def mean_pairwise_distance(samples_BxNxHxWxC: jax.Array, distance: Distance) -> jax.Array:
  """Diversity: the mean distance between two different samples of the same input.

    D = (1 / B) sum_j (2 / (N (N - 1))) sum_{i < k} d(y~_ij, y~_kj),

  the "mean pairwise LPIPS" of the multimodal-synthesis literature when d is
  LPIPS. Each unordered pair is evaluated once. 0 for identical samples.

  Returns:
    A scalar; needs N >= 2.
  """
  _check_samples(samples_BxNxHxWxC)
  n = samples_BxNxHxWxC.shape[1]
  if n < 2:
    raise ValueError(f"Diversity needs at least 2 samples per input; got {n}.")
  first_P, second_P = np.triu_indices(n, k=1)
  d_BxP = distance(samples_BxNxHxWxC[:, first_P], samples_BxNxHxWxC[:, second_P])
  return jnp.mean(d_BxP)


def per_class_pixel_variance(samples_BxNxHxWxC, labels_BxHxW, num_classes: int
                             ) -> tuple[np.ndarray, float]:
  """Per-class pixel variance across samples, cimle_semantic_layouts_iccv2019 §4.3, Table 1.

  "We compute the variance over the nine images of all pixels that belong to a
  particular category and take the average over all spatial locations and
  colour channels. This yields an average variance for each category in each
  image. Next, we take the average ... over the entire test set":

    v_jc = mean_{(h, w): label_j(h, w) = c} mean_ch Var_i[y~_ij(h, w, ch)]
    V_c  = mean over the inputs j whose layout contains c of v_jc
    overall = mean over the classes c present in some layout of V_c

  Var_i is the population variance (divisor N) over the N samples. (The paper
  first picks 9 samples by k-means over 100; we use the N samples as drawn.)

  Args:
    samples_BxNxHxWxC: samples in [0, 1].
    labels_BxHxW: integer class ids in [0, num_classes).
    num_classes: the number of semantic classes.

  Returns:
    (V_c as float64 [num_classes] with NaN for classes absent from every
    layout, overall).
  """
  _check_samples(samples_BxNxHxWxC)
  samples_BxNxHxWxC = np.asarray(samples_BxNxHxWxC, np.float64)
  labels_BxHxW = np.asarray(labels_BxHxW)
  if labels_BxHxW.shape != samples_BxNxHxWxC.shape[:1] + samples_BxNxHxWxC.shape[2:4]:
    raise ValueError(f"labels must be [B, H, W] = {samples_BxNxHxWxC.shape[:1] + samples_BxNxHxWxC.shape[2:4]};"
                     f" got {labels_BxHxW.shape}.")
  var_BxHxW = np.var(samples_BxNxHxWxC, axis=1).mean(axis=-1)
  in_class_BxHxWxK = labels_BxHxW[..., None] == np.arange(num_classes)
  count_BxK = in_class_BxHxWxK.sum(axis=(1, 2))
  total_BxK = np.einsum("bhw,bhwk->bk", var_BxHxW, in_class_BxHxWxK)
  with np.errstate(invalid="ignore", divide="ignore"):
    v_BxK = np.where(count_BxK > 0, total_BxK / np.maximum(count_BxK, 1), np.nan)
    present_K = np.sum(count_BxK > 0, axis=0)
    per_class_K = np.where(present_K > 0, np.nansum(v_BxK, axis=0) / np.maximum(present_K, 1), np.nan)
  overall = float(np.mean(per_class_K[present_K > 0])) if np.any(present_K > 0) else float("nan")
  return per_class_K, overall


# ------------------------------------------------------------ exactly known modes


def mode_errors(samples_BxNxHxWxC, true_modes_BxKxHxWxC) -> np.ndarray:
  """Mean absolute error of every sample to every true mode of its input: [B, N, K].

  e_ijk = mean over H, W, C of |y~_ij - m_jk|, with m_jk the k-th true mode of
  input j (e.g. a noise-free render, `DatasetSpec.true_modes`).
  """
  _check_samples(samples_BxNxHxWxC)
  samples_BxNxHxWxC = np.asarray(samples_BxNxHxWxC, np.float32)
  true_modes_BxKxHxWxC = np.asarray(true_modes_BxKxHxWxC, np.float32)
  b, _, h, w, c = samples_BxNxHxWxC.shape
  modes_shape = true_modes_BxKxHxWxC.shape
  if len(modes_shape) != 5 or modes_shape[:1] + modes_shape[2:] != (b, h, w, c):
    raise ValueError(f"true modes must be [B, K, H, W, C] with (B, H, W, C) = {(b, h, w, c)} to match the "
                     f"samples; got {modes_shape}.")
  # One input at a time: [N, K, H, W, C] differences, not [B, N, K, H, W, C].
  return np.stack([np.mean(np.abs(samples_NxHxWxC[:, None] - modes_KxHxWxC[None]), axis=(2, 3, 4))
                   for samples_NxHxWxC, modes_KxHxWxC in zip(samples_BxNxHxWxC, true_modes_BxKxHxWxC)])


def mode_metrics(samples_BxNxHxWxC, true_modes_BxKxHxWxC, tolerance: float) -> dict[str, float]:
  """Mode recall and precision of samples against the exactly known modes of each input.

  Each sample y~_ij is assigned to its nearest true mode
  k*_ij = argmin_k e_ijk, e_ijk = mean |y~_ij - m_jk| (`mode_errors`), and is
  *precise* when e_ijk* < tolerance (the dataset's `DatasetSpec.mode_tolerance`;
  toy_scenes: 0.035, above the texture noise of real images, below half the mode
  separation).

    precision    = mean_{i,j} [e_ijk* < tol]               share of precise samples
    recall       = mean_j |{k*_ij : sample ij precise}| / K  share of the K modes hit
                                                            by >= 1 precise sample
    recall_nearest = mean_j |{k*_ij}| / K                   the same without the
                                                            tolerance

  The samples of a deterministic method are identical, so both recalls are at
  most 1/K; `recall_nearest` is exactly 1/K for them however blurry the output
  (the per-pixel mean of the modes, what L1/L2 regression tends to, is not
  precise, so its `recall` is 0).

  Args:
    samples_BxNxHxWxC: N samples for each of B inputs.
    true_modes_BxKxHxWxC: the K true modes of each input.
    tolerance: the precision threshold on e_ijk*.

  Returns:
    {'mode_recall', 'mode_recall_nearest', 'mode_precision'}.
  """
  if tolerance is None or not tolerance > 0:
    raise ValueError(f"The mode tolerance must be > 0; got {tolerance}.")
  errors_BxNxK = mode_errors(samples_BxNxHxWxC, true_modes_BxKxHxWxC)
  num_modes = errors_BxNxK.shape[-1]
  nearest_BxN = np.argmin(errors_BxNxK, axis=-1)
  precise_BxN = np.min(errors_BxNxK, axis=-1) < tolerance
  hit_BxK = np.zeros((errors_BxNxK.shape[0], num_modes), bool)
  hit_nearest_BxK = np.zeros_like(hit_BxK)
  for j in range(errors_BxNxK.shape[0]):
    hit_BxK[j, nearest_BxN[j][precise_BxN[j]]] = True
    hit_nearest_BxK[j, nearest_BxN[j]] = True
  return {
      "mode_recall": float(np.mean(hit_BxK.sum(axis=1) / num_modes)),
      "mode_recall_nearest": float(np.mean(hit_nearest_BxK.sum(axis=1) / num_modes)),
      "mode_precision": float(np.mean(precise_BxN)),
  }
