r"""cGML: conditional generation by learning the latent space (cgml_iclr2021, Alg. 1, Eq. 1-4).

  python -m multimodal_jax.main --config=configs/cgml.py:completion,box --workdir=/tmp/cgml

Default (`:completion`): digits_completion (masked digit -> completed digit,
20% of the training tops overlapped with another digit, §5.1 / Fig. 4), conv
encoder / U-Net generator, 900 generator updates: about 5 minutes on a
(shared) 2-core CPU. As the paper reports for this setting, the model settles
on the most probable (clean) completion. Variants:

  :completion,box      digits_completion_box (§5.1 / Fig. 5): a white box under
                       the mask in 40% of the targets, two exact modes per input.
                       About 5 minutes; experiments/cgml_completion.py.
  :toy3d               y = ±4 (x, x², x³) (§4, Fig. 3), 3-layer MLPs, 30000
                       generator updates: about 8 minutes; experiments/cgml_toy3d.py.
  :colorization        toy_scenes' grey field -> (a, b) with the KL-to-uniform
                       histogram term (§5.2).
  :colorization,stl10  paper scale: tfds `stl10` (96x96). Needs the prepared
                       dataset in data_dir (no downloads here): otherwise the
                       data pipeline stops with its "not prepared" error.
  :colorization,imagenet  paper scale: tfds `imagenet2012` (manual download),
                       128x128 centre crops; same caveat.
  :no_momentum         the "w/o rho" ablation (Fig. 3c, Tables 2-3): rho is
                       neither learned nor used, inference is z <- project(z_hat).
  :runlocal            a few tiny steps on the `tiny` data (smoke test, seconds).
Flags combine: `:toy3d,no_momentum`, `:toy3d,runlocal`, `:completion,box,no_momentum`.

Choices the paper leaves to its missing appendix (in `config.cgml`; the
Lipschitz settings are the networks' own, in `config.model`):
  z_dim            z lives on S^{z_dim - 1}.
  inner_steps      l of Alg. 1: (z, Z, G/H) iterations per batch. z is drawn
                   afresh on the sphere for every batch (it does not persist
                   across epochs; see methods/cgml.py).
  z_step_size      beta of z_{t+1} = project(z_t - beta_t grad_z E) ...
  z_step_decay     ... with beta_t = z_step_size * z_step_decay^t, t = 0..l-1.
  momentum_scale   alpha of rho = alpha ||z_{t+1} - z_t|| (§2.2).
  inference_steps  T iterations of Eq. 4.
  model.lipschitz  'spectral_norm' on every G and Z layer (or 'none'), each
                   normalised kernel times model.lipschitz_scale (G) or
                   model.znet_lipschitz_scale (Z), model.power_iterations.
`train.num_steps` counts generator updates: a batch makes l of them.
"""

import ml_collections

from multimodal_jax import config_lib

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "completion", "completion,box", "completion,box,no_momentum",
            "toy3d", "toy3d,runlocal", "toy3d,no_momentum", "no_momentum", "colorization",
            "colorization,runlocal", "colorization,stl10", "colorization,imagenet"]


