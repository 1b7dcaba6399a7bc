r"""The diversity loss (diversity_loss_yang_liu_cai) on pix2pix or CRN.

  python -m multimodal_jax.main --config=configs/diversity.py --workdir=/tmp/diversity

`method='diversity'` (methods/diversity.py): the base network's loss plus
beta times the segment-wise diversity loss (Eq. 7-8), with one noise input
channel holding n^c on the pixels of class c (§IV-A), n ~ U[-1, 1]^{|C|}.

Default: pix2pix (a U-Net with dropout and a PatchGAN, Adam 2e-4, beta1 0.5,
alpha = 100) + the diversity loss (beta = 0.1, lambda_c = 0.3, §IV-A) on
`toy_scenes` (32x64 layouts, 6 classes, 12 known appearance modes), a small U-Net
(5 downsamplings, 16 base channels) and PatchGAN (16 base channels). Variants:

  :runlocal      tiny scenes, tiny networks, a few steps (smoke test)
  :crn           CRN with one noise channel, L_B = the pixel l1 (VGG content loss on the paper
                 variants), beta = 10 (§IV-A)
  :no_diversity  the base network alone (beta = 0) with the noise input channel: pix2pix (or
                 `crn,no_diversity`)
  :no_noise_input  the base network as published (beta = 0, zeros in the noise channel): pix2pix's
                 only noise is its dropout (the "known failure" the paper cites, §IV-B)
  :segments      toy_scenes `segments`: every class draws its own mode, so a segment's appearance
                 is independent of the others' (the paper's premise, §III-C); combines with the
                 above (`segments,no_diversity`); mode metrics per segment
  :one_mode      toy_scenes `one_mode`: one appearance, the image a function of the layout (as a
                 set of one photo per layout is to a network that fits it); combines as :segments
  :lighting      toy_scenes `lighting`: one appearance, each segment's brightness offset drawn on
                 its own from U[-0.25, 0.25] (the paper's lighting: variation beyond the layout that
                 the l1 cannot predict, no discrete modes); combines as :segments
  :facades       CMP Facades (data/facades.py, manual_dir; 400/100/106, 286 resize + random 256
                 crop + flip), the 256x256 U-Net (8 downsamplings, 64 channels), 70x70 PatchGAN,
                 batch 1, 200 epochs (pix2pix's setting)
  :cityscapes    Cityscapes via tfds at 256x512 (data/street_layouts.py, `cityscapes_layouts`)

Measured (2000 steps; evaluate on 32 layouts; the inside/outside ratio of the
noise-linking sweep, per class sky/ground/road/building/tree/car):
  default (G without normalisation)   ratio 8.8/5.0/6.1/22.6/20.9/20.1, inside change
                                      0.096, pairwise diversity 0.034, reality pixel
                                      accuracy 0.865 (mIoU 0.62; real images 0.985/0.96)
  :no_diversity (same G)              ratio 9.1/7.6/10.6/21.9/19.9/36.9, inside change
                                      0.055, pairwise 0.022, reality 0.880 (0.64)
  G with instance norm (pix2pix's)    ratio 1.7/1.5/2.4/4.2/2.9/6.9 (1000 steps), inside
                                      0.061, reality mIoU 0.55; alone: inside 0.016
On another 2-core machine type (XLA:CPU rounds differently; 64 layouts) the default
measured ratio 9.1/3.7/8.6/27.4/18.2/26.4, inside change 0.117, pairwise 0.041,
reality 0.830 (mIoU 0.55), and `:no_noise_input` pairwise 0.0030, reality 0.895
(0.71): the ground's ratio and the reality gap (6.5 points) move with the run.
There `:no_diversity` (pix2pix with the noise channel, no L_Div) changed a segment
by 0.152 as its n^c swept (130% of the diversity run's 0.117), with ratio
2.0/2.6/4.1/9.6/8.4/15.8, pairwise 0.063 and reality 0.767 (mIoU 0.50): on that
machine L_Div made the noise more local and the images more real than the same
G without it, and the gap is to the published base only. Seed 1 there: the
default 0.180 inside, ratio 4.6/4.6/6.1/16.8/17.2/20.7, reality 0.859 (3.6 points
below the published base); `:no_diversity` 0.053 (29%), reality 0.843.
Without normalisation a segment's noise stays in the segment (ratio >= 5 for every
class but the ground, 4.96), but pix2pix alone then also follows the noise channel
(inside change 57% of the diversity run's; with instance norm 27%): the GAN makes
G use any input it is given. `:crn`'s beta = 10 is the paper's for CRN's VGG
content loss on 0-255 images; with the local pixel l1 it swamps the base loss
(mIoU 0.20): scale it with the base loss.
Issue #12 asks that the base network alone change < 10% of the diversity run.
pix2pix alone is not blind to the channel by initialisation: after 10 steps
its inside change is 0.004, after 2000 it is 0.055: training makes the GAN use
the noise on toy_scenes, whose 12 discrete appearances reward picking one (the
l1 median is a blur the discriminator rejects). CRN with beta = 1 (measured
2000 steps, 32 layouts): inside change 0.047, ratio 2.6 (sky 1.6 ... car 4.7),
reality 0.920 / mIoU 0.686; CRN alone: inside 0.0073 (16% of that), ratio 7.0,
reality 0.965 / 0.780. CRN's layer norm takes its statistics over the whole
image, so one segment's noise moves every segment: CRN meets the < 10% side
nearly but not the ratio, pix2pix the ratio but not the < 10%.
pix2pix as published (`:no_noise_input`: zeros in the noise channel, dropout its
only noise; 2000 steps, 32 layouts) shows the known failure the paper cites:
pairwise diversity 0.0030 (with the noise channel, `:no_diversity`: 0.022; with
the diversity loss: 0.034), nearest-mode recall 0.094 (one mode of 12 is 0.083),
reality 0.895 (mIoU 0.71). CRN without its layer norm (tried for the ratio,
not kept): the diversity loss is met degenerately. L_Div fell to ~1e-4 by step
300 while sweeping n^c moved segment c by ~0.005 (inside change 0.023, ratio
4.2; CRN alone 0.011): G(l, 0), whose noise channel is zero everywhere, became
an outlier that every G(l, n) differs from by lambda_c, and Eq. 7 asks no more.
Why the reality gap (measured on the machine of the 64-layout numbers above). In
toy_scenes one mode colours the whole image, so the class-wise mixes of modes
that one noise entry per segment asks for are images the data never shows: the
reality segmenter scores exact class-wise mixed renders 0.741 pixel accuracy
(mIoU 0.52) against 0.990 (0.96) for one-mode renders. On `:segments`, where
such mixes are real, the gap closes (same budget, 64 layouts; its segmenter
reaches 0.923 / 0.788 on real images there, since a class's colour no longer
tells it from the others): the default 0.741 (mIoU 0.50), `segments,no_diversity`
0.784 (0.53), `segments,no_noise_input` 0.780 (0.55): 3.9 points below the
published base. But there the base networks use the noise on their own:
pix2pix with the noise channel and no L_Div changes a segment by 0.164 as its n^c
sweeps (88% of the diversity run's 0.187; ratio 6.3 against 5.2), and pix2pix
with dropout only reaches pairwise diversity 0.047 (0.083 with L_Div). Ratios
per class with L_Div on `:segments`: 2.1/2.0/2.7/8.6/5.2/10.5. A shallower local
U-Net (one mode per image) did not raise the large classes' ratios either:
4 downsamplings 5.3/3.5/4.9/13.8/11.0/14.3 (inside change 0.044), 3: 5.4/5.0/
4.4/16.5/10.4/11.0 (0.067, reality 0.858).
Where the ground's outside change is (the default, seed 0, on the machine type of
the 32-layout numbers at the top, now on 64 layouts: ratio 8.6/4.85/5.8/24.9/21.5/
19.6, inside change 0.096, pairwise 0.034, reality 0.866 / mIoU 0.63): 58% of it
lies in the pixels within 2 px of the ground, which are 26% of its outside and
change 0.038 per sweep (inside: 0.082; beyond 8 px: 0.008), most of them road and
car pixels. pix2pix's output layer is a stride-2 transposed conv of half-resolution
features, so each segment's noise blurs over ~2 px of its neighbours, and at 32x64
that rim is a quarter of the ground's surroundings. Beyond the 2-px rim the ratios
are 14.4/8.4/8.0/55/40/30. A per-pixel head (two 1x1 convs on up0's features
and the pixel's own input; tried, not kept) moved the ground to 6.6 but G then
dropped the noise: inside change 0.0086 with L_Div, 0.0074 (86%) without it;
pairwise 0.013; ratio sky 4.7; reality 0.864. With zeros in the noise channel it
scored 0.862. `:no_diversity` (no head) on the same machine, seed 2, changed a
segment by 0.073 (75% of the default's; ratio 8.1/5.0/10.6/32.9/20.7/28.5),
pairwise 0.027, reality 0.847. `:no_diversity` seed 0 there: 0.055 (57%), ratio
9.2/7.5/10.5/24.2/21.3/38.1, pairwise 0.022, reality 0.880; the default seed 1:
0.099, ratio 11.8/4.07/12.7/31.2/17.0/38.0 (beyond the rim 32/10.0/29.8/96/28/95),
pairwise 0.035, reality 0.834. `:no_noise_input` (dropout only) seed 0 on that
machine type did not show the known failure: pairwise 0.042 (more than the
diversity run's 0.034), reality 0.816 (mIoU 0.55), where the other machine type
measured 0.0030: whether pix2pix's dropout noise survives is left to the run.
Why the base network uses the noise here, and where it does not (`:one_mode`,
the same layouts with one appearance; 2000 steps, 32 layouts, a 2-core Xeon,
one core per run). When the layout determines the image, pix2pix given the
noise channel ignores it, the failure the paper cites: `one_mode,no_diversity`
changes a segment by 0.0038 as its n^c sweeps, pairwise diversity 0.0044,
reality 0.994 (mIoU 0.982). So on the 12-mode default it is the data, 12
appearances per layout that the GAN can only match by picking one from the
noise, that makes pix2pix use it. But there the diversity loss cannot move
the image either: the default (beta = 0.1) changes a segment by 0.0034 (ratio
3.6/3.7/7.3/14.8/8.6/13.9, pairwise 0.0041); beta = 10: 0.0042 (pairwise
0.015). With one image per layout any noise-driven change is pure l1 error,
and alpha = 100 outweighs beta L_Div until beta is about 100 times the
segment's share of the image: L_Div stays near its maximum (0.83 at beta =
0.1, 0.74 at 10, mean over the last 500 steps). At beta = 50 it is met, but
degenerately, as by CRN without layer norm (above): L_Div ~5e-4, G(l, 0) the
outlier that every G(l, n) differs from, while sweeping n^c moves segment c
by 0.020 (ratio 3.4/2.9/5.1/12.3/5.7/21) and two random n differ by 0.0078
(reality 0.982 / mIoU 0.938). The paper's photos vary beyond their
layouts (lighting), which the l1 cannot predict; toy_scenes has either no
such variation (`one_mode`) or 12 discrete appearances the GAN picks itself.
Data with variation the l1 cannot predict (`:lighting`; 2000 steps, 32 layouts,
a 2-core Xeon, one core per run, seed 0). The l1 median of a segment is its real
mode-0 colour, and moving it by d costs the l1 only ~d^2 / 0.5 per pixel, so Eq.
7 has room. The diversity loss (beta = 0.1) links each n^c to its segment with
ratio >= 5 for every class, 6.3/5.6/12.8/25.2/20.9/33.9, inside change 0.197,
pairwise 0.061, reality 0.964 (mIoU 0.898; real images 1.000). But pix2pix alone
does the same: `lighting,no_diversity` changes a segment by 0.191 (97% of it;
ratio 6.7/5.2/11.3/25.9/19.1/30.6, pairwise 0.060, reality 0.965 / 0.900; seed
1: 0.198, ratio 8.0/6.3/10.3/30.8/23.1/32.8, reality 0.966), and with dropout
only (`lighting,no_noise_input`) pairwise diversity is 0.040, reality 0.963. A
discriminator that sees every segment's brightness vary rejects a G that always
paints the median, so the GAN itself makes G use whatever randomness it has; the
paper's "pix2pix ignores the noise" needs a discriminator that cannot see what
the noise should vary (`:one_mode`, where nothing varies). On `:lighting` beta =
10 gives inside 0.164, ratio 2.3/3.5/6.3/13.0/10.7/16.4, reality 0.955: a
stronger hinge only spreads the change. CRN on `:lighting` (l1, no
discriminator) alone does ignore the noise: inside change 0.011, pairwise
0.0047, reality 0.999; but with the diversity loss (beta = 1) Eq. 7 is met
degenerately again (L_Div 2e-4, inside 0.031, ratio 2.1, reality 0.998), and
with L_B also on G(l, 0) (Algorithm 1's line 9 read over both halves of the
batch; tried, not kept) the noise of one segment moves all of them (inside
0.057, ratio 3.1, reality 0.858). So on every toy variant one half of issue
#12's acceptance excludes the other: where the data varies beyond the layout,
pix2pix uses the noise without L_Div (29-130% on the default, 88% on
`:segments`, 97-101% here); where it does not, L_Div cannot move the image
(`:one_mode`); CRN ignores the noise alone but its layer norm (or, without it,
G(l, 0) as an outlier) keeps the ratio below 5.
`evaluate` reports the noise-linking ratio (mean change inside segment c over
the mean change outside it as n^c sweeps -1 -> 1, per class and averaged),
the reality of the samples under a segmentation network trained on the real
images (pixel accuracy and mean IoU, generated vs real), and on toy_scenes the
mode recall and precision. `sample --extra=gradation_<class id>` draws the sweeps.
"""

