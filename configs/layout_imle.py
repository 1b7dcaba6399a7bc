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
  :skewed_mild    the same with p ~ 0.85^k (mode 0 17.5% of the images, mode 11 2.9%)
  :crn_best_of_k  baseline (Table 2): Chen & Koltun's CRN with k = 9 outputs and the
                  best-of-k loss (`method='regression'`, model.num_outputs = 9, no noise)
  :crn_noise_regression
                  baseline (Table 2): CRN + noise channels trained by plain regression
  :gta5           the paper's setting (§4.2): GTA-5 at 256x512 (data/street_layouts.py, frames
                  in manual_dir), 20 classes, the 7-module CRN of §3.3.1, 10 noise channels,
                  |S| = 400, m = 10, L = 10000, |S~| = 1, lr 1e-5, the VGG-19 distance
  :cityscapes     the same on tfds `cityscapes/semantic_segmentation` (manual download)

Default budget (toy_scenes; evaluate on 32 layouts, 64 samples each; "idle" =
nothing else on the 2-core CPU): a narrow CRN (widths 32-32-24-16, noise
encoder 32 wide, its output bounded: z_hat = tanh(4 E(L, z)),
`model.noise_encoder_output_gain`) fed by a 2-number Gaussian code per image
(noise_encoder_code 'vector', e = 2), |S| = 64, m = 16 codes per layout drawn
as one shifted lattice (`imle.stratified_codes`), L = 40, |S~| = 16, lr 2e-3
with a cosine schedule, 4800 updates (120 rounds; 506-551 s on one core of a
2-core Xeon with another run on the other core, 6.9-9.8 min wall idle before
the bounded output, which costs nothing measurable; a selection of 64 x 16
codes 1.6-1.8 s, an update 0.05-0.07 s): over seeds 0-5 mode recall
0.995 / 0.997 / 0.995 / 0.995 / 0.997 / 0.992 at precision
0.923 / 0.941 / 0.927 / 0.905 / 0.932 / 0.916 (mean 0.924; each run on one core beside
another). L1 regression: recall 0 (nearest exactly 1/K).
With the paper's linear encoder output (the default before, same machine):
recall 0.992 / 0.984 / 0.979 / 0.992 / 0.995 / 0.992 (nearest mode, no
tolerance, seeds 0-2: 0.995 / 0.992 / 0.990) at precision 0.879 / 0.902 /
0.835 / 0.848 / 0.857 / 0.878 (mean 0.867); seed 0 on both cores, idle: 0.979
at 0.865 in 431 s (thread counts round differently, and IMLE amplifies it).
With Alg. 1's independent draws (before that, same machine type): 0.938 /
0.901 / 0.914 at precision 0.696 / 0.650 / 0.695 (seeds 0-2); with the spatial
4x8x4 code and independent draws: 0.815 / 0.930 (seeds 0 / 1) at precision
0.550 / 0.588.

