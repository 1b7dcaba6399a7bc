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
              `sampled_pairwise_distance`: the same over a fixed number of random
              pairs (cimle_srim_ijcv §5.2: 40 pairs for each of 100 layouts).
              `per_class_pixel_variance`: per-class pixel variance across samples;
              `clustered_per_class_variance`: the full cimle_semantic_layouts_iccv2019
              §4.3 / Table 1 protocol (k-means into 9 clusters, one sample each,
              10 repeats).
  both        `faithfulness_weighted_variance`: cimle_srim_ijcv §5.1.5.
  modes       `mode_metrics`: mode recall and precision against exactly known
              modes (a dataset's `DatasetSpec.true_modes`, e.g. toy_scenes).
              `mode_set_metrics`, `spurious_variation`: where each input has its
              own set of modes (toy_scenes_conditional).
"""

from __future__ import annotations

from typing import Callable, Sequence

import dm_pix
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax.models import registry as models_registry

Distance = Callable[[jax.Array, jax.Array], jax.Array]

# The IJCV paper's kernel bandwidths (Table 1).
FWV_SIGMAS = (0.3, 0.2, 0.15)
# cimle_srim_ijcv §5.2: "40 pairs of output images for each of 100 input semantic layouts".
PAIRWISE_NUM_PAIRS = 40
# cimle_semantic_layouts_iccv2019 §4.3: 9 clusters (CRN's 9 outputs), the procedure repeated 10 times.
NUM_CLUSTERS = 9
CLUSTER_REPEATS = 10


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


REFERENCE_UPSAMPLING = "bicubic"


def is_super_resolution(x_BxhxwxC: np.ndarray, y_BxHxWxC: np.ndarray) -> bool:
  """Whether (x, y) is an RGB super-resolution pair: y is x's channels at an integer larger size."""
  (h, w, c), (hh, ww, cc) = x_BxhxwxC.shape[1:], y_BxHxWxC.shape[1:]
  return c == cc and hh > h and hh % h == 0 and ww * h == hh * w


def reference_upsampling_metrics(x_BxhxwxC: np.ndarray, y_BxHxWxC: np.ndarray,
                                 method: str = REFERENCE_UPSAMPLING) -> dict[str, float]:
  """PSNR / SSIM of the input upsampled by `method` (the trivial SR baseline) on the same inputs.

  Returns {'<method>/psnr', '<method>/ssim'}: means over the inputs, computed
  exactly as a model's `psnr_mean` / `ssim_mean` (one "sample" per input).
  """
  factor = y_BxHxWxC.shape[1] // x_BxhxwxC.shape[1]
  reference_BxHxWxC = models_registry.upsample_reference(jnp.asarray(x_BxhxwxC), factor, method)
  q = psnr_ssim_best_and_mean(reference_BxHxWxC[:, None], jnp.asarray(y_BxHxWxC))
  return {f"{method}/psnr": float(q["psnr_mean"]), f"{method}/ssim": float(q["ssim_mean"])}


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


def random_distinct_pairs(rng: jax.Array, batch_size: int, num_samples: int, num_pairs: int
                          ) -> tuple[jax.Array, jax.Array]:
  """Indices of `num_pairs` random pairs of different samples for each of `batch_size` inputs.

  If num_samples >= 2 num_pairs, the pairs are disjoint: a random permutation of
  the N samples paired off, so every pair is two samples that no other pair
  uses, as when each pair is two fresh outputs (cimle_srim_ijcv §5.2). Otherwise
  they are `num_pairs` different unordered pairs {i, k}, i != k, drawn without
  replacement from the N (N - 1) / 2 (pairs then share samples). Either way the
  mean distance over the pairs estimates, without bias, the mean over all pairs.

  Args:
    rng: a jax PRNG key; input j uses `jax.random.split(rng, batch_size)[j]`.
    batch_size: B.
    num_samples: N, the samples per input.
    num_pairs: P <= N (N - 1) / 2.

  Returns:
    (first_BxP, second_BxP): int32 sample indices, first != second.
  """
  n, p = num_samples, num_pairs
  if p < 1 or p > n * (n - 1) // 2:
    raise ValueError(f"Cannot draw {p} different pairs from {n} samples per input: needs "
                     f"1 <= num_pairs <= N (N - 1) / 2 = {n * (n - 1) // 2}.")
  keys_B = jax.random.split(rng, batch_size)
  if n >= 2 * p:
    perm_BxN = jax.vmap(lambda key: jax.random.permutation(key, n))(keys_B)
    return perm_BxN[:, 0:2 * p:2], perm_BxN[:, 1:2 * p:2]
  first_Q, second_Q = (jnp.asarray(i, jnp.int32) for i in np.triu_indices(n, k=1))
  q_BxP = jax.vmap(lambda key: jax.random.choice(key, first_Q.shape[0], (p,), replace=False))(keys_B)
  return first_Q[q_BxP], second_Q[q_BxP]


def distance_of_pairs(samples_BxNxHxWxC: jax.Array, first_BxP: jax.Array, second_BxP: jax.Array,
                      distance: Distance) -> jax.Array:
  """d(y~_{first_jp, j}, y~_{second_jp, j}) for every input j and pair p: [B, P]."""
  _check_samples(samples_BxNxHxWxC)
  pick = jax.vmap(lambda samples_NxHxWxC, i_P: samples_NxHxWxC[i_P])
  return distance(pick(samples_BxNxHxWxC, first_BxP), pick(samples_BxNxHxWxC, second_BxP))


def sampled_pairwise_distance(samples_BxNxHxWxC: jax.Array, distance: Distance, num_pairs: int,
                              rng: jax.Array) -> jax.Array:
  """Diversity over random pairs: cimle_srim_ijcv §5.2 ("40 pairs ... for each of 100 layouts").

    D_P = (1 / (B P)) sum_j sum_{p=1..P} d(y~_{a_jp, j}, y~_{b_jp, j}),

  with (a_jp, b_jp) the P pairs of different samples of input j drawn by
  `random_distinct_pairs` (disjoint when N >= 2 P, e.g. the paper's 40 pairs of
  80 outputs). Its expectation is `mean_pairwise_distance`; with P = N (N - 1) / 2
  it is exactly that.

  Args:
    samples_BxNxHxWxC: N samples for each of B inputs.
    distance: d(a, b) over the last three axes.
    num_pairs: P, at most N (N - 1) / 2.
    rng: a jax PRNG key; the value is deterministic given it.

  Returns:
    A scalar.
  """
  _check_samples(samples_BxNxHxWxC)
  b, n = samples_BxNxHxWxC.shape[:2]
  first_BxP, second_BxP = random_distinct_pairs(rng, b, n, num_pairs)
  return jnp.mean(distance_of_pairs(samples_BxNxHxWxC, first_BxP, second_BxP, distance))


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
  first picks 9 samples by k-means over 100; this function uses the N samples as
  given, and `clustered_per_class_variance` runs the whole protocol.)

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