def _optimizer(learning_rate: float) -> ml_collections.ConfigDict:
  opt = config_lib.base_config().optimizer
  opt.learning_rate = learning_rate
  return opt


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, completion=False, box=False, toy3d=False,
                             colorization=False, stl10=False, imagenet=False, no_momentum=False)
  if sum([arg.completion, arg.toy3d, arg.colorization]) > 1:
    raise ValueError("Choose one task of completion, toy3d, colorization.")
  if (arg.stl10 or arg.imagenet) and not arg.colorization:
    raise ValueError("stl10 and imagenet are colorization variants: use `colorization,stl10`.")
  if arg.box and (arg.toy3d or arg.colorization):
    raise ValueError("box is a completion variant: use `completion,box`.")

  config = config_lib.base_config()
  config.method = "cgml"

  # Networks (models/cgml_nets.py).
  config.model.name = "cgml_unet"
  config.model.features = 32  # Conv width at full resolution (x2 per level).
  config.model.num_levels = 3  # Stride-2 levels of the encoder: 32x32 -> 4x4 bottleneck.
  config.model.hidden = 64  # MLP width (cgml_mlp).
  config.model.h_dim = 32  # Bottleneck size of the MLP encoder.
  config.model.znet_hidden = 256
  config.model.znet_layers = 3
  config.model.output_activation = "sigmoid"
  config.model.lipschitz = "spectral_norm"
  config.model.lipschitz_scale = 1.5  # G: ~1.5^6 in z, enough to separate two completions.
  config.model.znet_lipschitz_scale = 1.0
  config.model.power_iterations = 5

  config.cgml = ml_collections.ConfigDict()
  config.cgml.task = "completion"
  # S^2: with a few modes per input a low-dimensional sphere is covered
  # densely by the training trajectories; on S^15 the Z-network learned one
  # global attractor per input (all z_0 -> the same completion).
  config.cgml.z_dim = 3
  config.cgml.inner_steps = 6
  # |grad_z E| is ~0.01 here (E averages over 1024 pixels, the hole is ~15%).
  config.cgml.z_step_size = 40.0
  config.cgml.z_step_decay = 0.6
  config.cgml.momentum_scale = 3.0
  config.cgml.inference_steps = 10
  config.cgml.use_momentum = not arg.no_momentum
  config.cgml.kl_weight = 0.0  # lambda of the colorization energy.
  config.cgml.histogram_bins = 32
  config.cgml.znet_optimizer = _optimizer(1e-3)

  config.data.name = "digits_completion_box" if arg.box else "digits_completion"
  config.data.batch_size = 32
  config.model.features = 16
  config.model.output_activation = "linear"  # Pasted into the hole; samples are clipped.
  config.optimizer.learning_rate = 1e-3
  config.train.num_steps = 900  # 150 batches x l = 6.
  config.train.log_every = 60
  config.train.checkpoint_every = 300
  config.train.sample_every = 300
  config.train.num_grid_samples = 6

  if arg.toy3d:
    config.data.name = "toy3d"
    config.data.batch_size = 64
    config.model.name = "cgml_mlp"
    config.model.hidden = 64
    config.model.h_dim = 32
    config.model.znet_hidden = 64
    config.model.output_activation = "linear"  # y is normalised to [0, 1]; samples are clipped.
    config.cgml.task = "direct"
    config.cgml.z_dim = 3
    config.cgml.inner_steps = 10
    # |grad_z E| is ~0.1 here (G is 1-Lipschitz, E a mean over 3 outputs):
    # beta_t = 10 * 0.7^t moves z by ~1 at first, ~0.03 at the 10th step.
    config.cgml.z_step_size = 10.0
    config.cgml.z_step_decay = 0.7
    # rho_hat fits the *median* move (L1), far below the mean (the first moves
    # are ~30x the last): alpha = 6 makes Eq. 4 steps comparable to them.
    config.cgml.momentum_scale = 6.0
    config.cgml.inference_steps = 20
    config.model.lipschitz_scale = 1.0
    config.train.num_steps = 30000
    config.train.log_every = 1000
    config.train.checkpoint_every = 10000
    config.train.sample_every = 0
  elif arg.colorization:
    config.data.name = "toy_scenes_colorization"
    config.model.output_activation = "sigmoid"  # (a, b) normalised to [0, 1].
    config.cgml.task = "colorization"
    config.cgml.kl_weight = 0.01
    config.cgml.z_dim = 8  # Up to 12 appearance modes per layout.
    config.train.num_steps = 3000
    config.train.log_every = 100
    config.train.checkpoint_every = 1000
    config.train.sample_every = 1000
    if arg.stl10 or arg.imagenet:
      config.model.features = 64
      config.cgml.z_dim = 16
      config.train.num_steps = 300000
      config.train.log_every = 500
      config.train.checkpoint_every = 5000
      config.train.sample_every = 5000
    if arg.stl10:  # 96x96 -> 6x6 bottleneck.
      config.data.name = "stl10_colorization"
      config.model.num_levels = 4
    if arg.imagenet:  # 128x128 centre crops -> 4x4 bottleneck.
      config.data.name = "imagenet_colorization"
      config.model.num_levels = 5

  if arg.runlocal:
    config.data.builder_config = "tiny"  # every local dataset has one (builds in seconds)
    config.data.batch_size = 8
    config.model.features = 8
    config.model.num_levels = 2
    config.model.hidden = 16
    config.model.h_dim = 8
    config.model.znet_hidden = 16
    config.cgml.inner_steps = 2
    config.cgml.inference_steps = 3
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
