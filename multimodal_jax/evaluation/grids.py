"""Image grids of samples: the loop's TensorBoard grid (`sample_grid`) and `sample`'s PNG (`difference_grid`).

Both take numpy arrays in [0, 1] and return one float32 RGB image in [0, 1],
with a white border of `pad` pixels between tiles. `with_labels` adds a row
of column titles above a grid and a column of row titles on its left;
`std_map` is the per-pixel standard deviation across a row's samples, which
`difference_grid` can show as one more column.
"""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from PIL import Image
from PIL import ImageDraw
from PIL import ImageFont

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


def std_map(rows_SxLxHxWxC: np.ndarray) -> np.ndarray:
  """Each pixel's standard deviation across the L images of a row (divisor L), averaged over channels.

  Where a sampler's outputs disagree, i.e. where it treats the input as
  ambiguous; identical images give 0 everywhere.

  Returns:
    float32 [S, H, W].
  """
  return np.asarray(rows_SxLxHxWxC, np.float64).std(axis=1).mean(axis=-1).astype(np.float32)


def difference_grid(inputs_SxHxWx3: np.ndarray, rows_SxLxHxWxC: np.ndarray, pad: int = 2,
                    diff_gain: float = 1.0, reference_SxHxWx3: np.ndarray | None = None,
                    truth_SxHxWxC: np.ndarray | None = None, std_scale: float | None = None) -> np.ndarray:
  """Rows of `input | [reference |] image_1 ... image_L [| std] [| truth]`, each above its adjacent differences.

  Args:
    inputs_SxHxWx3: the input of each row, as RGB at the images' size.
    rows_SxLxHxWxC: S rows of L images in [0, 1] (samples, or iterates).
    pad: white border between tiles.
    diff_gain: the differences are shown multiplied by this (then clipped).
    reference_SxHxWx3: an optional column after the inputs (super-resolution:
      the bicubic upsampling of the input).
    truth_SxHxWxC: an optional last column, the ground truth of each row's
      input (when it comes from the dataset).
    std_scale: with a value, a grey column after the images shows
      `std_map(rows_SxLxHxWxC)`, the per-pixel standard deviation across
      exactly the L images drawn, divided by std_scale (then clipped): black is
      0, white std_scale. 0 (identical images) draws it black.

  Returns:
    float32 [2 S (H + pad) + pad, (L + 1 + r + d + t) (W + pad) + pad, 3] in [0, 1],
    r, d, t = 1 with a reference, std and truth column: the second row of
    each pair holds diff_gain |image_k - image_{k-1}| under image_k (the
    "difference between adjacent samples" of cimle_srim_ijcv Fig. 1); the tiles
    under the input, the reference, image_1, the std map and the truth stay white.
  """
  s, l, h, w, _ = rows_SxLxHxWxC.shape
  images = _rgb(np.asarray(rows_SxLxHxWxC, np.float32))
  diffs_SxL1xHxWx3 = diff_gain * np.abs(images[:, 1:] - images[:, :-1])
  before = [np.asarray(inputs_SxHxWx3, np.float32)]
  if reference_SxHxWx3 is not None:
    before.append(np.asarray(reference_SxHxWx3, np.float32))
  after = []
  if std_scale is not None:
    if std_scale < 0:
      raise ValueError(f"std_scale must be >= 0, got {std_scale}.")
    std_SxHxW = std_map(rows_SxLxHxWxC)
    shown_SxHxW = std_SxHxW / std_scale if std_scale > 0 else np.zeros_like(std_SxHxW)
    after.append(np.repeat(shown_SxHxW[..., None], 3, axis=-1))
  if truth_SxHxWxC is not None:
    after.append(_rgb(np.asarray(truth_SxHxWxC, np.float32)))
  tiles_SxCxHxWx3 = np.concatenate([np.stack(before, axis=1), images]
                                   + ([np.stack(after, axis=1)] if after else []), axis=1)
  first = len(before)  # Columns before image_1.
  grid = np.ones((2 * s * (h + pad) + pad, tiles_SxCxHxWx3.shape[1] * (w + pad) + pad, 3), np.float32)

  def put(row: int, col: int, tile: np.ndarray):
    top, left = pad + row * (h + pad), pad + col * (w + pad)
    grid[top:top + h, left:left + w] = tile

  for i in range(s):
    for j in range(tiles_SxCxHxWx3.shape[1]):
      put(2 * i, j, tiles_SxCxHxWx3[i, j])
    for k in range(1, l):
      put(2 * i + 1, k + first, diffs_SxL1xHxWx3[i, k - 1])
  return np.clip(grid, 0.0, 1.0)


def _font(size: int) -> ImageFont.ImageFont:
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, ValueError, OSError):  # PIL without FreeType: its one bitmap font.
    return ImageFont.load_default()


def with_labels(grid: np.ndarray, column_labels: Sequence[str], row_labels: Sequence[str], tile_hw: tuple[int, int],
                pad: int = 2, rows_per_label: int = 1) -> np.ndarray:
  """`grid` with a band of column titles above and a band of row titles on its left.

  Args:
    grid: float32 [H, W, 3] in [0, 1], tiles of `tile_hw` separated by `pad`.
    column_labels: one title per tile column.
    row_labels: one title per `rows_per_label` tile rows (2 for a difference
      grid: an image row and its differences), drawn beside the first.
    tile_hw: the height and width of one tile.
    pad: the grid's border between tiles.
    rows_per_label: tile rows per row label.

  Returns:
    float32 [H + band, W + margin, 3] in [0, 1]: dark grey titles on white.
  """
  h, w = tile_hw
  measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
  width_of = lambda text, font: measure.textbbox((0, 0), text, font=font)[2]
  # The largest of a few small sizes at which every column title fits its tile.
  size = next((s for s in (11, 10, 9) if max((width_of(t, _font(s)) for t in column_labels), default=0) <= w), 8)
  font = _font(size)
  band = size + 2 * pad + 2
  margin = max((width_of(t, font) for t in row_labels), default=0) + 3 * pad
  image = Image.new("RGB", (grid.shape[1] + margin, grid.shape[0] + band), "white")
  image.paste(Image.fromarray(np.round(np.clip(grid, 0, 1) * 255).astype(np.uint8)), (margin, band))
  draw = ImageDraw.Draw(image)
  grey = (60, 60, 60)
  for j, text in enumerate(column_labels):
    left = margin + pad + j * (w + pad)
    draw.text((left + max((w - width_of(text, font)) // 2, 0), pad), text, fill=grey, font=font)
  for i, text in enumerate(row_labels):
    top = band + pad + i * rows_per_label * (h + pad)
    draw.text((pad, top + max((h - size) // 2, 0)), text, fill=grey, font=font)
  return np.asarray(image, np.float32) / 255.0
