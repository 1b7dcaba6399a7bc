r"""Draws samples from a trained run into a PNG grid: `python -m multimodal_jax.sample`.

  python -m multimodal_jax.sample --workdir=DIR --num_samples=16 --out=grid.png
  python -m multimodal_jax.sample --workdir=SR_DIR --out=sr.png                      # 10 samples, std map
  python -m multimodal_jax.sample --workdir=DIR --input=lr.png --out=grid.png
  python -m multimodal_jax.sample --workdir=DIR --out=lerp.png --extra=interpolate   # a method extra
  python -m multimodal_jax.sample --workdir=DIR --out=traj.png --extra=trajectory
  python -m multimodal_jax.sample --workdir=DIR --out=style.png --same_code         # one code per column
  python -m multimodal_jax.sample --workdir=DIR --out=grid.png --import=my_data      # a user module

Without --input the first `--num_inputs` eval examples are used. With --input a
PNG is the conditioning input of one example:
  * super-resolution runs (target larger than input): the image is converted to
    the input's channels, centre-cropped to the input's aspect ratio and resized
    (bicubic) to the model's input size, as recorded in run_info.json;
  * other datasets: the PNG must already have the input's height and width;
    grey/RGB PNGs are converted to the input's 1 or 3 channels, and for one-hot
    layout inputs (more than 4 channels, e.g. toy_scenes) a single-channel PNG
    of class ids 0..C-1 is one-hot encoded. Anything else is a clear error.
16-bit greyscale PNGs are scaled by their bit depth. A file PIL cannot read, one
over PIL's decompression-bomb limit, or an `--out` whose extension PIL cannot
write fails in one line before the run is restored.

The grid shows, for every input, a row `input | sample_1 ... sample_N | truth`
(for super-resolution `input | bicubic | sample_1 ... | truth`: bicubic is the
trivial baseline; the truth column only when the inputs come from the dataset)
and under it the absolute differences |sample_k - sample_{k-1}| (under
sample_k), as in cimle_srim_ijcv Fig. 1 / Fig. 5, multiplied by `--diff_gain`
(default 4, clipped to [0, 1]) so that small differences are visible; the gain
is printed. Column titles (input, bicubic, 1..N, truth) run above the grid and
row titles (the eval example's index, or the --input file) on its left;
`--nolabels` leaves them out.

Super-resolution runs draw 10 samples per input by default (the NTIRE 2021
"Learning the Super-Resolution Space" protocol; other runs 16), and their grid
gets a `std` column after the samples: each pixel's standard deviation across
exactly the N samples shown (divisor N, averaged over the colour channels),
i.e. where the method treats the input as ambiguous, as a grey map from black
(0) to white (the largest std over the whole grid, one scale for every row).
That scale is the column's title (`std 0.031`) and is printed. Each input's
row pair is then (blank tiles are white)
  input | bicubic | sample_1 | sample_2 ... sample_N | std | truth
        |         |          |   d_2    ...   d_N    |     |
with d_k = diff_gain |sample_k - sample_{k-1}|. `--nostd_map` leaves the column
out; `--std_map` adds it to any grid of samples (or of an extra drawn like
samples).

`--extra=NAME` draws the method's inference function `method.extras[NAME]`
(same arguments as `method.sample`) instead of independent samples, e.g.
`interpolate` (IMLE: outputs along a line between two codes) or `trajectory`
(cGML: each sample's T+1 iterates). The grid follows the output's shape:
[B, N, H, W, C] is drawn like samples, [B, N, T+1, H, W, C] as one row pair per
sample showing its iterates. An unknown name fails with the method's extras.
IMLE's `interpolate` is cimle_semantic_layouts_iccv2019 Fig. 4: column k holds
the output at z(t_k), t_k = (k - 1) / (N - 1), so the difference row shows how
fast the output changes along the line.

`--same_code` (cimle_semantic_layouts_iccv2019 Fig. 5, "style consistency": one
random vector applied to several layouts) gives every input the SAME random
codes: the sampler (or the extra) runs once per input, on a batch of one, with
one rng shared by all inputs. Samplers draw their codes from the rng and the
batch's shape (IMLE: z ~ N(0, I) of shape [N, B, ...]; cGML: z_0 of shape
[B, N, D]), so with B = 1 column k of every row comes from the same code k, and
differences between rows are due to the inputs alone. It applies to any method
whose `sample` follows that rule; with `--extra=interpolate` every row follows
the same line between the same two codes.

Modules given with `--import` (and those the run was trained with, recorded in
run_info.json) are imported first, so user datasets and methods work.
"""

