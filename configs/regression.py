r"""The deterministic L1 regression baseline (the unimodal reference every paper beats).

  python -m multimodal_jax.main --config=configs/regression.py --workdir=/tmp/regression

Default: `toy_scenes` (layout -> image, 12 appearance modes per layout), 1000
steps at batch 16: about 2 minutes on a 2-core CPU, plus ~20 s to build the
dataset on first use. It learns the per-pixel median of the modes: sharp
layouts, one washed-out appearance (mode recall 0, nearest-mode recall 1/K). Variants:

  :runlocal            a few tiny steps on the `tiny` data (smoke test, seconds)
  :data=NAME           any registered dataset: toy_scenes, toy_scenes_colorization,
                       local_photos_sr, digits_completion
  :conditional         toy_scenes_conditional (each layout its own 1-16 modes): recall 1 expected
                       on the one-mode layouts only (evaluate's `mode_sets`)

`:data=local_photos_sr` (x8 super-resolution) adds the network's output to the
bicubic upsampling of the input (`model.global_skip='auto'`), trains with
random flips and 90° turns, 8 residual blocks at the 8x8 input and a cosine
learning-rate decay, and evaluates PSNR/SSIM every 250 steps (`eval/*`):
28.78 dB against bicubic's 28.26 dB on the 16 test inputs `evaluate` uses,
about 5.5 minutes on a 2-core CPU.

`:srim_net` is the SR baseline at SRIM's cost: configs/srim.py's RRDB, minibatch
and number of updates on local_photos_sr; `,vgg16` trains it with SRIM's VGG-16
distance as the loss (at lr 2e-4: it diverges at 1e-3); like SRIM's default its
outputs are projected onto the LR-consistent images (models/consistency.py),
`,no_cem` leaves them as they are.

Measurements: experiments/results/regression.md
"""

import ml_collections

from multimodal_jax import config_lib

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "data=toy_scenes_colorization", "data=local_photos_sr",
            "data=digits_completion", "runlocal,data=digits_completion", "conditional", "conditional,runlocal",
            "srim_net", "srim_net,vgg16", "srim_net,no_cem", "srim_net,vgg16,no_cem", "srim_net,runlocal"]

# configs/srim.py's default generator and budget: its regression baselines at the same cost
# (tests/test_super_resolution.py checks that the two stay equal).
SRIM_NET = {"name": "rrdb", "features": 32, "num_blocks": 4, "growth": 32, "dense_conv_style": "split",
            "consistency": "bicubic"}
SRIM_UPDATES, SRIM_MINIBATCH = 1200, 8


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, data="toy_scenes", conditional=False, srim_net=False,
                             vgg16=False, no_cem=False)
  if arg.conditional and arg.data != "toy_scenes":
    raise ValueError(f"configs/regression.py: `conditional` is the data toy_scenes_conditional; got data={arg.data}.")
  if arg.srim_net:
    arg.data = "local_photos_sr"
  elif arg.vgg16 or arg.no_cem:
    raise ValueError("configs/regression.py: `vgg16` and `no_cem` are options of the SR baselines `srim_net`.")
  config = config_lib.base_config()
  config.evals = config_lib.DEFAULT_EVALS  # evaluation/evaluators: each runs where it applies
  config.method = "regression"
  config.data.name = "toy_scenes_conditional" if arg.conditional else arg.data
  config.data.batch_size = 16
  config.model.features = 32
  config.model.num_blocks = 2
  if arg.data == "local_photos_sr":
    # Measured against bicubic (28.26 dB on the 16 test inputs evaluate uses): the network alone
    # 24.62 dB; + the global skip 28.45; + flips/turns, 4 blocks, cosine 28.68; 8 blocks 28.78.
    config.data.options = ml_collections.ConfigDict({"augment": True})  # flips and 90° turns
    config.model.num_blocks = 8  # at the 8x8 input: cheap next to the 64x64 convs
    config.optimizer.schedule = "cosine"
    config.train.eval_every = 250
  config.optimizer.learning_rate = 1e-3
  config.train.num_steps = 1000
  if arg.srim_net:  # SRIM's generator, |S~| and number of updates; the loss alone differs
    config.model = ml_collections.ConfigDict({**config.model.to_dict(), **SRIM_NET})
    if arg.no_cem:
      config.model.consistency = "none"
    config.data.batch_size = SRIM_MINIBATCH
    config.train.num_steps = SRIM_UPDATES
    if arg.vgg16:  # SRIM's :vgg16 distance as the loss: l2 pixels + l2 VGG-16 relu5_3, equal contribution
      config.distance = config_lib.default_distance_config("vgg16", pixel_norm="l2", pixel_weight=1.0,
                                                           layers=("relu5_3",), feature_norm="l2")
      # At 1e-3 this loss grows the RRDB trunk's gain until its output is ~1e10 by step ~300 (parameters
      # up ~30%): dead behind the clip before 2026-12-07, non-finite since (experiments/results/compare_runs.md).
      config.optimizer.learning_rate = 2e-4
  config.train.log_every = 50
  config.train.checkpoint_every = 250
  config.train.sample_every = 250

  if arg.runlocal:
    config.data.builder_config = "tiny"  # every local dataset has one (builds in seconds)
    config.data.batch_size = 8
    config.model.features = 8
    config.model.num_blocks = 1
    config_lib.set_runlocal_schedule(config, checkpoint_every=3)
  config.lock()
  return config
