r"""Conditional IMLE from semantic layouts (cimle_semantic_layouts_iccv2019, cimle_srim_ijcv §5.2).

  python -m multimodal_jax.main --config=configs/layout_imle.py --workdir=/tmp/layout_imle

The conditional IMLE trainer of configs/srim.py (`method='imle'`, IJCV Alg. 1)
with the layouts paper's pieces: a CRN generator (models/crn.py, §3.3.1) fed
`noise_channels` extra input channels at every module, produced by the noise
encoder from a small Gaussian code (§3.3.2); dataset rebalancing (the pool
drawn in proportion to the KDE rarity of its classes' mean colours) and loss
rebalancing (the rarity mask weighting the distance), §3.4, computed once over
the training set as the method's prepared state.

Default: `toy_scenes` (32x64 layouts, 12 exactly known appearance modes per
layout), a 4-module CRN (4x8 -> 32x64), the pixel l1 distance (no VGG weights
here; `:vgg` for the paper's conv1_2..conv5_2 distance with equal-contribution
weights). Variants:

  :runlocal       the `tiny` scenes, a narrow CRN, a few steps (smoke test, seconds)
  :no_encoder     the ablation without the noise encoder: d noise channels drawn directly
  :no_rebalance   the ablation without dataset and loss rebalancing
  :vgg            l1 on VGG-19 conv1_2 ... conv5_2, equal contribution (needs converted weights)
  :skewed         toy_scenes with rare appearances (mode k with p ~ 0.7^k), where rebalancing
                  has something to do; evaluate reports `mode_recall_rare` (the rarer half)
  :crn_best_of_k  baseline (Table 2): Chen & Koltun's CRN with k = 9 outputs and the
                  best-of-k loss (`method='regression'`, model.num_outputs = 9, no noise)
  :crn_noise_regression
                  baseline (Table 2): CRN + noise channels trained by plain regression
  :gta5           the paper's setting (§4.2): GTA-5 at 256x512 (data/street_layouts.py, frames
                  in manual_dir), 20 classes, the 7-module CRN of §3.3.1, 10 noise channels,
                  |S| = 400, m = 10, L = 10000, |S~| = 1, lr 1e-5, the VGG-19 distance
  :cityscapes     the same on tfds `cityscapes/semantic_segmentation` (manual download)

Default budget (measured on toy_scenes, evaluate on 32 layouts, 64 samples
each, on a 2-core CPU shared with other jobs): a narrow CRN (widths 32-32-24-16,
noise encoder 32 wide), |S| = 32, m = 16, L = 80, |S~| = 16, lr 2e-3 with a
cosine schedule, 4800 updates (60 rounds; 14 min with other jobs on the CPU,
5.2 updates/s at the end): mode recall 0.82 (nearest mode, no tolerance: 0.98) at
precision 0.53, best-of-16 PSNR 25.9 dB. Run to 5040 updates: 0.91 / 0.58; L = 40
and 4000 updates: 0.89 / 0.56 -- the spread between runs is ~0.05. The paper's widths
(64-64-48-32, encoder 100) at the same wall time reach 1500 updates and recall
0.62 at precision 0.32: on a CPU, narrow convolutions buy more updates than
width buys quality. L1 regression: recall 0 (nearest 1/K). Not yet reached
(issue #10): precision >= 0.9 -- random codes still land between modes, and 35%
of the samples take some classes' colours from one mode and others' from
another. Measured on the same budget (CPU shared by 2-4 jobs): m = 4 / 8 / 16 /
32 / 64 samples per selection give recall 0.19 / 0.44 / 0.82 / 0.91 / 0.93 at
precision 0.08 / 0.16 / 0.53 / 0.60 / 0.61 (m = 32 costs twice the selection
time); a fresh perturbation sigma N(0, I) of the selected code at every update
(training a neighbourhood of it) lowers both: sigma = 0.3 gives 0.73 / 0.36,
sigma = 0.8 gives 0.04 / 0.01.
"""

import ml_collections

from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "no_encoder", "no_rebalance", "no_encoder,no_rebalance", "vgg",
            "no_encoder,runlocal", "crn_best_of_k", "crn_noise_regression", "crn_best_of_k,runlocal",
            "crn_noise_regression,runlocal", "gta5", "cityscapes", "skewed", "skewed,no_rebalance",
            "skewed,no_encoder"]

