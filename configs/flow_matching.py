r"""Conditional flow matching, the iterative reference beside the five methods (issue 42).

  python -m multimodal_jax.main --config=configs/flow_matching.py --workdir=/tmp/flow_matching

Straight-path (rectified) conditional flow matching, `method='flow_matching'`
(methods/flow_matching.py: Lipman et al. 2023, Liu et al. 2023): a small U-Net
(models/velocity_unet.py, widths 8-16-32-64, the layout fed at every level)
predicting the clean sample (v = (u_hat - u_t) / (1 - t), Li & He 2025), t ~ U(0, 1),
l2 on v, an EMA of the parameters, 16 Euler steps at sampling. Default: `toy_scenes`
(12 exactly known appearance modes per layout), 2400 updates of 32: 20 minutes on
a 2-core CPU beside other jobs (layout_imle.py's default: 17 beside the same).
Mode recall 0 at precision 0 (nearest-mode recall 0.92: the samples spread over
the modes, none within their tolerance); layout cIMLE 0.990 / 0.950, L1
regression 0 / 0. Variants:

  :runlocal        the `tiny` scenes, a narrow U-Net, a few steps (smoke test, seconds)
  :sr              local_photos_sr x8 (8x8 -> 64x64): the flow carries (y - bicubic(x)) x 4
  :digits          digits_completion (masked top -> whole digit)
  :logit_normal    t ~ sigmoid(N(0, 1)) (Esser et al. 2024) instead of U(0, 1)
  :heun            Heun's corrector at sampling (two evaluations per step, the last Euler's)

`--config.flow_matching.prediction=velocity` is Lipman et al.'s parameterisation.
`evaluate --override=flow_matching.sample_steps=N` re-samples a trained run.
Measurements (the N sweep, the SR row): experiments/results/flow_matching.md
"""

import ml_collections

from multimodal_jax import config_lib

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "sr", "sr,runlocal", "digits", "digits,runlocal", "logit_normal", "heun"]


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, sr=False, digits=False, logit_normal=False, heun=False)
  if arg.sr and arg.digits:
    raise ValueError("configs/flow_matching.py: `sr` and `digits` are two datasets; pick one.")
  config = config_lib.base_config()
  config.evals = config_lib.DEFAULT_EVALS
  config.method = "flow_matching"
  config.data.name = "toy_scenes"
  config.data.batch_size = 32

  config.model = ml_collections.ConfigDict()
  config.model.name = "velocity_unet"
  config.model.features = (8, 16, 32, 64)  # 32x64 ... 4x8: narrow where the image is large (CPU cost)
  config.model.num_blocks = 1
  config.model.time_features = 64
  config.model.time_conditioning = "add"
  config.model.condition_every_level = True  # the layout at every level, as CRN (models/velocity_unet.py)

  config.flow_matching = ml_collections.ConfigDict()
  config.flow_matching.time_sampling = "logit_normal" if arg.logit_normal else "uniform"
  config.flow_matching.logit_normal_mean = 0.0
  config.flow_matching.logit_normal_std = 1.0
  config.flow_matching.sample_steps = 16
  config.flow_matching.solver = "heun" if arg.heun else "euler"
  config.flow_matching.skip = "auto"  # 'bicubic' for super-resolution: the flow carries the residual
  config.flow_matching.scale = 2.0  # [0, 1] -> [-1, 1]
  config.flow_matching.ema_decay = 0.999
  config.flow_matching.prediction = "sample"  # x-prediction (Li & He 2025): no input noise left in the samples
  config.flow_matching.min_one_minus_t = 0.05

  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_steps = 100
  config.train.num_steps = 2400
  config.train.log_every = 200
  config.train.checkpoint_every = 800
  config.train.sample_every = 800
  config.train.num_grid_samples = 6
  config.train.final_evals = ("modes", "mode_sets", "diversity", "lpips_diversity")

  if arg.sr:
    config.data.name = "local_photos_sr"
    config.data.builder_config = "x8_64"
    config.data.batch_size = 16
    config.data.options = ml_collections.ConfigDict({"hr_size": 256, "augment": True})
    config.model.features = (8, 16, 32, 64)  # 64x64 ... 8x8
    config.flow_matching.scale = 4.0  # the bicubic residual is small: bring it nearer N(0, 1)'s scale
    config.train.eval_every = 1000
    config.train.final_evals = ()
  if arg.digits:
    config.data.name = "digits_completion"
    config.train.final_evals = ()

  if arg.runlocal:
    config.data.builder_config = "tiny"
    config.data.batch_size = 8
    if arg.sr:
      config.data.options.hr_size = 64
    config.model.features = (8, 16)
    config.model.time_features = 16
    config.flow_matching.sample_steps = 4
    config.flow_matching.ema_decay = 0.9
    config_lib.set_runlocal_schedule(config, checkpoint_every=3)
  config.lock()
  return config