from __future__ import annotations

if __name__ == "__main__":  # Ctrl-C while the imports below load: one line, not a traceback.
  from multimodal_jax import cli as _cli  # pylint: disable=g-import-not-at-top  # imports no JAX
  _cli.interrupt_in_one_line()

import io
import os
import warnings
from typing import Sequence

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from multimodal_jax import cli
from multimodal_jax import errors
from multimodal_jax import inference
from multimodal_jax import storage
from multimodal_jax.data import pipeline
from multimodal_jax.data import registry as data_registry
from multimodal_jax.evaluation import grids
from multimodal_jax.evaluation import metrics
from multimodal_jax.models import registry as models_registry


class InputError(errors.UserError, ValueError):
  """A bad --input, --out, --extra, --diff_gain or --std_map: `main` prints it as one line, without a traceback."""


# Samples per input when --num_samples is not given: the NTIRE 2021 SR protocol's 10 for super-resolution.
SUPER_RESOLUTION_SAMPLES, DEFAULT_SAMPLES = 10, 16


# Greyscale modes PIL gives 16-bit images (a 16-bit PNG is 'I;16'; older PIL: 'I').
_16_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def check_out_path(out: str) -> None:
  """Fails before anything is computed unless PIL can write `out`'s format (by its extension)."""
  extension = os.path.splitext(out)[1].lower()
  image_format = Image.registered_extensions().get(extension)
  if image_format is None or image_format not in Image.SAVE:
    raise InputError(f"--out={out}: give a file name with an image extension PIL can write, e.g. .png "
                     f"(got {extension or 'no extension'!r}).")


def open_image(path: str) -> Image.Image:
  """Reads and decodes `path`: a missing file, a non-image and a decompression bomb are one-line errors.

  PIL's DecompressionBombWarning (over `Image.MAX_IMAGE_PIXELS`) is an error
  here too: no conditioning input is that large, and decoding one could
  exhaust the memory.
  """
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("error", Image.DecompressionBombWarning)
      image = Image.open(path)
      image.load()
  except FileNotFoundError as e:
    raise InputError(f"Input {path}: no such file.") from e
  except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
    raise InputError(f"Input {path} is too large to decode safely: {e}") from e
  except (OSError, SyntaxError, ValueError) as e:  # PIL's UnidentifiedImageError is an OSError.
    raise InputError(f"Input {path} is not an image PIL can read ({type(e).__name__}: {e}).") from e
  return image


def _to_8_bit(image: Image.Image) -> Image.Image:
  """A 16-bit greyscale image as 8-bit 'L', scaled by 255/65535 (PIL's convert('L') would clip it to 255)."""
  if image.mode not in _16_BIT_MODES:
    return image
  scaled = np.clip(np.round(np.asarray(image, np.float64) * (255.0 / 65535.0)), 0, 255)
  return Image.fromarray(scaled.astype(np.uint8), "L")