import ml_collections

from multimodal_jax import config_lib
from multimodal_jax.losses import perceptual

VARIANTS = ["", "runlocal", "crn", "no_diversity", "crn,no_diversity", "crn,runlocal", "no_diversity,runlocal",
            "no_noise_input", "no_noise_input,runlocal", "segments", "segments,no_diversity",
            "segments,no_noise_input", "segments,runlocal", "one_mode", "one_mode,no_diversity", "lighting",
            "lighting,no_diversity", "lighting,no_noise_input", "crn,lighting",
            "facades", "cityscapes", "crn,cityscapes"]

# CRN's content loss (its released code): VGG-19 layers and weights, with the pixel term.
CRN_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
CRN_LAYER_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, crn=False, no_diversity=False, no_noise_input=False,
                             facades=False, cityscapes=False, segments=False, one_mode=False,
                             lighting=False)
  config = config_lib.base_config()
  config.method = "diversity"
  config.data.name = "toy_scenes"
  # :segments: each class draws its own mode (data/toy_scenes.py), so one noise entry per segment has a
  # segment's appearance to choose; the default is the one-mode data of every other config.
  toy_variants = [name for name in ("segments", "one_mode", "lighting") if arg[name]]
  if len(toy_variants) > 1:
    raise ValueError(f"configs/diversity.py: {', '.join(toy_variants)} are different toy_scenes data; pick one.")
  config.data.builder_config = toy_variants[0] if toy_variants else ""
  config.data.batch_size = 8

  config.diversity = ml_collections.ConfigDict()
  config.diversity.base = "crn" if arg.crn else "pix2pix"
  config.diversity.beta = 0.0 if arg.no_diversity or arg.no_noise_input else (10.0 if arg.crn else 0.1)  # §IV-A
  config.diversity.lambda_c = 0.3  # §IV-A, in [-1, 1] image units (losses/diversity.py)
  config.diversity.l1_weight = 100.0  # alpha, Eq. 2 (pix2pix)
  # False: the noise channel is zeros, the base network as published (pix2pix's only noise is dropout).
  config.diversity.noise_input = not arg.no_noise_input

  config.model = ml_collections.ConfigDict()
  config.discriminator = ml_collections.ConfigDict()
  if arg.crn:
    config.model.name = "crn"
    config.model.features = (64, 64, 48, 32)
    config.model.base_height = 4
    config.model.base_width = 8
    config.model.noise_channels = 1  # the noise input channel of §IV-A
    config.model.noise_encoder = False
    config.model.encoder_features = 0
    config.model.noise_encoder_input_channels = 0
    config.model.num_outputs = 1
    config.discriminator.name = ""  # unused
    config.optimizer.learning_rate = 1e-3
  else:
    config.model.name = "unet"
    config.model.features = 16  # ngf
    config.model.num_downs = 5  # 32x64 -> 1x2
    # No normalisation in G on the local default: instance norm (pix2pix's batch norm at batch 1)
    # spreads one segment's noise over the whole image (docstring); the paper variants keep it.
    config.model.norm = "none"
    config.model.dropout_rate = 0.5
    config.discriminator.name = "patchgan"
    config.discriminator.features = 16  # ndf
    config.discriminator.num_layers = 3  # 70x70 at 256x256
    config.discriminator.norm = "instance"
    config.optimizer.learning_rate = 2e-4  # pix2pix
    config.optimizer.b1 = 0.5
  config.distance = perceptual.default_distance_config("pixel", pixel_norm="l1")
  config.train.num_steps = 2000
  config.train.log_every = 100
  config.train.checkpoint_every = 500
  config.train.sample_every = 500
  config.train.num_grid_samples = 6

  if arg.facades or arg.cityscapes:
    if toy_variants:
      raise ValueError(f"configs/diversity.py: `{toy_variants[0]}` is a toy_scenes variant; drop it with "
                       "facades/cityscapes.")
    config.data.name = "facades" if arg.facades else "cityscapes_layouts"
    config.data.batch_size = 1  # pix2pix
    config.data.num_workers = 8
    if arg.crn:
      config.model.features = (1024, 1024, 1024, 1024, 1024, 512, 512)  # 4x8 -> 256x512
      if arg.facades:
        raise ValueError("configs/diversity.py: the paper runs CRN on Cityscapes only (§IV-A); use crn,cityscapes.")
      config.distance = perceptual.default_distance_config(
          "vgg", pixel_weight=1.0, layers=CRN_LAYERS, layer_weights=CRN_LAYER_WEIGHTS, feature_norm="l1")
    else:
      config.model.features = 64
      config.model.num_downs = 8  # "U-Net 256"
      config.model.norm = "instance"  # pix2pix (batch norm at batch size 1)
      config.discriminator.features = 64
    config.train.num_steps = 200 * 400 if arg.facades else 100 * 2975  # 200 epochs (pix2pix); CRN: 100 (§IV-A)
    config.train.log_every = 1000
    config.train.checkpoint_every = 10_000
    config.train.sample_every = 10_000

  if arg.runlocal:
    config.data.builder_config = "segments_tiny" if arg.segments else "tiny"
    config.data.batch_size = 4
    if arg.crn:
      config.model.features = (8, 8, 8, 8)
    else:  # shallow nets compile fast (the contract tests run them in several processes)
      config.model.features = 4
      config.model.num_downs = 3
      config.discriminator.features = 4
      config.discriminator.num_layers = 2
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