Why a bounded encoder output (models/crn.py). With the paper's linear last
conv, the encoder and the CRN (leaky ReLU, layer norm over each example) are
close to positively homogeneous in z: the output depends mostly on z's
direction. Precision was the same at every radius (0.85 / 0.89 / 0.88 of a
circle's angles decoded within tolerance at radius 0.3 / 1 / 2, seed 0), and
scaling the code x3 changed nothing (below). The plane decoded as a fan of
12 wedges, with a blended band between neighbours that took a fixed share of
every circle (17% at radius 1, seed 3). The imprecise 13% of samples were
these bands (mixed modes across classes) and drifts inside a cell (one
mode's colours 0.036-0.056 off). tanh(g .) lets the d channels saturate:
where all of them do, the encoded noise is constant, so the cell is flat, and
a border is a strip about 1 / (g |grad E|) wide, narrower as |z| grows.
Seed 0: g = 1, 0.995 / 0.909; g = 4, 0.995 / 0.923.
Tried with the linear output, none kept (seed 0 / 2; the default then 0.879
/ 0.835): layer norm over each pixel's channels instead of the example's
features, 0.982 / 0.809 and 0.992 / 0.877; also training, for each target,
the runner-up code when its distance is within a margin of the nearest's (to
pull codes at a cell's border into it; twice the update cost, 1013 s),
margin 0.015 / 0.03: 0.971 / 0.817 and 0.747 / 0.653. Everything measured
below also used the linear output.

Why stratified codes (losses/imle_selection.py). With m independent codes
the nearest-sample objective pays for blends between modes: when none of a
layout's 16 codes lands in the cell of the target's mode (25% of the time
for 12 equal cells), a blend next to that cell is nearer than any other
mode, so training keeps blends between the cells. A shifted lattice of 16
N(0, I) codes misses a cell of 1/12 of the mass 6.5% of the time, so blends
stop paying: precision 0.70 -> 0.88 (seed 0), and the selected sample's
distance at the end of training 0.021 -> 0.009. Measured on the way (seed 0
unless said): m = 24, 0.984 / 0.851 (10.9 min on one core); 6000 updates,
seeds 0 / 2: 0.982 / 0.861 and 0.990 / 0.870 (no gain over 4800); the
checkpoint at 3600 updates, seeds 0 / 1 / 2: precision 0.791 / 0.889 / 0.794.
Of seed 0's imprecise samples (11.5%), 7.9 points mix the modes of different
classes and 3.6 take one mode's colours 0.036-0.052 from it. With
independent draws, a noise encoder 100 wide (the paper's) instead of 32:
0.938 / 0.650 (seed 0), no gain.
Tried since, none kept (recall / precision, seeds 0 / 2, one core each
beside another run; the lattice default: 0.992 / 0.879 and 0.979 / 0.835):
the lattice through Box-Muller instead of the quantile, so a layout's 16 codes
take 16 angles 22.5 degrees apart and no 30-degree wedge is ever missed:
0.984 / 0.822 and 0.977 / 0.813; a label-free code path (a 3-layer MLP of the
code, the same d values at every pixel): 0.990 / 0.866 and 0.992 / 0.875, with
9% of the samples still mixing modes across classes (the CRN's classes, not
the encoder's cells, disagree); a 1-number code (e = 1, 12 cells on a line):
0.977 / 0.800 and 0.982 / 0.829; a wider CRN, 48-48-32-24: 0.987 / 0.889 and
0.984 / 0.875 (+0.01 and +0.04, still below 0.9; 958 s on one core beside
another run, about 1.3x the default's time there, so near the 10-minute
budget on an idle CPU); seeds 1 / 3: 0.987 / 0.861 and 0.990 / 0.875 (979 s
each), so over seeds 0-3 a mean of 0.875 against the default's 0.866 there.
Tried later, none kept (seed 0, recall / precision, each run on one core beside
another; the default: 0.992 / 0.879): lr 1e-3 / 4e-3: 0.990 / 0.842 and 0.971 /
0.833; without loss rebalancing (rebalance_loss=False, also unmasking the
selection): 0.990 / 0.878; m = 12 (about one lattice code per mode): 0.906 /
0.776; fresher or staler selections at the same selection cost per update,
|S| = 32, L = 20 and |S| = 128, L = 80: 0.979 / 0.814 and 0.958 / 0.791;
|S~| = 32, L = 20, 2400 updates: 0.992 / 0.843; a squared l2 training loss
(selection still l1): 0.982 / 0.818; FiLM-style modulation of every layer norm
by a 2-layer MLP of the code, on top of the encoder's channels: 0.984 / 0.846;
wider early modules, 64-64-24-16 (seeds 0 / 2): 0.982 / 0.860 and 0.990 / 0.853;
a noise encoder 64 wide with d = 16 channels: 0.979 / 0.867; Adam b1 = 0.5:
0.974 / 0.860; a wider full-resolution module, 32-32-24-24 (seeds 0 / 2; 832 s):
0.974 / 0.826 and 0.990 / 0.890.
Every setting lands within the default's seed-to-seed spread (0.835-0.902).
Where the error sits (seed 3, precision 0.848): the median sample is 0.0153
from its nearest mode, as far as a real image is from its mode's render (the
texture's mean |noise|, 0.015); in precise samples, interior pixels are off by
0.012 on average and pixels at a class edge (35% of a 32x64 scene) by 0.022.
Of the imprecise 15%, 9.7 points mix modes across classes (codes on the bands
where G passes from one mode to the next: on a circle of radius 1 in the code
plane, 17% of the angles decode imprecisely) and 6.1 take one mode's colours
0.036-0.056 from it (the cells of the code plane are not flat).

Why a vector code. The appearance of a toy scene is one choice for the whole
image, and a sample is imprecise mostly when its classes disagree (of the
spatial default's samples, 32% mixed modes across classes, 7% within a class
between the image's halves). With e = 2 the decoded modes can be drawn over the
code plane; with independent draws: 12 cells in a fan around the origin, each separated from the next by
a blended band about 0.125 wide, with some modes squeezed into thin stripes near
the origin, where the Gaussian puts most of its mass; the share of N(0, I)
landing inside a cell (0.68) is the precision. Mixed samples fall to 20%.
(With stratified codes the share of a circle's angles decoded within tolerance
is 0.85 / 0.89 / 0.88 at radius 0.3 / 1 / 2, seed 0.)
Measured with the vector code and independent draws on this machine (seed 0): e = 3: 0.919 / 0.672,
e = 4: 0.951 / 0.679; the code scaled x3 before the encoder: 0.927 / 0.610 (the
cells become parallel stripes, no sharper); selection ignoring samples already
within 0.012 of the target (to pull the blended bands into the cells): 0.646 /
0.495; ignoring, as RS-IMLE (Vashist et al., 2024) rejects, the samples whose mean
absolute pixel error to the target is below 0.025 / 0.035 (the nearest of the rest
is trained): 0.867 / 0.676 and 0.630 / 0.542, against 0.945 / 0.716 without
rejection on that machine type (an AMD EPYC; the seed-0 numbers above are a Xeon's). Sampling z ~ N(0, T^2 I) from the
default's G: T = 0.5 / 1.5 / 2 / 3 gives 0.799 / 0.681, 0.891 / 0.618, 0.820 / 0.501,
0.690 / 0.309 (T = 1: 0.938 / 0.696). XLA:CPU rounds differently on different CPUs and IMLE amplifies it: the
spatial default, seed 0, measured 0.96 / 0.63 on the machine of the numbers
below and 0.815 / 0.550 here, so compare settings run on one machine.

What was measured on the way (spatial code, seed 0, 4800 updates unless said):
  |S| = 32, L = 80 (the default before)       recall 0.91, precision 0.58 (5.4 min idle)
  ... 9600 updates                            0.86 / 0.52: longer training does not help
  |S| = 64, L = 40                            0.96 / 0.63: 4x the codes trained, 10 updates each
  |S| = 128, L = 40                           0.85 / 0.49: 8x the codes, 5 updates each: too few
  |S| = 64, L = 40, m = 32                    0.95 / 0.71, but ~9.5 min idle (twice the selection)
  ... :no_rebalance (|S| = 32, L = 80)        0.76 / 0.51: loss rebalancing helps precision too
  m = 4 / 8 / 16 / 32 / 64 (|S| = 32, L = 80; loaded CPU)
                                              recall 0.19 / 0.44 / 0.82 / 0.91 / 0.93 at
                                              precision 0.08 / 0.16 / 0.53 / 0.60 / 0.61
  a fresh N(0, sigma I) perturbation of the selected code at every update
                                              sigma = 0.3: 0.73 / 0.36; 0.8: 0.04 / 0.01
Ablations with the bounded encoder output (the default), :skewed_mild
(p ~ 0.85^k), rare-mode recall full / :no_rebalance / :no_encoder (the last has
no encoder, so seeds 0-2 are the measurements further below; seed 3 is new):
seed 0: 0.995 / 0.818 / 0.745; seed 1: 1.000 / 0.656 / 0.693; seed 2: 0.984 /
0.984 / 0.802; seed 3: 0.995 / 0.943 / 0.755. Means 0.994 / 0.850 / 0.749 are
in the paper's order; seed 1 alone swaps the two ablations. Pairwise
diversity over 40 pairs (mean_abs_pixel, the pixel stand-in for IJCV Table 2's
LPIPS), seeds 0-3: full 0.2015 / 0.1977 / 0.1930 / 0.1977, :no_rebalance
0.1959 / 0.1957 / 0.1936 / 0.1931, :no_encoder 0.1803 / 0.1795 / 0.1854 /
0.1829: the paper's order except seed 2, where full and :no_rebalance are
0.0006 apart. Precision of the full model: 0.922 / 0.926 / 0.913 / 0.938.
Ablations on :skewed (p(mode k) ~ 0.7^k; the default budget, seed 0): recall of the
rarer half of the modes (`mode_recall_rare`) full 0.984, :no_encoder 0.719,
:no_rebalance 0.328 (all modes: 0.977 / 0.805 / 0.664 at precision 0.876 / 0.448 /
0.755); with independent draws 0.93 / 0.85 / 0.27, and with the spatial code
(on another machine) 0.96 / 0.73 / 0.19. The full model leads, but the two
ablations swap places against the paper's order (w/o rebalancing >= w/o
encoder): on data this skewed, rebalancing is what finds the rare modes at all
(without it the rarer half of the modes makes a tenth of each pool of 64, the
rarest mode 0.4 examples a pool), while the encoder mostly buys precision
(0.876 against 0.448). On the paper's own ablation measure (IJCV Table 2, LPIPS
diversity: 0.19 / 0.17 / 0.10) with its pixel substitute, pairwise
mean_abs_pixel over 40 pairs: 0.197 / 0.183 / 0.180 (full / :no_encoder /
:no_rebalance): the full model again first, the ablations 0.003 apart.
On :skewed_mild (p ~ 0.85^k, the rarest mode 2.9% of the images instead of
0.6%; the same budget, each run on one core beside another) the paper's order
holds. Rare-mode recall full / :no_rebalance / :no_encoder, seed 0: 0.990 /
0.932 / 0.745 (all modes 0.992 / 0.964 / 0.716 at precision 0.904 / 0.735 /
0.412; pairwise mean_abs_pixel 0.198 / 0.195 / 0.180, the paper's order on its
measure too); seed 1: 0.979 / 0.854 / 0.693 (precision 0.865 / 0.751 / 0.398;
pairwise 0.195 / 0.195 / 0.180, the first two tied); seed 2: 0.984 / 0.932 /
0.802 (precision 0.823 / 0.814 / 0.466; pairwise 0.198 / 0.192 / 0.185). So
which ablation loses more depends on how rare the rare modes are: the
encoder's share (precision, and the rare modes G can reach at all) is about
the same on both data, while rebalancing matters most where a pool of 64
holds under one example of a rare mode.
Where precision was lost with independent draws (|S| = 32, L = 80): of the samples, 58% are within the
tolerance of a mode, 30% take some classes' colours from one mode and others'
from another (mixed), 12% have one mode's colours but sit just outside the
tolerance (mean error 0.036-0.053, spread over the image, not at edges). The
per-class decisions of G are not aligned in the code space away from the
selected codes; a low-dimensional code leaves less space between them (above).
"""

import ml_collections

from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "no_encoder", "no_rebalance", "no_encoder,no_rebalance", "vgg",
            "no_encoder,runlocal", "crn_best_of_k", "crn_noise_regression", "crn_best_of_k,runlocal",
            "crn_noise_regression,runlocal", "gta5", "cityscapes", "skewed", "skewed,no_rebalance",
            "skewed,no_encoder", "skewed_mild",
            "skewed_mild,no_rebalance", "skewed_mild,no_encoder"]

# cimle_semantic_layouts_iccv2019 §3.3.1: the distance's VGG-19 layers.
CRN_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, no_encoder=False, no_rebalance=False, vgg=False,
                             crn_best_of_k=False, crn_noise_regression=False, gta5=False, cityscapes=False,
                             skewed=False, skewed_mild=False)
  config = config_lib.base_config()
  config.method = "imle"
  config.data.name = "toy_scenes"
  config.data.batch_size = 64  # the pool S
  if arg.skewed and arg.skewed_mild:
    raise ValueError("configs/layout_imle.py: `skewed` (p ~ 0.7^k) and `skewed_mild` (p ~ 0.85^k); pick one.")
  config.data.builder_config = "skewed" if arg.skewed else ("skewed_mild" if arg.skewed_mild else "")

  config.model = ml_collections.ConfigDict()
  config.model.name = "crn"
  config.model.features = (32, 32, 24, 16)  # M0 at 4x8 ... M3 at 32x64 (narrow: see the docstring)
  config.model.base_height = 4
  config.model.base_width = 8
  config.model.noise_channels = 10  # d (§4.2)
  config.model.noise_encoder = not arg.no_encoder
  config.model.encoder_features = 32  # §3.3.2 uses 100 (:gta5, :cityscapes)
  # The Gaussian code (the paper gives neither its size nor its shape): one e = 2 vector per image,
  # broadcast over M0's grid (models/crn.py 'vector'; 'spatial' draws 4x8xe). See the docstring.
  config.model.noise_encoder_input_channels = 2  # e
  config.model.noise_encoder_code = "vector"
  # Not in the paper: z_hat = tanh(4 E(L, z)), a bounded encoder output, so the cells of the code plane
  # are flat and their borders narrow (models/crn.py; precision 0.87 -> 0.92, see the docstring).
  config.model.noise_encoder_output_gain = 4.0
  config.model.num_outputs = 1

  config.distance = perceptual.default_distance_config("pixel", pixel_norm="l1")
  config.imle = ml_collections.ConfigDict()
  config.imle.selection_distance = perceptual.default_distance_config("pixel", pixel_norm="l1")
  config.imle.num_samples = 16  # m
  config.imle.chunk_size = 16
  config.imle.example_blocks = 1
  config.imle.updates_per_selection = 40  # L
  config.imle.minibatch_size = 16  # |S~|
  config.imle.code_channels = 10  # used by the code drawn at the layout's size (:no_encoder)
  config.imle.perturbation = 0.0
  config.imle.stratified_codes = True  # each layout's m codes one shifted lattice (imle_selection.py)
  config.imle.zero_code_steps = 0
  config.imle.bilinear_from_step = -1  # CRN has no upsampling schedule
  config.imle.calibration_examples = 16
  config.imle.time_steps = True
  config.imle.rebalance_dataset = not arg.no_rebalance
  config.imle.rebalance_loss = not arg.no_rebalance
  config.imle.rebalance_top_classes = 5

  config.optimizer.learning_rate = 2e-3
  config.optimizer.schedule = "cosine"
  config.train.num_steps = 4800  # 120 rounds of L = 40
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
    # Street scenes vary in space (each car its own colour): a code at M0's resolution, 4x8x4.
    config.model.noise_encoder_input_channels = 4
    config.model.noise_encoder_code = "spatial"
    config.model.noise_encoder_output_gain = 0.0  # the paper's linear output (the bounded one unmeasured there)
    config.imle.num_samples = 10  # m
    config.imle.chunk_size = 2
    config.imle.example_blocks = 8  # memory: 50 layouts x 2 codes at 256x512 per generator call
    config.imle.updates_per_selection = 10_000  # L (the paper's K)
    config.imle.minibatch_size = 1  # |S~|
    config.imle.stratified_codes = False  # Alg. 1's independent draws (stratification unmeasured there)
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
