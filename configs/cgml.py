r"""cGML: conditional generation by learning the latent space (cgml_iclr2021, Alg. 1, Eq. 1-4).

  python -m multimodal_jax.main --config=configs/cgml.py:completion,box --workdir=/tmp/cgml

Default (`:completion`): digits_completion (masked digit -> completed digit,
20% of the training tops overlapped with another digit, §5.1 / Fig. 4), conv
encoder / U-Net generator, 900 generator updates: about 5 minutes on a
(shared) 2-core CPU. As the paper reports for this setting, the model settles
on the most probable (clean) completion. On `:completion,box` (two exact modes
per input) both modes appear for 99.2% of the inputs, best-of-16 hole PSNR
23.7 dB against 18.6 dB for L1 regression. Variants:

  :completion,box      digits_completion_box (§5.1 / Fig. 5): a white box under the mask in
                       40% of the targets; ~10 min on a shared 2-core CPU
  :toy3d               y = ±4 (x, x², x³) (§4, Fig. 3), 3-layer MLPs, 30000 updates, 6-8 min
  :toy_scenes          layout -> image (12 known modes per layout); evaluate reports mode
                       recall at t = 0 (z_0 decoded) and after T steps; 11-16 min
  :conditional         the same on toy_scenes_conditional (each layout its own 1-16 modes;
                       evaluate's `mode_sets`)
  :colorization        toy_scenes' grey field -> (a, b), the KL-to-uniform histogram term (§5.2)
  :colorization,stl10  paper scale: tfds `stl10` (96x96), prepared in data_dir (no downloads)
  :colorization,imagenet  paper scale: tfds `imagenet2012` (manual download), 128x128 crops
  :paper               the paper's method where it says what to do: Alg. 1's persistent codes
                       (`cgml.z_start='persistent'`), Eq. 4 with no fitted gain
                       (`calibrate_step=False`), Z(z_t, H(x)) blind to t, constant beta (§3)
  :no_momentum         the "w/o rho" ablation (Fig. 3c, Tables 2-3): the same config with rho off
                       (`cgml.use_momentum=False`, nothing else): Z is not trained on rho and
                       inference steps by z_hat - z (times the same gain) instead of Eq. 4's rho u
  :runlocal            a few tiny steps on the `tiny` data (smoke test, seconds)
Flags combine: `:toy3d,no_momentum`, `:toy3d,runlocal`, `:completion,box,no_momentum`,
`:toy3d,paper`, `:toy_scenes,paper,no_momentum`.
experiments/cgml_completion.py and experiments/cgml_toy3d.py draw Fig. 5 and Fig. 3.

Not in the paper at the default (`:paper` follows it): the best-of-M start, beta decaying
along a round, Z seeing t, a step gain fitted to the training moves; why, what the
persistent codes cost at ImageNet scale and how a pod would shard them:
experiments/results/cgml.md ("Choices and costs").

Measurements: experiments/results/cgml.md
"""

import ml_collections

from multimodal_jax import config_lib

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "completion", "completion,box", "completion,box,no_momentum",
            "completion,box,paper", "completion,box,paper,no_momentum", "paper", "paper,runlocal",
            "toy3d", "toy3d,runlocal", "toy3d,no_momentum", "toy3d,paper", "toy3d,paper,no_momentum",
            "toy_scenes", "toy_scenes,runlocal", "toy_scenes,paper", "toy_scenes,paper,no_momentum",
            "conditional", "conditional,runlocal",
            "no_momentum", "colorization",
            "colorization,runlocal", "colorization,stl10", "colorization,imagenet"]


