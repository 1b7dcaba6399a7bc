"""Image grids of samples: the loop's TensorBoard grid (`sample_grid`) and `sample`'s PNG (`difference_grid`).

Both take numpy arrays in [0, 1] and return one float32 RGB image in [0, 1],
with a white border of `pad` pixels between tiles.
"""

from __future__ import annotations

import jax
import numpy as np

from multimodal_jax.models import registry as models_registry


def _rgb(images: np.ndarray) -> np.ndarray:
  return np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images[..., :3]


def sample_grid(x_rgb: np.ndarray, samples: np.ndarray, y: np.ndarray, pad: int = 2) -> np.ndarray:
  """Rows of input | samples | ground truth, as one float32 RGB image in [0, 1].

  For super-resolution (an RGB input smaller than the samples) a column of the
  input's bicubic upsampling (`models.registry.upsample_reference`, the
  trivial baseline) follows the input: input | bicubic | samples | truth.

  Args:
    x_rgb: [B, h, w, 3] inputs shown as RGB (resized to the target size).
    samples: [B, N, H, W, C] samples in [0, 1].
    y: [B, H, W, C] ground truth.
  """
  b, n, h, w, _ = samples.shape
  columns = [np.asarray(jax.image.resize(x_rgb, (b, h, w, 3), "nearest"))[:, None]]
  if x_rgb.shape[1] < h and h % x_rgb.shape[1] == 0:
    columns.append(np.asarray(models_registry.upsample_reference(x_rgb, h // x_rgb.shape[1]))[:, None])
  tiles = np.concatenate(columns + [_rgb(samples), _rgb(y)[:, None]], axis=1)  # [B, cols, H, W, 3]
  cols = tiles.shape[1]
  grid = np.ones((b * (h + pad) + pad, cols * (w + pad) + pad, 3), np.float32)
  for i in range(b):
    for j in range(cols):
      top, left = pad + i * (h + pad), pad + j * (w + pad)
      grid[top:top + h, left:left + w] = tiles[i, j]
  return np.clip(grid, 0.0, 1.0)


def difference_grid(inputs_SxHxWx3: np.ndarray, rows_SxLxHxWxC: np.ndarray, pad: int = 2,
                    diff_gain: float = 1.0, reference_SxHxWx3: np.ndarray | None = None) -> np.ndarray:
  """Rows of `input | [reference |] image_1 ... image_L`, each above its adjacent differences.

  Args:
    inputs_SxHxWx3: the input of each row, as RGB at the images' size.
    rows_SxLxHxWxC: S rows of L images in [0, 1] (samples, or iterates).
    pad: white border between tiles.
    diff_gain: the differences are shown multiplied by this (then clipped).
    reference_SxHxWx3: an optional column after the inputs (super-resolution:
      the bicubic upsampling of the input).

  Returns:
    float32 [2 S (H + pad) + pad, (L + 1 + r) (W + pad) + pad, 3] in [0, 1], r = 1
    with a reference column: the second row of each pair holds
    diff_gain |image_k - image_{k-1}| under image_k; the tiles under the input,
    the reference and image_1 stay white.
  """
  s, l, h, w, _ = rows_SxLxHxWxC.shape
  rows = _rgb(np.asarray(rows_SxLxHxWxC, np.float32))
  diffs_SxL1xHxWx3 = diff_gain * np.abs(rows[:, 1:] - rows[:, :-1])
  if reference_SxHxWx3 is not None:
    inputs_SxHxWx3 = np.stack([inputs_SxHxWx3, reference_SxHxWx3], axis=1)
  else:
    inputs_SxHxWx3 = np.asarray(inputs_SxHxWx3)[:, None]
  first = inputs_SxHxWx3.shape[1]  # Columns before image_1.
  grid = np.ones((2 * s * (h + pad) + pad, (l + first) * (w + pad) + pad, 3), np.float32)

  def put(row: int, col: int, tile: np.ndarray):
    top, left = pad + row * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = tile

  for i in range(s):
    for j in range(first):
      put(2 * i, j, inputs_SxHxWx3[i, j])
    for k in range(l):
      put(2 * i, k + first, rows[i, k])
    for k in range(1, l):
      put(2 * i + 1, k + first, diffs_SxL1xHxWx3[i, k - 1])
  return np.clip(grid, 0.0, 1.0)
