r"""cGML on the toy of cgml_iclr2021 §4 / Fig. 3: y = ±4 (x, x², x³), against L1 regression.

  python experiments/cgml_toy3d.py [--workdir=/tmp/cgml_toy3d] [--out=experiments/cgml_toy3d.png]

Trains three models through the one loop (`train.train_and_evaluate`), each in
`--workdir/<name>` (a finished run is reused; rerunning only re-evaluates):
  cgml          configs/cgml.py:toy3d              (Fig. 3e)
  cgml_no_rho   configs/cgml.py:toy3d,no_momentum  (Fig. 3c, the "w/o rho" ablation)
  l1            configs/regression.py:data=toy3d   (Fig. 3b)
then draws N = 32 samples (z_0 ~ U(S^n), T iterations of Eq. 4) for each of the
512 test x and prints, with tol = 5% of the output range (0.4 in y units,
max-abs over the 3 coordinates):
  precision   share of samples within tol of a true branch (1 - off-manifold share);
  coverage    share of test x for which both branches are within tol of some sample
              (also over |x| >= 0.1 only, where the branches are > 2 tol apart);
  |y| of the L1 baseline (Fig. 3b: "L1 loss generates the line y = 0").
Saves the figure (samples per output coordinate, and precision / coverage
along the inference iterations t = 0..100) to --out.

About 20 minutes on a shared 2-core CPU (the two cGML runs dominate: 30000
generator updates each, i.e. 3000 batches x l = 10 rounds of z, Z and G/H steps,
~8 minutes each). The G/H and z updates do not depend on Z (Alg. 1 trains Z on
the side), so both cGML runs share G/H exactly and differ only in Z and Eq. 4.
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
from multimodal_jax.data import toy3d
from multimodal_jax.methods import base as methods_base

REPO = exp_util.REPO
_WORKDIR = flags.DEFINE_string("workdir", os.path.join(tempfile.gettempdir(), "cgml_toy3d"),
                               "Where the three runs live (reused if finished).")
_OUT = flags.DEFINE_string("out", os.path.join(REPO, "experiments", "cgml_toy3d.png"), "Figure path.")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "TFDS data dir ('' = the library default).")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 32, "Samples (starting codes z_0) per test x.")
_SEED = flags.DEFINE_integer("seed", 0, "config.seed of the runs.")
_TOLERANCE = 0.05  # Of the output range.
_MAX_T = 100  # Inference iterations shown in the figure.

RUNS = {
    "cgml": ("cgml.py", "toy3d"),
    "cgml_no_rho": ("cgml.py", "toy3d,no_momentum"),
    "l1": ("regression.py", "data=toy3d"),
}


def load_config(name: str, arg: str):
  config = exp_util.load_config(name, arg, _SEED.value, _DATA_DIR.value)
  if name == "regression.py":  # Converges (to a point between the branches) in ~500 steps.
    config.data.batch_size = 64
    config.train.num_steps = 1500
    config.train.log_every = 500
    config.train.checkpoint_every = 1500
    config.train.sample_every = 0
  return config


def score(x_N: np.ndarray, y_NxSx3: np.ndarray) -> dict[str, float]:
  """precision / coverage of samples y (paper units) of test inputs x."""
  err_NxSx2 = toy3d.branch_errors(x_N[:, None], y_NxSx3)
  hit_NxSx2 = err_NxSx2 <= _TOLERANCE
  both_N = hit_NxSx2[..., 0].any(1) & hit_NxSx2[..., 1].any(1)
  apart = np.abs(x_N) >= 0.1
  return {"precision": float(hit_NxSx2.any(-1).mean()), "coverage": float(both_N.mean()),
          "coverage_|x|>=0.1": float(both_N[apart].mean())}


def main(argv):
  del argv
  results, samples, curves = {}, {}, {}
  test = None
  for name, (config_file, arg) in RUNS.items():
    workdir = os.path.join(_WORKDIR.value, name)
    config = load_config(config_file, arg)
    exp_util.train_or_reuse(config, workdir)
    config, method, state, batch_spec = inference.load_trained(workdir)
    if test is None:
      test = pipeline.load_eval_examples(config, 512)
    x = jnp.asarray(test["x"])
    x_N = np.asarray(test["x"]).reshape(-1)
    rng = jax.random.PRNGKey(1)
    out = jax.jit(method.sample, static_argnums=3)(state, x, rng, _NUM_SAMPLES.value)
    y = toy3d.denormalize(np.asarray(out).reshape(len(x_N), -1, 3))
    samples[name] = (x_N, y)
    results[name] = score(x_N, y)
    if "trajectory" not in method.extras:  # the regression baseline: one output, no inference steps
      results[name]["mean_|y|"] = float(np.abs(y[:, 0]).mean())
      results[name]["max_|y|"] = float(np.abs(y[:, 0]).max())
    else:
      results[name]["T"] = config.cgml.inference_steps
      # The same nets, inferred for longer: scores along the iterations t = 0.._MAX_T.
      config.unlock()
      config.cgml.inference_steps = _MAX_T
      long_method = methods_base.make_method(config, batch_spec)
      traj = jax.jit(long_method.extras["trajectory"], static_argnums=3)(state, x, rng,
                                                                         _NUM_SAMPLES.value)
      y_t = toy3d.denormalize(np.asarray(traj).reshape(len(x_N), _NUM_SAMPLES.value, _MAX_T + 1, 3))
      curves[name] = [score(x_N, y_t[:, :, t]) for t in range(_MAX_T + 1)]
      # t = 0: z_0 decoded, no Eq. 4 step (Fig. 3's claim is precision at t = T above it).
      results[name].update({f"{k}_t0": v for k, v in curves[name][0].items() if k in ("precision", "coverage")})

  print(f"\nToy3d (cgml_iclr2021 Fig. 3), {len(test['x'])} test x, {_NUM_SAMPLES.value} samples each, "
        f"tolerance {_TOLERANCE:.0%} of the output range:")
  for name, r in results.items():
    print(f"  {name:12s} " + "  ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                                       for k, v in r.items()))
  for name in ("cgml", "cgml_no_rho"):
    print(f"  {name:12s} off-manifold samples: {1 - results[name]['precision']:.1%}")

  fig = plt.figure(figsize=(12, 15))
  grid = fig.add_gridspec(5, 3)
  x_line = np.linspace(-1, 1, 200)
  truth = toy3d.branch_points(x_line)
  rows = [("ground truth", None), ("L1 regression", "l1"), ("cGML w/o rho", "cgml_no_rho"),
          ("cGML", "cgml")]
  for row, (title, name) in enumerate(rows):
    for d in range(3):
      ax = fig.add_subplot(grid[row, d])
      ax.plot(x_line, truth[:, 0, d], "k-", lw=0.8)
      ax.plot(x_line, truth[:, 1, d], "k-", lw=0.8)
      if name is not None:
        x_N, y = samples[name]
        ax.scatter(np.repeat(x_N, y.shape[1]), y[..., d].reshape(-1), s=1, alpha=0.3,
                   color="C0" if name != "l1" else "C3")
      ax.set_ylim(-4.5, 4.5)
      ax.set_title(f"{title}: y{d + 1}" + (f" (precision {results[name]['precision']:.2f}, "
                                          f"coverage {results[name]['coverage']:.2f})"
                                          if name and d == 0 else ""), fontsize=9)
  for col, key in enumerate(("precision", "coverage")):
    ax = fig.add_subplot(grid[4, col])
    for name, style in (("cgml", "C0-"), ("cgml_no_rho", "C1--")):
      ax.plot([c[key] for c in curves[name]], style, label=name)
    ax.axvline(results["cgml"]["T"], color="grey", lw=0.5)
    ax.set_xlabel("inference iteration t (Eq. 4)")
    ax.set_title(key, fontsize=9)
    ax.set_ylim(0, 1.02)
    ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(_OUT.value, dpi=80)
  print(f"Saved {_OUT.value}")


if __name__ == "__main__":
  jax_workarounds.install()  # Faster CPU compiles, identical values (multimodal_jax/jax_workarounds.py).
  app.run(main)
