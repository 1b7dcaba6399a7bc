"""Training-set neighbours for the neighbours-enhanced loss (latent_dropout_codes_he_schiele_fritz_eccv2018 §3.2, §4.3).

"Given a training pair (X^0, Y^0), we first sample several data pairs
{(X^i, Y^i)} satisfying dis(X^i, X^0) < theta" and, on faces, "use kmeans on
HSV color space to cluster the neighbors. For each cluster, we randomly select
an example as the sampled neighbor."

Here, computed once per dataset (the method's prepared state):
  1. `input_features`: inputs reduced to at most `resolution` pixels on their
     short side (antialiased bilinear), flattened: the distance is taken on
     coarse inputs, which is both what "close inputs" means for layouts and
     landmark heatmaps and what keeps an all-pairs search cheap.
  2. `nearest_candidates`: per example, the `num_candidates` nearest other
     examples with dis < theta (-1 where fewer qualify). dis = mean |a - b|
     ('l1') or root-mean-square difference ('l2') over the reduced input.
  3. `pick_diverse` (optional): k-means of the candidates' targets in HSV,
     one pick per cluster; otherwise the nearest `num_neighbours` candidates.
The paper picks a random member per cluster; we pick the member nearest its
cluster's centre, so the lists are a deterministic function of the data.
HSV features: each target is averaged over a 4 x 4 grid of cells, each cell's
(h, s, v) embedded as (s cos 2 pi h, s sin 2 pi h, v) so that hue is circular
and greys have no hue: 48 numbers per image.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("l1", "l2")
HSV_GRID = 4


def input_features(x_BxHxWxC: np.ndarray, resolution: int) -> np.ndarray:
  """Inputs reduced to <= `resolution` pixels on the short side, flattened: float32 [B, D]."""
  x = jnp.asarray(x_BxHxWxC, jnp.float32)
  b, h, w, c = x.shape
  scale = min(1.0, resolution / min(h, w))
  hw = (max(1, round(h * scale)), max(1, round(w * scale)))
  if hw != (h, w):
    x = jax.image.resize(x, (b, *hw, c), "linear", antialias=True)
  return np.asarray(x.reshape(b, -1))


@jax.jit
def _distances(q_QxD, all_NxD, l2):
  def l1(_):
    return jnp.mean(jnp.abs(q_QxD[:, None] - all_NxD[None]), axis=-1)

  def rms(_):
    sq = (jnp.sum(q_QxD**2, -1)[:, None] + jnp.sum(all_NxD**2, -1)[None] - 2 * q_QxD @ all_NxD.T)
    return jnp.sqrt(jnp.maximum(sq, 0.0) / q_QxD.shape[-1])

  return jax.lax.cond(l2, rms, l1, None)


def nearest_candidates(features_NxD: np.ndarray, threshold: float, num_candidates: int, metric: str = "l1",
                       description: str = "Neighbours", progress_every_secs: float = 10.0
                       ) -> tuple[np.ndarray, np.ndarray]:
  """(indices [N, M] int32, distances [N, M]): each example's M nearest others with distance < threshold.

  Slots without a qualifying example hold index -1 and distance inf; the rest
  are sorted by distance. Prints progress (the search is O(N^2 D)).
  """
  if metric not in METRICS:
    raise ValueError(f"Unknown neighbour metric {metric!r}; valid: {list(METRICS)}.")
  feats = jnp.asarray(features_NxD, jnp.float32)
  n, d = feats.shape
  m = min(num_candidates, n - 1)
  # Query chunks of ~64M pairwise elements for l1's broadcast.
  chunk = max(1, min(n, int(6.4e7 // max(n * d, 1)))) if metric == "l1" else min(n, 1024)
  indices = np.full((n, num_candidates), -1, np.int32)
  dists = np.full((n, num_candidates), np.inf, np.float32)
  start_time = last_print = time.monotonic()
  for start in range(0, n, chunk):
    stop = min(start + chunk, n)
    d_QxN = _distances(feats[start:stop], feats, metric == "l2")
    d_QxN = d_QxN.at[jnp.arange(stop - start), jnp.arange(start, stop)].set(jnp.inf)  # not itself
    neg, idx = jax.lax.top_k(-d_QxN, m)
    dist = np.asarray(-neg)
    idx = np.asarray(idx)
    ok = dist < threshold
    indices[start:stop, :m] = np.where(ok, idx, -1)
    dists[start:stop, :m] = np.where(ok, dist, np.inf)
    now = time.monotonic()
    if now - last_print >= progress_every_secs or stop == n:
      print(f"{description}: {stop}/{n} examples searched ({stop / max(now - start_time, 1e-9):.0f}/s)",
            flush=True)
      last_print = now
  return indices, dists


def hsv_features(y_BxHxWx3: np.ndarray) -> np.ndarray:
  """The module docstring's 48-number HSV description of each image in [0, 1]: float32 [B, 48]."""
  y = jnp.asarray(y_BxHxWx3, jnp.float32)
  b = y.shape[0]
  cells = jax.image.resize(y, (b, HSV_GRID, HSV_GRID, 3), "linear", antialias=True)
  r, g, bl = cells[..., 0], cells[..., 1], cells[..., 2]
  v = jnp.max(cells, -1)
  chroma = v - jnp.min(cells, -1)
  s = jnp.where(v > 0, chroma / jnp.maximum(v, 1e-12), 0.0)
  safe = jnp.maximum(chroma, 1e-12)
  h = jnp.where(v == r, (g - bl) / safe, jnp.where(v == g, 2.0 + (bl - r) / safe, 4.0 + (r - g) / safe)) / 6.0
  h = jnp.where(chroma > 0, h % 1.0, 0.0)
  emb = jnp.stack([s * jnp.cos(2 * jnp.pi * h), s * jnp.sin(2 * jnp.pi * h), v], -1)
  return np.asarray(emb.reshape(b, -1))