# cimle_semantic_layouts_iccv2019 §3.3.1: the distance's VGG-19 layers.
CRN_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, no_encoder=False, no_rebalance=False, vgg=False,
                             crn_best_of_k=False, crn_noise_regression=False, gta5=False, cityscapes=False,
                             skewed=False)
  config = config_lib.base_config()
  config.method = "imle"
  config.data.name = "toy_scenes"
  config.data.batch_size = 32  # the pool S
  config.data.builder_config = "skewed" if arg.skewed else ""

  config.model = ml_collections.ConfigDict()
  config.model.name = "crn"
  config.model.features = (32, 32, 24, 16)  # M0 at 4x8 ... M3 at 32x64 (narrow: see the docstring)
  config.model.base_height = 4
  config.model.base_width = 8
  config.model.noise_channels = 10  # d (§4.2)
  config.model.noise_encoder = not arg.no_encoder
  config.model.encoder_features = 32  # §3.3.2 uses 100 (:gta5, :cityscapes)
  config.model.noise_encoder_input_channels = 4  # e: the Gaussian code's size (not in the paper)
  config.model.noise_encoder_code = "spatial"  # 'spatial' (4x8xe) or 'vector' (e, broadcast); models/crn.py
  config.model.num_outputs = 1

  config.distance = perceptual.default_distance_config("pixel", pixel_norm="l1")
  config.imle = ml_collections.ConfigDict()
  config.imle.selection_distance = perceptual.default_distance_config("pixel", pixel_norm="l1")
  config.imle.num_samples = 16  # m
  config.imle.chunk_size = 16
  config.imle.example_blocks = 1
  config.imle.updates_per_selection = 80  # L
  config.imle.minibatch_size = 16  # |S~|
  config.imle.code_channels = 10  # used by the code drawn at the layout's size (:no_encoder)
  config.imle.perturbation = 0.0
  config.imle.zero_code_steps = 0
  config.imle.bilinear_from_step = -1  # CRN has no upsampling schedule
  config.imle.calibration_examples = 16
  config.imle.time_steps = True
  config.imle.rebalance_dataset = not arg.no_rebalance
  config.imle.rebalance_loss = not arg.no_rebalance
  config.imle.rebalance_top_classes = 5

  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "cosine"
  config.train.num_steps = 4800  # 60 rounds of L = 80
  config.train.log_every = 400
  config.train.checkpoint_every = 1200
  config.train.sample_every = 1200
  config.train.num_grid_samples = 6

  if arg.vgg or arg.gta5 or arg.cityscapes:
    distance = perceptual.default_distance_config("vgg", pixel_weight=0.0, layers=CRN_LAYERS,
                                                  feature_norm="l1")
    config.distance = distance
    config.imle.selection_distance = distance.copy_and_resolve_references()

  if arg.gta5 or arg.cityscapes:
    config.data.name = "gta5_layouts" if arg.gta5 else "cityscapes_layouts"
    config.data.batch_size = 400  # |S|
    config.data.num_workers = 8
    config.model.features = (1024, 1024, 1024, 1024, 1024, 512, 512)  # M0..M6: 4x8 -> 256x512
    config.model.encoder_features = 100  # §3.3.2
    config.imle.num_samples = 10  # m
    config.imle.chunk_size = 2
    config.imle.example_blocks = 8  # memory: 50 layouts x 2 codes at 256x512 per generator call
    config.imle.updates_per_selection = 10_000  # L (the paper's K)
    config.imle.minibatch_size = 1  # |S~|
    config.optimizer.learning_rate = 1e-5  # eta
    config.train.num_steps = 1_000_000
    config.train.log_every = 1000
    config.train.checkpoint_every = 10_000
    config.train.sample_every = 10_000

  if arg.crn_best_of_k or arg.crn_noise_regression:
    config.method = "regression"  # the same CRN, no IMLE (the imle section is unused)
    config.data.batch_size = 16
    config.model.noise_encoder = False
    config.model.noise_channels = 10 if arg.crn_noise_regression else 0
    config.model.num_outputs = 9 if arg.crn_best_of_k else 1
    config.train.num_steps = 2000

  if arg.runlocal:
    config.data.builder_config = "tiny"
    config.data.batch_size = 8
    config.model.features = (8, 8, 8, 8)
    config.model.encoder_features = 8
    config.imle.num_samples = 4
    config.imle.chunk_size = 2
    config.imle.updates_per_selection = 2
    config.imle.minibatch_size = 2
    config.imle.calibration_examples = 2
    config.model.num_outputs = min(config.model.num_outputs, 3)
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