def load_input_png(path: str, x_shape: tuple[int, ...], y_shape: tuple[int, ...],
                   dataset_name: str) -> np.ndarray:
  """Reads a PNG as one conditioning input [1, H, W, C] of the model (see the module docstring).

  Args:
    path: the PNG.
    x_shape, y_shape: the global batch's input and target shapes, [B, H, W, C].
    dataset_name: for error messages.
  """
  _, h, w, c = x_shape
  image = open_image(path)
  if c <= 4:  # Pixel values, by their bit depth; a layout's class ids stay integers.
    image = _to_8_bit(image)
  width0, height0 = image.size
  is_super_resolution = y_shape[1] > h
  if is_super_resolution:
    if c not in (1, 3):
      raise InputError(f"Super-resolution inputs with {c} channels are not supported.")
    image = image.convert("L" if c == 1 else "RGB")
    if (width0, height0) != (w, h):
      # Centre crop to the input's aspect ratio, then resize.
      crop_w, crop_h = min(width0, round(height0 * w / h)), min(height0, round(width0 * h / w))
      left, top = (width0 - crop_w) // 2, (height0 - crop_h) // 2
      image = image.crop((left, top, left + crop_w, top + crop_h)).resize((w, h), Image.BICUBIC)
      print(f"Input {path}: {width0}x{height0} centre-cropped to {crop_w}x{crop_h} and resized to "
            f"the model's input size {w}x{h}.", flush=True)
    array = np.asarray(image, np.float32) / 255.0
    return array.reshape(1, h, w, c)

  expected = (f"the model ({dataset_name}) takes {w}x{h} inputs with {c} channel(s)"
              + (f" (a one-hot layout: give a {w}x{h} single-channel PNG of class ids 0..{c - 1})"
                 if c > 4 else ""))
  if (width0, height0) != (w, h):
    raise InputError(f"Input {path} is {width0}x{height0}, but {expected}. Only super-resolution "
                     "runs resize their input.")
  array = np.asarray(image)
  array = array[..., None] if array.ndim == 2 else array
  if c > 4:
    if array.shape[-1] != 1 or not np.issubdtype(array.dtype, np.integer) or array.max() >= c:
      raise InputError(f"Input {path} has {array.shape[-1]} channel(s) with values up to "
                       f"{array.max()}, but {expected}.")
    return np.eye(c, dtype=np.float32)[array[..., 0]][None]
  if array.shape[-1] != c:
    if c not in (1, 3) or array.shape[-1] not in (1, 3, 4):
      raise InputError(f"Input {path} has {array.shape[-1]} channel(s), but {expected}.")
    array = np.asarray(image.convert("L" if c == 1 else "RGB"))
    array = array[..., None] if array.ndim == 2 else array
  return (array.astype(np.float32) / 255.0).reshape(1, h, w, c)


def draw_outputs(fn, state, x_BxHxWxC: np.ndarray, rng: jax.Array, num_samples: int,
                 same_code: bool = False) -> np.ndarray:
  """`fn(state, x, rng, num_samples)` (a `Method.sample` or extra) as float32 numpy, B first.

  With `same_code`, fn runs on each input alone (a batch of one) with the same
  rng, and the B outputs are stacked: every input gets the codes that fn draws
  from that rng for one input (the module docstring: Fig. 5, style consistency).
  """
  fn_jit = jax.jit(fn, static_argnums=3)
  if not same_code:
    return np.asarray(jax.device_get(fn_jit(state, jnp.asarray(x_BxHxWxC), rng, num_samples)), np.float32)
  return np.concatenate([
      np.asarray(jax.device_get(fn_jit(state, jnp.asarray(x_BxHxWxC[i:i + 1]), rng, num_samples)), np.float32)
      for i in range(x_BxHxWxC.shape[0])], axis=0)


def _grid_rows(outputs: np.ndarray, b: int, name: str) -> tuple[np.ndarray, int]:
  """(rows [R, N, H, W, C], rows per input): one row per input for samples [B, N, H, W, C], one per
  (input, sample) for iterates [B, N, T+1, H, W, C]."""
  if outputs.ndim == 6:
    rows, per_input = outputs.reshape((-1,) + outputs.shape[2:]), outputs.shape[1]
  elif outputs.ndim == 5:
    rows, per_input = outputs, 1
  else:
    raise ValueError(f"{name} returned {outputs.shape}; expected [B, N, H, W, C] (samples) or "
                     "[B, N, T+1, H, W, C] (iterates).")
  if outputs.shape[0] != b:
    raise ValueError(f"{name} returned {outputs.shape} for {b} input(s); expected B = {b} first.")
  return rows, per_input


