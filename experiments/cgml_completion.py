r"""cGML on ambiguous digit completion (cgml_iclr2021 §5.1, Fig. 4-5) against L1 regression.

  python experiments/cgml_completion.py [--workdir=/tmp/cgml_completion]

Trains through the one loop (`train.train_and_evaluate`), each in
`--workdir/<name>` (a finished run is reused):
  cgml   configs/cgml.py:completion,box (digits_completion_box: a white box
         under the mask in 40% of the targets, so every input has exactly two
         completions; --dataset=digits_completion for the Fig. 4 setting)
  l1     configs/regression.py:data=<the same dataset>
then, on the first `--num_test` test digits (clean, fixed masks), draws
N = `--num_samples` completions per input (z_0 ~ U(S^n), T iterations of Eq. 4)
and prints
  * distinct completions per input: samples greedily grouped, a sample
    starting a new group when its mean |difference| inside the hole to every
    group's first sample exceeds `--distinct` (0.05 of the intensity range);
    the share of inputs with >= 2 distinct completions;
  * PSNR inside the hole and over the image (known pixels pasted back for
    both models): cGML best-of-N (the sample closest to the ground truth),
    cGML mean over samples, and the L1 regression;
  * on digits_completion_box, for the inputs whose digit leaves the box dark
    (elsewhere the two modes coincide): the share of samples in the box mode
    (the nearer of the two targets over the box pixels) and of inputs whose
    samples reach both modes, after the T inference steps and at t = 0 (the
    same z_0 decoded without the Z-network).
Saves a grid (both-mode inputs first) (input | regression | N samples | ground truth) to --out.

About 8 minutes on a shared 2-core CPU (cGML 5, regression 2, evaluation 1).
"""

import os
import tempfile

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

import exp_util  # experiments/exp_util.py
from multimodal_jax import inference  # pylint: disable=g-import-not-at-top
from multimodal_jax import jax_workarounds
from multimodal_jax.data import pipeline

REPO = exp_util.REPO
_WORKDIR = flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "cgml_completion"),
                               "Where the runs live (reused if finished).")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "cgml_completion.png"),
                           "Figure path.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir ('' = the library default).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 16, "Completions (starting codes z_0) per input.")
_NUM_TEST = flags.DEFINE_integer("num_test", 256, "Test digits evaluated.")
_DISTINCT = flags.DEFINE_float("distinct", 0.05, "Mean |difference| in the hole that makes two "
                               "completions distinct.")
_SEED = flags.DEFINE_integer("seed", 0, "config.seed of the runs.")

_DATASET = flags.DEFINE_enum(
    "dataset", "digits_completion_box", ["digits_completion_box", "digits_completion"],
    "digits_completion_box: two exact modes per input (§5.1 Fig. 5, white box under the mask in "
    "40% of the targets); digits_completion: 20% of the tops overlapped with random digits (Fig. 4).")


def runs() -> dict[str, tuple[str, str]]:
  box = _DATASET.value == "digits_completion_box"
  return {"cgml": ("cgml.py", "completion,box" if box else "completion"),
          "l1": ("regression.py", f"data={_DATASET.value}")}


def psnr(a: np.ndarray, b: np.ndarray, weight: np.ndarray) -> np.ndarray:
  """PSNR (peak 1) of a vs b over the pixels where weight = 1, per leading index."""
  axes = tuple(range(-3, 0))
  mse = np.sum(weight * (a - b)**2, axis=axes) / np.maximum(np.sum(weight, axis=axes), 1.0)
  return 10.0 * np.log10(1.0 / np.maximum(mse, 1e-10))


def count_distinct(samples_NxHxWx1: np.ndarray, mask_HxWx1: np.ndarray, threshold: float) -> int:
  """Greedy grouping: a sample is new when it differs (in the hole) from every group's first."""
  hole = mask_HxWx1 > 0.5
  firsts = []
  for s in samples_NxHxWx1:
    if all(np.abs(s - f)[hole].mean() > threshold for f in firsts):
      firsts.append(s)
  return len(firsts)