def kmeans(points_NxD: np.ndarray, num_clusters: int, rng: np.random.Generator,
           max_iterations: int = 100) -> np.ndarray:
  """Plain k-means: k-means++ seeding, then Lloyd's iterations; the cluster of every point, [N].

  Seeding (Arthur & Vassilvitskii 2007): the first centre is a uniformly random
  point, each next one a point drawn with probability proportional to its squared
  distance to the nearest centre so far (uniformly among the points not yet
  chosen when every point coincides with a centre). Lloyd's iterations then
  alternate assignment to the nearest centre (ties to the lower index) and
  centres = cluster means (an empty cluster keeps its centre) until the
  assignment stops changing. Finally every empty cluster takes the point farthest
  from its centre among clusters of two or more points, so all `num_clusters`
  clusters are non-empty (N >= num_clusters; with fewer distinct points than
  clusters some clusters hold copies of one image).

  Numpy on the host, deterministic given `rng`; no scikit-learn.

  Args:
    points_NxD: the points (here: flattened images).
    num_clusters: K <= N.
    rng: numpy generator for the seeding.
    max_iterations: cap on Lloyd's iterations.
  """
  points_NxD = np.asarray(points_NxD, np.float64)
  n, k = points_NxD.shape[0], num_clusters
  if not 1 <= k <= n:
    raise ValueError(f"k-means into {k} clusters needs at least {k} points; got {n}.")
  # Exact squared distances to the seeds (data points): copies of a seed are at exactly 0.
  chosen = [int(rng.integers(n))]
  d2_N = np.sum((points_NxD - points_NxD[chosen[0]])**2, axis=1)
  for _ in range(1, k):
    weights_N = d2_N.copy()
    weights_N[chosen] = 0.0
    if weights_N.sum() > 0:
      chosen.append(int(rng.choice(n, p=weights_N / weights_N.sum())))
    else:
      chosen.append(int(rng.choice(np.setdiff1d(np.arange(n), chosen))))
    d2_N = np.minimum(d2_N, np.sum((points_NxD - points_NxD[chosen[-1]])**2, axis=1))
  centres_KxD = points_NxD[chosen].copy()

  sq_norms_N = np.sum(points_NxD**2, axis=1)

  def squared_distances(centres_KxD):
    return np.maximum(sq_norms_N[:, None] - 2.0 * points_NxD @ centres_KxD.T
                      + np.sum(centres_KxD**2, axis=1)[None], 0.0)

  assignment_N = np.argmin(squared_distances(centres_KxD), axis=1)
  for _ in range(max_iterations):
    for c in range(k):
      members = assignment_N == c
      if members.any():
        centres_KxD[c] = points_NxD[members].mean(axis=0)
    new_assignment_N = np.argmin(squared_distances(centres_KxD), axis=1)
    if np.array_equal(new_assignment_N, assignment_N):
      break
    assignment_N = new_assignment_N
  for c in range(k):
    if not np.any(assignment_N == c):
      sizes_K = np.bincount(assignment_N, minlength=k)
      own_d2_N = squared_distances(centres_KxD)[np.arange(n), assignment_N]
      assignment_N[np.argmax(np.where(sizes_K[assignment_N] >= 2, own_d2_N, -1.0))] = c
  return assignment_N