def _optimizer(learning_rate: float) -> ml_collections.ConfigDict:
  opt = config_lib.base_config().optimizer
  opt.learning_rate = learning_rate
  return opt


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, completion=False, box=False, toy3d=False,
                             toy_scenes=False, colorization=False, stl10=False, imagenet=False,
                             no_momentum=False, conditional=False, paper=False)
  if sum([arg.completion, arg.toy3d, arg.toy_scenes or arg.conditional, arg.colorization]) > 1:
    raise ValueError("Choose one task of completion, toy3d, toy_scenes (or conditional), colorization.")
  if (arg.stl10 or arg.imagenet) and not arg.colorization:
    raise ValueError("stl10 and imagenet are colorization variants: use `colorization,stl10`.")
  if arg.box and (arg.toy3d or arg.toy_scenes or arg.colorization):
    raise ValueError("box is a completion variant: use `completion,box`.")

  config = config_lib.base_config()
  # modes_t0: z_0 decoded without the Z-network's steps, beside t = T (what inference adds);
  # latent_displacement: mean ||z_T - z_0||, 0 where inference does not move z.
  config.evals = config_lib.DEFAULT_EVALS + ("modes_t0", "latent_displacement")
  config.method = "cgml"

  # Networks (models/cgml_nets.py).
  config.model.name = "cgml_unet"
  config.model.features = 32  # Conv width at full resolution (x2 per level).
  config.model.num_levels = 3  # Stride-2 levels of the encoder: 32x32 -> 4x4 bottleneck.
  config.model.hidden = 64  # MLP width (cgml_mlp).
  config.model.h_dim = 32  # Bottleneck size of the MLP encoder.
  config.model.znet_hidden = 256
  config.model.znet_layers = 3
  # Z(z_t, h, t / l): Z learns each iteration's move, and inference replays the
  # training schedule (methods/cgml.py, "Inference").
  config.model.znet_iteration_input = True
  config.model.output_activation = "sigmoid"
  config.model.lipschitz = "spectral_norm"
  config.model.lipschitz_scale = 1.5  # G: ~1.5^6 in z, enough to separate two completions.
  # Z's move field reverses direction between neighbouring modes' basins: a
  # 1-Lipschitz Z (scale 1) smoothed it into a drift across them.
  config.model.znet_lipschitz_scale = 2.0
  config.model.power_iterations = 5

  config.cgml = ml_collections.ConfigDict()
  config.cgml.task = "completion"
  # Where a round's z_t comes from (methods/cgml.py): 'best_of_m' (our choice, `start_codes`) or
  # 'persistent' (Alg. 1: one code per training example, carried across epochs; the docstring
  # says what they cost at ImageNet scale).
  config.cgml.z_start = "best_of_m"
  # S^2: with a few modes per input a low-dimensional sphere is covered
  # densely by the training trajectories; on S^15 the Z-network learned one
  # global attractor per input (all z_0 -> the same completion).
  config.cgml.z_dim = 3
  config.cgml.inner_steps = 6
  # A round starts from the lowest-energy of M codes ~ U(S^n): in the basin of
  # the example's own mode (methods/cgml.py `start_codes`); M >> the modes per input.
  config.cgml.z_init_candidates = 16
  # |grad_z E| is ~0.01 here (E averages over 1024 pixels, the hole is ~15%):
  # first moves of ~0.2, a refinement inside the start's basin.
  config.cgml.z_step_size = 20.0
  config.cgml.z_step_decay = 0.7
  # rho = ||z_{t+1} - z_t||: with Z told t, Eq. 4 replays the training moves'
  # lengths; alpha > 1 overshot them, on every step of inference.
  config.cgml.momentum_scale = 1.0
  config.cgml.inference_steps = 6  # T = l: inference replays a whole training round.
  # Eq. 4's step s times E[s . m] / E[||s||^2] per t (the least-squares fit to the training
  # moves m): Z steps only as far as its steps have been seen to follow the moves (methods/cgml.py).
  config.cgml.calibrate_step = True
  config.cgml.step_gain_decay = 0.99  # The moving averages' horizon: ~100 rounds.
  # ... and 0 where that fitted step explains < 1% of the moves' energy (|cos| < ~0.1):
  # a Z that learned no direction leaves z at z_0 (toy_scenes ~0.001; toy3d's first moves 0.06, 0.012).
  config.cgml.min_explained_move = 0.01
  # The "w/o rho" ablation switches this alone (tests/test_cgml.py checks that nothing else differs).
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
    config.cgml.z_init_candidates = 32
    # |grad_z E| is ~0.1-0.2 here (G is 1-Lipschitz, E a mean over 3 outputs):
    # beta_t = 2 * 0.7^t moves z by ~0.3 at first, ~0.01 at the 10th step.
    config.cgml.z_step_size = 2.0
    config.cgml.z_step_decay = 0.7
    config.cgml.inference_steps = 10
    config.model.lipschitz_scale = 1.0
    config.train.num_steps = 30000
    config.train.log_every = 1000
    config.train.checkpoint_every = 10000
    config.train.sample_every = 0
  elif arg.toy_scenes or arg.conditional:
    config.data.name = "toy_scenes_conditional" if arg.conditional else "toy_scenes"
    config.data.batch_size = 8
    config.cgml.task = "direct"
    config.model.output_activation = "sigmoid"
    config.cgml.z_dim = 4  # 12 modes per layout on S^3.
    config.cgml.z_init_candidates = 24  # 2 x K: the start is mostly in the example's basin.
    config.cgml.inner_steps = 4
    config.cgml.inference_steps = 4
    # beta = 1: moves of ~0.08 on S^3 at the end of training, a refinement inside the start's
    # basin. beta = 10 moved z by ~0.5 per step, across basins: G (energy 0.073 against 0.038)
    # and Z fit the average of many modes, and inference lost them (module docstring).
    config.cgml.z_step_size = 1.0
    # 600 batches x l = 4, layout cIMLE's wall time: G's recall at t = 0 is 0.60 at 1200 (under one
    # epoch), 0.86 at 2400, 0.91 at 4800 (seed 0; experiments/results/cgml.md).
    config.train.num_steps = 2400
    config.train.log_every = 100
    config.train.checkpoint_every = 800
    config.train.sample_every = 800
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

  if arg.paper:
    # What the paper says, where the defaults choose otherwise (the module docstring).
    config.cgml.z_start = "persistent"  # Alg. 1's z = {z_1..z_J}, carried across epochs.
    config.cgml.calibrate_step = False  # Eq. 4's step, gain 1.
    config.model.znet_iteration_input = False  # Eq. 4's Z(z_t, x_j) is blind to t (§2.1: first-order Markov).
    config.cgml.z_step_decay = 1.0  # §3: z_{t+1} = z_t - beta grad_z E, one beta.

  if arg.runlocal:
    config.data.builder_config = "tiny"  # every local dataset has one (builds in seconds)
    config.data.batch_size = 8
    config.model.features = 8
    config.model.num_levels = 2
    config.model.hidden = 16
    config.model.h_dim = 8
    config.model.znet_hidden = 16
    config.cgml.inner_steps = 2
    config.cgml.inference_steps = 2
    config.cgml.z_init_candidates = 4
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
