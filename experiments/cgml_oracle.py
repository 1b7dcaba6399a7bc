r"""How much could cGML's Z-network add on toy_scenes? An oracle for Eq. 4 (cgml_iclr2021 §2.1-2.2).

  python experiments/cgml_oracle.py --workdir=RUN [--num_inputs=32 --steps=2 --beta=0.5]

RUN is a trained `configs/cgml.py:toy_scenes` run. On the first `--num_inputs`
test layouts, `--samples` codes z_0 ~ U(S^n) per layout from PRNGKey(--seed)
(all rows start from these codes), prints mode recall / precision /
nearest-mode recall (`metrics.mode_metrics`, the dataset's tolerance) for:
  t = 0         G(z_0), no Z step (what the calibrated default samples where
                every gain is 0);
  oracle t      each z_0 descends, t times, the L1 to the true mode its own
                sample G(z_0) is nearest to: z <- project(z - beta grad_z E),
                Alg. 1 line 5 with the mode in place of a target. A Z-network
                that had learned E[z_{t+1} | z_t, x] towards the mode whose
                basin z_t is in (§2.1) could at best do this;
  best of M     per true mode, the lowest error over `--best_of` uniform codes:
                the share of modes G renders within the tolerance at all.
Measured rows: experiments/results/cgml.md.
"""

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax import inference
from multimodal_jax.data import pipeline
from multimodal_jax.evaluation import evaluators
from multimodal_jax.evaluation import metrics
from multimodal_jax.losses import latent_geometry

_WORKDIR = flags.DEFINE_string("workdir", None, "A trained cgml toy_scenes run.", required=True)
_NUM_INPUTS = flags.DEFINE_integer("num_inputs", 32, "Test layouts.")
_SAMPLES = flags.DEFINE_integer("samples", 64, "Codes z_0 per layout.")
_STEPS = flags.DEFINE_integer("steps", 2, "Oracle descent steps.")
_BETA = flags.DEFINE_float("beta", 0.5, "Oracle step size (the training z step's beta).")
_BEST_OF = flags.DEFINE_integer("best_of", 1024, "Uniform codes per layout for the best-of-M row.")
_SEED = flags.DEFINE_integer("seed", 0, "Key of the codes.")


def _report(name: str, samples, modes, tolerance: float) -> None:
  m = metrics.mode_metrics(np.asarray(samples), np.asarray(modes), tolerance)
  print(f"{name:<34} recall {m['mode_recall']:.3f}  precision {m['mode_precision']:.3f}  "
        f"nearest {m['mode_recall_nearest']:.3f}", flush=True)


def main(argv):
  del argv
  config, method, state, _ = inference.load_trained(_WORKDIR.value)
  if config.method != "cgml":
    raise app.UsageError(f"{_WORKDIR.value} is a {config.method!r} run; this oracle needs a cgml run.")
  batch = pipeline.load_eval_examples(config, _NUM_INPUTS.value, allow_fewer=True)
  ctx = evaluators.Context(config, method, state, _WORKDIR.value, batch, samples=None)
  if ctx.true_modes() is None:
    raise app.UsageError(f"{config.data.name} has no known modes: the oracle needs toy_scenes-like data.")
  modes_BxKx = jnp.asarray(ctx.true_modes())
  tolerance = ctx.dataset_spec().mode_tolerance
  x = jnp.asarray(batch["x"])
  decode = jax.jit(lambda z: method.extras["decode"](state, x, z))
  shape = (x.shape[0], _SAMPLES.value, config.cgml.z_dim)
  z0 = latent_geometry.sample_sphere(jax.random.PRNGKey(_SEED.value), shape)
  samples0 = decode(z0)
  _report("t = 0 (z_0 decoded)", samples0, modes_BxKx, tolerance)

  nearest_BxN = np.argmin(metrics.mode_errors(samples0, modes_BxKx), axis=-1)
  target = jnp.take_along_axis(modes_BxKx, jnp.asarray(nearest_BxN)[:, :, None, None, None], axis=1)
  grad = jax.jit(jax.grad(lambda z: jnp.sum(jnp.mean(jnp.abs(decode(z) - target), axis=(2, 3, 4)))))
  z = z0
  for t in range(1, _STEPS.value + 1):
    z = latent_geometry.project_to_sphere(z - _BETA.value * grad(z))
    move = float(jnp.mean(jnp.linalg.norm(z - z0, axis=-1)))
    _report(f"oracle, {t} step(s), mean move {move:.3f}", decode(z), modes_BxKx, tolerance)

  best_BxK = np.full(modes_BxKx.shape[:2], np.inf)
  for i in range(max(_BEST_OF.value // _SAMPLES.value, 1)):
    codes = latent_geometry.sample_sphere(jax.random.PRNGKey(_SEED.value + 1 + i), shape)
    best_BxK = np.minimum(best_BxK, metrics.mode_errors(decode(codes), modes_BxKx).min(axis=1))
  print(f"best of {_BEST_OF.value} codes per mode: {np.mean(best_BxK < tolerance):.3f} of the modes "
        f"within the tolerance {tolerance} (median error {np.median(best_BxK):.4f})", flush=True)


if __name__ == "__main__":
  app.run(main)