def _numpy_rng(rng: jax.Array) -> np.random.Generator:
  """A numpy generator determined by a jax PRNG key."""
  return np.random.default_rng(np.asarray(jax.random.randint(rng, (4,), 0, np.iinfo(np.int32).max)))


def clustered_per_class_variance(samples_BxNxHxWxC, labels_BxHxW, num_classes: int, rng: jax.Array,
                                 num_clusters: int = NUM_CLUSTERS, repeats: int = CLUSTER_REPEATS
                                 ) -> tuple[np.ndarray, float]:
  """The diversity protocol of cimle_semantic_layouts_iccv2019 §4.3, Table 1.

  "We use our model to generate 100 images for each semantic layout ..., we
  then use k-means to divide the generated images into 9 clusters. Then we
  randomly pick one image from each cluster" and compute the per-class pixel
  variance over those nine (`per_class_pixel_variance`), averaged over the test
  set; "we repeat this procedure 10 times". Here, for every repeat and input j:

    1. `kmeans` of input j's N samples (flattened pixels) into `num_clusters`
       clusters, from a new k-means++ seeding;
    2. one uniformly random sample of each cluster;
  then V_c^(r) = `per_class_pixel_variance` of the B x num_clusters picked
  samples, and the result is the mean over the repeats r of V_c^(r) (overall:
  the mean over the classes present). The samples are drawn once: the paper
  re-draws its 100 images per repeat; a repeat here re-clusters and re-picks.
  The paper's setting is N = 100.

  Args:
    samples_BxNxHxWxC: N >= num_clusters samples for each of B inputs.
    labels_BxHxW: integer class ids in [0, num_classes).
    num_classes: the number of semantic classes.
    rng: a jax PRNG key; k-means and the picks (numpy) are deterministic given it.
    num_clusters: the paper's 9 (CRN's nine outputs).
    repeats: the paper's 10.

  Returns:
    (V_c as float64 [num_classes], NaN for classes absent from every layout, overall).
  """
  _check_samples(samples_BxNxHxWxC)
  samples_BxNxHxWxC = np.asarray(samples_BxNxHxWxC, np.float64)
  b, n = samples_BxNxHxWxC.shape[:2]
  if n < num_clusters:
    raise ValueError(f"The clustered per-class variance needs at least num_clusters = {num_clusters} "
                     f"samples per input (the paper: 100); got {n}.")
  np_rng = _numpy_rng(rng)
  flat_BxNxD = samples_BxNxHxWxC.reshape(b, n, -1)
  per_class_RxK = []
  for _ in range(repeats):
    picked_BxK = np.empty((b, num_clusters), np.int64)
    for j in range(b):
      assignment_N = kmeans(flat_BxNxD[j], num_clusters, np_rng)
      picked_BxK[j] = [np_rng.choice(np.flatnonzero(assignment_N == c)) for c in range(num_clusters)]
    picked_samples = np.take_along_axis(samples_BxNxHxWxC, picked_BxK[:, :, None, None, None], axis=1)
    per_class_RxK.append(per_class_pixel_variance(picked_samples, labels_BxHxW, num_classes)[0])
  per_class_K = np.mean(per_class_RxK, axis=0)  # NaN (absent class) in every repeat alike.
  present_K = np.isfinite(per_class_K)
  overall = float(np.mean(per_class_K[present_K])) if present_K.any() else float("nan")
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