def main(argv):
  del argv
  outputs = {}
  test = None
  for name, (config_file, arg) in runs().items():
    workdir = os.path.join(_WORKDIR.value, _DATASET.value, name)
    exp_util.train_or_reuse(exp_util.load_config(config_file, arg, _SEED.value, _DATA_DIR.value), workdir)
    config, method, state, _ = inference.load_trained(workdir)
    if test is None:
      test = pipeline.load_eval_examples(config, _NUM_TEST.value)
    sample = jax.jit(method.sample, static_argnums=3)
    chunks = [np.asarray(sample(state, jnp.asarray(test["x"][i:i + 64]), jax.random.PRNGKey(i),
                                _NUM_SAMPLES.value if name == "cgml" else 1))
              for i in range(0, _NUM_TEST.value, 64)]
    outputs[name] = np.concatenate(chunks)  # [B, N, 32, 32, 1]
    if name == "cgml":
      print(f"cGML: {method.description}")
      # The same z_0 decoded without the Z-network (t = 0): what inference adds or loses.
      initial = jax.jit(method.extras["initial_sample"], static_argnums=3)
      outputs["cgml_t0"] = np.concatenate([
          np.asarray(initial(state, jnp.asarray(test["x"][i:i + 64]), jax.random.PRNGKey(i), _NUM_SAMPLES.value))
          for i in range(0, _NUM_TEST.value, 64)])

  y, mask = test["y"], test["mask"]
  known = test["x"][..., :1]
  # Paste the known pixels back (cGML's completion task already does; L1 regression does not).
  paste = lambda out: known[:, None] * (1 - mask[:, None]) + out * mask[:, None]
  cg, l1 = paste(outputs["cgml"]), paste(outputs["l1"])[:, 0]
  ones = np.ones_like(mask)
  cg_hole = psnr(cg, y[:, None], mask[:, None])  # [B, N]
  cg_full = psnr(cg, y[:, None], ones[:, None])
  l1_hole, l1_full = psnr(l1, y, mask), psnr(l1, y, ones)
  distinct = np.array([count_distinct(cg[i], mask[i], _DISTINCT.value) for i in range(len(y))])
  two_modes = np.zeros(len(y), bool)  # Inputs whose samples reach both exact modes (box data).

  print(f"\nDigit completion, {len(y)} test digits, {_NUM_SAMPLES.value} cGML samples each:")
  print(f"  distinct completions per input (> {_DISTINCT.value} mean |diff| in the hole): "
        f"mean {distinct.mean():.2f}, median {np.median(distinct):.0f}, "
        f">= 2 for {np.mean(distinct >= 2):.1%} of the inputs")
  print(f"  PSNR in the hole:   cGML best-of-{_NUM_SAMPLES.value} {cg_hole.max(1).mean():.2f} dB, "
        f"cGML mean {cg_hole.mean():.2f} dB, L1 regression {l1_hole.mean():.2f} dB")
  print(f"  PSNR on the image:  cGML best-of-{_NUM_SAMPLES.value} {cg_full.max(1).mean():.2f} dB, "
        f"cGML mean {cg_full.mean():.2f} dB, L1 regression {l1_full.mean():.2f} dB")
  print(f"  inputs where best-of-N beats L1 in the hole: {np.mean(cg_hole.max(1) > l1_hole):.1%}")
  if "y_box" in test:  # Two exact modes: which one each sample took, and the PSNR to the nearer.
    from multimodal_jax.data import digits_box  # pylint: disable=g-import-not-at-top
    top, bottom, left, right = digits_box.BOX
    in_box = lambda a: a[..., top:bottom, left:right, 0]
    y_box = test["y_box"]
    # A sample's mode is the nearer of the two targets over the box pixels; only
    # inputs whose digit does not already fill the box tell the modes apart.
    separable = np.abs(in_box(y_box) - in_box(y)).mean(axis=(-2, -1)) > 0.3  # [B]
    to_clean = np.abs(in_box(cg) - in_box(y)[:, None]).mean(axis=(-2, -1))  # [B, N]
    to_box = np.abs(in_box(cg) - in_box(y_box)[:, None]).mean(axis=(-2, -1))
    has_box = (to_box < to_clean)[separable]
    cg0 = paste(outputs["cgml_t0"])
    has_box_t0 = (np.abs(in_box(cg0) - in_box(y_box)[:, None]).mean(axis=(-2, -1)) <
                  np.abs(in_box(cg0) - in_box(y)[:, None]).mean(axis=(-2, -1)))[separable]
    l1_box = (np.abs(in_box(l1) - in_box(y_box)).mean(axis=(-2, -1)) <
              np.abs(in_box(l1) - in_box(y)).mean(axis=(-2, -1)))[separable]
    both = has_box.any(1) & (~has_box).any(1)
    two_modes[np.flatnonzero(separable)[both]] = True
    nearer = np.maximum(cg_hole, psnr(cg, y_box[:, None], mask[:, None]))
    l1_nearer = np.maximum(l1_hole, psnr(l1, y_box, mask))
    print(f"  two modes, on the {separable.sum()} inputs whose digit leaves the box dark: box mode in "
          f"{has_box.mean():.1%} of the cGML samples (training rate {digits_box.DEFAULT_BOX_RATE:.0%}) "
          f"and {l1_box.mean():.1%} of the L1 outputs; both modes among the samples of "
          f"{both.mean():.1%} of the inputs")
    print(f"  box mode at t = 0 (z_0 decoded, no Z-network steps): {has_box_t0.mean():.1%} of the samples, "
          f"both modes for {(has_box_t0.any(1) & (~has_box_t0).any(1)).mean():.1%} of the inputs")
    print(f"  PSNR in the hole to the nearer mode: cGML mean over samples {nearer.mean():.2f} dB, "
          f"L1 regression {l1_nearer.mean():.2f} dB")

  # The grid: inputs with both modes first, then the most distinct completions.
  rows = np.lexsort((-distinct, ~two_modes))[:8]
  n = min(_NUM_SAMPLES.value, 10)
  fig, axes = plt.subplots(len(rows), n + 3, figsize=(1.2 * (n + 3), 1.3 * len(rows)))
  for r, i in enumerate(rows):
    shown = ([known[i] * (1 - mask[i]) + 0.5 * mask[i], l1[i]] + list(cg[i, :n]) + [y[i]])
    titles = ["input", "L1"] + [f"z{j}" for j in range(n)] + ["truth"]
    for c, (image, title) in enumerate(zip(shown, titles)):
      axes[r, c].imshow(image[..., 0], cmap="gray", vmin=0, vmax=1)
      axes[r, c].set_xticks([])
      axes[r, c].set_yticks([])
      if r == 0:
        axes[r, c].set_title(title, fontsize=8)
  fig.tight_layout()
  fig.savefig(_OUT.value, dpi=80)
  print(f"Saved {_OUT.value}")


if __name__ == "__main__":
  jax_workarounds.install()  # Faster CPU compiles, identical values (multimodal_jax/jax_workarounds.py).
  app.run(main)