def _grid_description(out, grid, config, extra, outputs, rows, columns, has_reference, has_truth, std_map,
                      std_scale, same_code, diff_gain) -> str:
  """The line `sample` prints: what the grid at `out` shows, column by column."""
  b = outputs.shape[0]
  return (f"Wrote {out} ({grid.shape[1]}x{grid.shape[0]}): {config.method} on {config.data.name}, "
          f"{extra or 'samples'}, {b} input(s) x {outputs.shape[1]}"
          + (f" x {outputs.shape[2]} iterates" if outputs.ndim == 6 else "")
          + ("; the same codes for every input" if same_code else "")
          + f"; columns: {' | '.join(columns[:2 if has_reference else 1])} | 1..{rows.shape[1]}"
          + (" | std" if std_map else "") + (" | truth (the dataset's target)" if has_truth else "")
          + (f"; bicubic is {metrics.REFERENCE_UPSAMPLING} upsampling" if has_reference else "")
          + f"; difference rows x{diff_gain:g}"
          + (f"; std: each pixel's standard deviation across the {rows.shape[1]} samples (mean over channels), "
             f"black 0 to white {std_scale:.4g}" if std_map else "") + ".")


def sample_to_png(workdir: str, out: str, input_path: str | None = None, num_samples: int | None = None,
                  num_inputs: int = 4, extra: str | None = None, step: int | None = None, seed: int = 0,
                  diff_gain: float = 1.0, same_code: bool = False, labels: bool = True,
                  std_map: bool | None = None, overrides: Sequence[str] = ()) -> np.ndarray:
  """Draws samples (or the outputs of `method.extras[extra]`) of the run in `workdir` into a PNG grid.

  With `same_code` every input gets the same random codes (`draw_outputs`).
  Inputs from the dataset get their ground truth as the last column; `labels`
  titles the columns and rows (`grids.with_labels`). `num_samples` None draws
  10 per input on super-resolution runs, 16 on others. `std_map` adds the
  per-pixel standard deviation across the drawn samples as a column
  (`grids.std_map`, scaled by its maximum); None: on for the samples of
  super-resolution runs, off otherwise. `overrides`: "KEY=VALUE" inference-time
  settings of the method (`inference.apply_overrides`).

  Returns:
    The grid, float32 [rows, cols, 3] in [0, 1], as written to `out`.
  """
  check_out_path(out)
  if input_path:
    open_image(input_path)  # A bad input fails before the run is restored and sampled.
  if diff_gain <= 0:
    raise InputError(f"--diff_gain must be > 0, got {diff_gain}.")
  config, method, state, batch_spec = inference.load_trained(workdir, step, overrides=overrides)
  if extra is None:
    fn = method.sample
  elif extra in method.extras:
    fn = method.extras[extra]
  else:
    raise InputError(f"--extra={extra}: method {config.method!r} has no such extra; its extras: "
                     f"{sorted(method.extras) or 'none'}.")
  spec = data_registry.get_dataset(config.data.name)
  if num_samples is None:
    num_samples = (SUPER_RESOLUTION_SAMPLES if metrics.is_super_resolution(batch_spec["x"], batch_spec["y"])
                   else DEFAULT_SAMPLES)
  y_BxHxWxC = None
  if input_path:
    x_BxHxWxC = load_input_png(input_path, batch_spec["x"].shape, batch_spec["y"].shape, config.data.name)
    input_names = [os.path.basename(input_path)[:16]]
  else:
    batch = pipeline.load_eval_examples(config, num_inputs, allow_fewer=True)
    x_BxHxWxC, y_BxHxWxC = batch["x"], batch.get("y")
    input_names = [f"eval {int(i)}" for i in batch.get("index", range(len(x_BxHxWxC)))]
  outputs = draw_outputs(fn, state, x_BxHxWxC, jax.random.PRNGKey(seed), num_samples, same_code)

  b = x_BxHxWxC.shape[0]
  name = f"extras[{extra!r}]" if extra else "sample"
  rows, per_input = _grid_rows(outputs, b, name)
  h, w = rows.shape[2:4]
  inputs_rgb = np.asarray(jax.image.resize(spec.input_to_rgb(x_BxHxWxC), (b, h, w, 3), "nearest"))
  reference = None
  if metrics.is_super_resolution(x_BxHxWxC, rows[:, 0]):
    reference = np.repeat(np.asarray(models_registry.upsample_reference(
        x_BxHxWxC, h // x_BxHxWxC.shape[1])), per_input, axis=0)
  truth = None
  if y_BxHxWxC is not None and tuple(y_BxHxWxC.shape[1:]) == tuple(rows.shape[2:]):
    truth = np.repeat(np.asarray(y_BxHxWxC, np.float32), per_input, axis=0)
  if std_map and outputs.ndim == 6:
    raise InputError(f"--std_map is across samples, but {name} drew iterates {outputs.shape} "
                     "([B, N, T+1, H, W, C]); leave --std_map out.")
  if std_map is None:
    std_map = reference is not None and extra is None
  # One scale for every row, from exactly the samples drawn in the grid.
  std_scale = float(grids.std_map(rows).max()) if std_map else None
  grid = grids.difference_grid(np.repeat(inputs_rgb, per_input, axis=0), rows, diff_gain=diff_gain,
                               reference_SxHxWx3=reference, truth_SxHxWxC=truth, std_scale=std_scale)
  columns = (["input"] + (["bicubic"] if reference is not None else []) + [str(k + 1) for k in range(rows.shape[1])]
             + ([f"std {std_scale:.2g}"] if std_map else []) + (["truth"] if truth is not None else []))
  if labels:
    row_names = [name if per_input == 1 else f"{name} #{j + 1}" for name in input_names for j in range(per_input)]
    grid = grids.with_labels(grid, columns, row_names, (h, w), rows_per_label=2)
  png = io.BytesIO()
  Image.fromarray(np.round(grid * 255.0).astype(np.uint8)).save(png, format="PNG")
  storage.write_bytes(storage.resolve(out), png.getvalue())  # A local file or gs://
  print(_grid_description(out, grid, config, extra, outputs, rows, columns, reference is not None,
                          truth is not None, std_map, std_scale, same_code, diff_gain), flush=True)
  return grid


def _define_flags() -> None:
  # Defined only when run as a program (see evaluate.py).
  flags.DEFINE_string("workdir", None, "The --workdir of a training run.", required=True)
  flags.DEFINE_string("out", None, "Where to write the PNG grid.", required=True)
  flags.DEFINE_string("input", None, "A PNG input; default: the first eval examples.")
  flags.DEFINE_integer("num_samples", None, "Samples (or interpolation points) per input; default "
                       f"{SUPER_RESOLUTION_SAMPLES} for super-resolution runs, {DEFAULT_SAMPLES} otherwise.")
  flags.DEFINE_integer("num_inputs", 4, "Eval examples to use when --input is not given.")
  flags.DEFINE_string("extra", None, "Draw the method's extras[NAME] instead of samples, e.g. "
                      "interpolate (IMLE) or trajectory (cGML).")
  flags.DEFINE_integer("step", None, "The checkpoint step (default: the newest).")
  flags.DEFINE_integer("seed", 0, "Sampling rng seed.")
  flags.DEFINE_float("diff_gain", 4.0, "Difference rows show gain x |sample_k - sample_{k-1}|.")
  flags.DEFINE_bool("same_code", False, "Give every input the same random codes (one rng, a batch of "
                    "one per input): style consistency, cimle_semantic_layouts_iccv2019 Fig. 5.")
  flags.DEFINE_bool("labels", True, "Title the grid's columns (input, bicubic, 1..N, std, truth) and rows.")
  flags.DEFINE_bool("std_map", None, "A column of each pixel's standard deviation across the samples, scaled "
                    "by its maximum (the column's title); default: on for super-resolution samples.")
  cli.define_override_flag()
  cli.define_import_flag()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  cli.import_flagged_modules()
  # A bad input or out, not a run, no checkpoint restores: one line (errors.UserError, cli.user_errors).
  sample_to_png(f.workdir, f.out, input_path=f.input, num_samples=f.num_samples,
                num_inputs=f.num_inputs, extra=f.extra, step=f.step, seed=f.seed, diff_gain=f.diff_gain,
                same_code=f.same_code, labels=f.labels, std_map=f.std_map, overrides=f.override)


if __name__ == "__main__":
  _define_flags()
  cli.run(main)