def _check_tolerance(tolerance) -> None:
  if tolerance is None or not tolerance > 0:
    raise ValueError(f"The mode tolerance must be > 0; got {tolerance}.")


def _rare_mask(rare_modes_K, num_modes: int) -> np.ndarray:
  """rare_modes_K as a boolean [K] with at least one True, or a ValueError."""
  rare_K = np.asarray(rare_modes_K, bool)
  if rare_K.shape != (num_modes,) or not rare_K.any():
    raise ValueError(f"rare_modes_K must be a boolean [{num_modes}] with at least one True; got {rare_K}.")
  return rare_K


def mode_metrics(samples_BxNxHxWxC, true_modes_BxKxHxWxC, tolerance: float,
                 rare_modes_K: np.ndarray | None = None,
                 segment_labels_BxHxW: np.ndarray | None = None) -> dict[str, float]:
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
    rare_modes_K: optional boolean [K], the modes the training data shows
      least often (`DatasetSpec.mode_frequencies`): adds `mode_recall_rare`, the
      share of those modes hit by >= 1 precise sample (cimle_semantic_layouts
      §3.4: what rebalancing is for).
    segment_labels_BxHxW: the layouts, for data whose classes draw their modes
      independently (`DatasetSpec.independent_segments`): the metrics are then
      `segment_mode_metrics`'.

  Returns:
    {'mode_recall', 'mode_recall_nearest', 'mode_precision'} (+ 'mode_recall_rare').
  """
  if segment_labels_BxHxW is not None:
    return segment_mode_metrics(samples_BxNxHxWxC, true_modes_BxKxHxWxC, segment_labels_BxHxW, tolerance,
                                rare_modes_K)
  _check_tolerance(tolerance)
  errors_BxNxK = mode_errors(samples_BxNxHxWxC, true_modes_BxKxHxWxC)
  num_modes = errors_BxNxK.shape[-1]
  nearest_BxN = np.argmin(errors_BxNxK, axis=-1)
  precise_BxN = np.min(errors_BxNxK, axis=-1) < tolerance
  hit_BxK = np.zeros((errors_BxNxK.shape[0], num_modes), bool)
  hit_nearest_BxK = np.zeros_like(hit_BxK)
  for j in range(errors_BxNxK.shape[0]):
    hit_BxK[j, nearest_BxN[j][precise_BxN[j]]] = True
    hit_nearest_BxK[j, nearest_BxN[j]] = True
  out = {
      "mode_recall": float(np.mean(hit_BxK.sum(axis=1) / num_modes)),
      "mode_recall_nearest": float(np.mean(hit_nearest_BxK.sum(axis=1) / num_modes)),
      "mode_precision": float(np.mean(precise_BxN)),
  }
  if rare_modes_K is not None:
    rare_K = _rare_mask(rare_modes_K, num_modes)
    out["mode_recall_rare"] = float(np.mean(hit_BxK[:, rare_K].sum(axis=1) / rare_K.sum()))
  return out


def segment_mode_metrics(samples_BxNxHxWxC, true_modes_BxKxHxWxC, labels_BxHxW, tolerance: float,
                         rare_modes_K: np.ndarray | None = None) -> dict[str, float]:
  """`mode_metrics` for data whose classes draw their modes independently (toy_scenes `segments`).

  The true modes of input j are then every combination of the K modes'
  colours per class: K^|C| images, too many to list, but the nearest is found
  class by class. With e_ijkc = the mean absolute error of sample ij to mode k
  over the pixels of class c, and a_jc the share of the image class c covers,

    e*_ij        = sum_c a_jc min_k e_ijkc    the mean error to the nearest
                                              combination (what `mode_errors`'
                                              minimum is for one-mode data)
    precision    = mean_{i,j} [e*_ij < tol]
    recall       = mean_{j, c present} |{k : some i has k = argmin e_ijkc and e_ijkc < tol}| / K
                   the share of each segment's K modes that some sample renders
                   that segment in (exactly, within tol)
    recall_nearest = the same without the tolerance

  Args:
    samples_BxNxHxWxC: N samples for each of B inputs.
    true_modes_BxKxHxWxC: the K one-mode renders of each input; class c of
      render k has mode k's colour of class c.
    labels_BxHxW: the class ids of each input's layout.
    tolerance: the precision threshold (the dataset's `mode_tolerance`).
    rare_modes_K: optional boolean [K], the modes the training data draws least
      often: adds `mode_recall_rare`, the same recall over those modes.

  Returns:
    {'mode_recall', 'mode_recall_nearest', 'mode_precision'} (+ 'mode_recall_rare').
  """
  _check_tolerance(tolerance)
  _check_samples(samples_BxNxHxWxC)
  samples = np.asarray(samples_BxNxHxWxC, np.float32)
  modes = np.asarray(true_modes_BxKxHxWxC, np.float32)
  labels = np.asarray(labels_BxHxW)
  b, _, h, w, _ = samples.shape
  if modes.ndim != 5 or modes.shape[:1] + modes.shape[2:] != (b,) + samples.shape[2:] or labels.shape != (b, h, w):
    raise ValueError(f"segment_mode_metrics needs samples [B, N, H, W, C], true modes [B, K, H, W, C] and "
                     f"labels [B, H, W] of one B, H, W, C; got {samples.shape}, {modes.shape}, {labels.shape}.")
  num_modes, num_classes = modes.shape[1], int(labels.max()) + 1
  rare_K = None if rare_modes_K is None else _rare_mask(rare_modes_K, num_modes)
  precise, recall, recall_nearest, recall_rare = [], [], [], []
  for samples_NxHxWxC, modes_KxHxWxC, label_HxW in zip(samples, modes, labels):
    one_hot_HWxC = np.eye(num_classes, dtype=np.float32)[label_HxW.reshape(-1)]
    count_C = one_hot_HWxC.sum(axis=0)
    present = count_C > 0
    diff_NxKxHW = np.abs(samples_NxHxWxC[:, None] - modes_KxHxWxC[None]).mean(axis=-1).reshape(
        samples_NxHxWxC.shape[0], num_modes, -1)
    e_NxKxC = (diff_NxKxHW @ one_hot_HWxC)[..., present] / count_C[present]
    best_NxC, nearest_NxC = e_NxKxC.min(axis=1), e_NxKxC.argmin(axis=1)
    precise.append(best_NxC @ (count_C[present] / label_HxW.size) < tolerance)
    hit_CxK = np.zeros((best_NxC.shape[1], num_modes), bool)
    hit_nearest_CxK = np.zeros_like(hit_CxK)
    for c in range(best_NxC.shape[1]):
      hit_CxK[c, nearest_NxC[best_NxC[:, c] < tolerance, c]] = True
      hit_nearest_CxK[c, nearest_NxC[:, c]] = True
    recall.append(hit_CxK.mean())
    recall_nearest.append(hit_nearest_CxK.mean())
    if rare_K is not None:
      recall_rare.append(hit_CxK[:, rare_K].mean())
  out = {"mode_recall": float(np.mean(recall)), "mode_recall_nearest": float(np.mean(recall_nearest)),
         "mode_precision": float(np.mean(np.concatenate(precise)))}
  if rare_K is not None:
    out["mode_recall_rare"] = float(np.mean(recall_rare))
  return out


def rare_modes(frequencies_K: np.ndarray) -> np.ndarray:
  """The modes whose training frequency is below the median: boolean [K] (None if all are equal)."""
  frequencies_K = np.asarray(frequencies_K, np.float64)
  rare_K = frequencies_K < np.median(frequencies_K)
  return rare_K if rare_K.any() else None


# ------------------------------------------------------------ modes that depend on the input


def _check_mode_sets(samples_BxNxHxWxC, mode_sets, labels_BxHxW=None) -> None:
  _check_samples(samples_BxNxHxWxC)
  shape = np.shape(samples_BxNxHxWxC)
  image_shape = shape[2:]
  bad = [j for j, m in enumerate(mode_sets) if np.ndim(m) != 4 or np.shape(m)[1:] != image_shape or not len(m)]
  if len(mode_sets) != shape[0] or bad:
    raise ValueError(f"mode sets must be {shape[0]} arrays [K_j >= 1, H, W, C] with (H, W, C) = {image_shape}; "
                     f"got {[np.shape(m) for m in mode_sets]}.")
  if labels_BxHxW is not None and np.shape(labels_BxHxW) != shape[:1] + shape[2:4]:
    raise ValueError(f"labels must be [B, H, W] = {shape[:1] + shape[2:4]}; got {np.shape(labels_BxHxW)}.")


def mode_set_matches(samples_NxHxWxC, modes_KxHxWxC, label_HxW, tolerance: float) -> np.ndarray:
  """The mode of its input's own set that each sample renders, or -1: int [N].

  Sample i matches mode k when every segment s of the layout (the pixels of one
  class id) is within the tolerance:
    e_iks = mean over the pixels of s and the channels of |y~_i - m_k|,
    k*_i  = argmin_k max_s e_iks,   matched when max_s e_ik*s < tolerance.
  Two modes of toy_scenes_conditional differ by >= 2 * tolerance at every pixel of
  some segment, so a sample matches at most one; whole-image errors would not
  tell them apart (they may differ on a few pixels only).
  """
  _check_tolerance(tolerance)
  samples = np.asarray(samples_NxHxWxC, np.float32)
  label_HW = np.asarray(label_HxW).reshape(-1)
  ids, segment_HW = np.unique(label_HW, return_inverse=True)
  one_hot_HWxS = np.eye(len(ids), dtype=np.float32)[segment_HW]
  count_S = one_hot_HWxS.sum(axis=0)
  n = samples.shape[0]
  worst_NxK = np.stack([  # one mode at a time: [N, H, W, C] differences, not [N, K, H, W, C]
      ((np.abs(samples - m_HxWxC).mean(axis=-1).reshape(n, -1) @ one_hot_HWxS) / count_S).max(axis=-1)
      for m_HxWxC in np.asarray(modes_KxHxWxC, np.float32)], axis=-1)
  nearest_N = np.argmin(worst_NxK, axis=-1)
  return np.where(worst_NxK[np.arange(n), nearest_N] < tolerance, nearest_N, -1)


def mode_set_metrics(samples_BxNxHxWxC, mode_sets: Sequence[np.ndarray], labels_BxHxW,
                     tolerance: float) -> dict[str, float]:
  """Mode recall and precision over each input's own set of modes, overall and by the set's size.

  With K_j = |modes of input j| and the matches of `mode_set_matches`:
    recall_j     = |{k : some sample of input j matches k}| / K_j
    precision_j  = share of input j's samples that match one of its modes
  Returns
    mode_set_recall, mode_set_precision          mean over inputs of recall_j / over all samples
    mode_set_recall/K<k>, mode_set_precision/K<k>  the same over the inputs with K_j = k
    mode_set_recall/multimodal, .../multimodal   the same over the inputs with K_j > 1 (when any)
  A method whose samples are all the per-pixel mean of the modes (L1 / L2
  regression's tendency) scores recall 1 on the inputs with one mode and 0 on the
  others when any two modes are >= 2 * tolerance apart on some segment.
  """
  _check_mode_sets(samples_BxNxHxWxC, mode_sets, labels_BxHxW)
  sizes_B = np.array([len(m) for m in mode_sets])
  recall_B, precise_BxN = [], []
  for samples_NxHxWxC, modes_KxHxWxC, label_HxW in zip(samples_BxNxHxWxC, mode_sets, labels_BxHxW):
    matched_N = mode_set_matches(samples_NxHxWxC, modes_KxHxWxC, label_HxW, tolerance)
    recall_B.append(len(set(matched_N[matched_N >= 0].tolist())) / len(modes_KxHxWxC))
    precise_BxN.append(matched_N >= 0)
  recall_B, precise_BxN = np.asarray(recall_B), np.asarray(precise_BxN)

  def over(inputs_B, suffix=""):
    return {f"mode_set_recall{suffix}": float(np.mean(recall_B[inputs_B])),
            f"mode_set_precision{suffix}": float(np.mean(precise_BxN[inputs_B]))}

  out = over(np.ones(len(sizes_B), bool))
  for k in np.unique(sizes_B):
    out.update(over(sizes_B == k, f"/K{k}"))
  if (sizes_B > 1).any():
    out.update(over(sizes_B > 1, "/multimodal"))
  return out


def spurious_variation(samples_BxNxHxWxC, mode_sets: Sequence[np.ndarray], atol: float = 1e-6) -> dict[str, float]:
  """The samples' spread where the input fixes the appearance, and where it leaves it free.

  A pixel of input j is *fixed* when all of its K_j modes agree on it (within
  `atol` on every channel), else *free*. With s_jpc = the standard deviation
  (divisor N) of channel c of pixel p across input j's N samples,
    spurious_variation = mean of s_jpc over the fixed pixels of every input and the channels
    free_variation     = the same over the free pixels (absent where no input has one)
  (spurious_variation is absent where no input has a fixed pixel). A sampler of
  the modes themselves scores 0 spurious variation; the data's own texture noise
  (uniform in [-a, a] per pixel, toy_scenes a = 0.03) would score a / sqrt(3) ~ 0.017.
  """
  _check_mode_sets(samples_BxNxHxWxC, mode_sets)
  sums, counts = np.zeros(2), np.zeros(2)  # [fixed, free]
  for samples_NxHxWxC, modes_KxHxWxC in zip(samples_BxNxHxWxC, mode_sets):
    modes_KxHxWxC = np.asarray(modes_KxHxWxC, np.float64)
    free_HxW = np.any(np.abs(modes_KxHxWxC - modes_KxHxWxC[:1]) > atol, axis=(0, -1))
    std_HxWxC = np.std(np.asarray(samples_NxHxWxC, np.float64), axis=0)
    for region, mask_HxW in enumerate((~free_HxW, free_HxW)):
      sums[region] += std_HxWxC[mask_HxW].sum()
      counts[region] += std_HxWxC[mask_HxW].size
  return {key: float(sums[r] / counts[r]) for r, key in enumerate(("spurious_variation", "free_variation"))
          if counts[r]}


# ------------------------------------------------------------ noise linking


def within_distance(mask_BxHxW, radius: float) -> np.ndarray:
  """The pixels within Euclidean distance `radius` of a True pixel of the same image (the mask included)."""
  mask = np.asarray(mask_BxHxW, bool)
  out = mask.copy()
  r = int(np.floor(radius))
  h, w = mask.shape[1:]
  padded = np.pad(mask, ((0, 0), (r, r), (r, r)))
  for dy in range(-r, r + 1):
    for dx in range(-r, r + 1):
      if 0 < dy * dy + dx * dx <= radius * radius:
        out |= padded[:, r + dy:r + dy + h, r + dx:r + dx + w]
  return out


def noise_linking(sweep_BxTxHxWxC, labels_BxHxW, c: int, rim_px: float = 0.0) -> tuple[float, float]:
  """(change inside segment c, change outside it) along a sweep of n^c (diversity_loss_yang_liu_cai §IV-B).

  The change of a pixel is its total variation along the sweep,
  sum_t mean_channels |y_{t+1} - y_t|; inside / outside average it over the
  pixels whose label is / is not c, over the inputs where c is present (NaN
  when it is present nowhere). A noise entry linked to its segment (Fig. 2-3)
  changes the inside and leaves the outside alone: inside / outside >> 1.
  `rim_px` > 0 leaves out of "outside" the pixels within that distance of
  segment c (its rim, which a generator's last upsampling blurs into).
  """
  sweep = np.asarray(sweep_BxTxHxWxC, np.float32)
  labels = np.asarray(labels_BxHxW)
  if sweep.ndim != 5 or sweep.shape[1] < 2 or sweep.shape[:1] + sweep.shape[2:4] != labels.shape:
    raise ValueError(f"noise_linking needs a sweep [B, T >= 2, H, W, C] and labels [B, H, W]; got "
                     f"{sweep.shape} and {labels.shape}.")
  change_BxHxW = np.abs(np.diff(sweep, axis=1)).mean(axis=-1).sum(axis=1)
  present = (labels == c).any(axis=(1, 2))
  if not present.any():
    return float("nan"), float("nan")
  inside = labels[present] == c
  outside = ~(within_distance(inside, rim_px) if rim_px > 0 else inside)
  values = change_BxHxW[present]
  return float(values[inside].mean()), float(values[outside].mean()) if outside.any() else float("nan")