def _kmeans_picks(f_MxF, valid_M, k, iters=10):
  """k-means (farthest-point init, fixed iterations) of the valid rows; per cluster its member nearest the centre."""
  first = jnp.argmax(valid_M)

  def init(i, centres_idx):
    c = f_MxF[centres_idx]
    d = jnp.min(jnp.sum((f_MxF[:, None] - c[None]) ** 2, -1) + jnp.where(jnp.arange(k) < i, 0.0, jnp.inf)[None],
                axis=1)
    d = jnp.where(valid_M, d, -1.0)
    return centres_idx.at[i].set(jnp.argmax(d))

  centres_idx = jax.lax.fori_loop(1, k, init, jnp.full((k,), first))
  centres = f_MxF[centres_idx]

  def lloyd(_, centres):
    assign = jnp.argmin(jnp.sum((f_MxF[:, None] - centres[None]) ** 2, -1), axis=1)
    onehot = jax.nn.one_hot(assign, k) * valid_M[:, None]
    counts = onehot.sum(0)
    new = (onehot.T @ f_MxF) / jnp.maximum(counts, 1.0)[:, None]
    return jnp.where(counts[:, None] > 0, new, centres)

  centres = jax.lax.fori_loop(0, iters, lloyd, centres)
  d_MxK = jnp.sum((f_MxF[:, None] - centres[None]) ** 2, -1)
  assign = jnp.argmin(d_MxK, axis=1)
  member_MxK = (assign[:, None] == jnp.arange(k)[None]) & valid_M[:, None]
  pick = jnp.argmin(jnp.where(member_MxK, d_MxK, jnp.inf), axis=0)
  has = member_MxK.any(0)
  return jnp.where(has, pick, -1)


def pick_diverse(candidates_NxM: np.ndarray, hsv_NxF: np.ndarray, num_neighbours: int) -> np.ndarray:
  """Per example, `num_neighbours` candidates from different HSV k-means clusters: int32 [N, num_neighbours].

  Fewer valid candidates than clusters leave -1 slots; picks come first.
  """
  valid_NxM = candidates_NxM >= 0
  feats_NxMxF = jnp.asarray(hsv_NxF)[np.maximum(candidates_NxM, 0)]
  kmeans = jax.jit(jax.vmap(functools.partial(_kmeans_picks, k=num_neighbours)))
  picks_NxK = np.asarray(kmeans(feats_NxMxF, jnp.asarray(valid_NxM)))
  chosen = np.where(picks_NxK >= 0, np.take_along_axis(candidates_NxM, np.maximum(picks_NxK, 0), 1), -1)
  # Valid picks first, duplicates (two clusters sharing a nearest member cannot happen; kept general) removed.
  out = np.full_like(chosen, -1)
  for row, values in enumerate(chosen):
    kept = list(dict.fromkeys(int(v) for v in values if v >= 0))
    out[row, :len(kept)] = kept
  return out.astype(np.int32)
