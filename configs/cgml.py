r"""cGML: conditional generation by learning the latent space (cgml_iclr2021, Alg. 1, Eq. 1-4).

  python -m multimodal_jax.main --config=configs/cgml.py:completion,box --workdir=/tmp/cgml

Default (`:completion`): digits_completion (masked digit -> completed digit,
20% of the training tops overlapped with another digit, §5.1 / Fig. 4), conv
encoder / U-Net generator, 900 generator updates: about 5 minutes on a
(shared) 2-core CPU. As the paper reports for this setting, the model settles
on the most probable (clean) completion. Variants:

  :completion,box      digits_completion_box (§5.1 / Fig. 5): a white box under
                       the mask in 40% of the targets, two exact modes per input.
                       experiments/cgml_completion.py. Measured (256 test digits,
                       16 samples, the 132 whose digit leaves the box dark): box
                       mode in 42.0% of the samples at t = 0 and after T = 6 steps
                       (calibrated Eq. 4; step gains 0-0.03, Z learned no direction
                       here either; the paper's Eq. 4 gave 35% in an earlier run,
                       and before issue #14's start codes 19%); both modes for
                       99.2% of the inputs; best-of-16 hole PSNR 23.7 dB against
                       18.6 dB for L1 regression. ~10 min on a 2-core CPU shared
                       with two other runs (the best-of-16 starts add ~16 G
                       forwards per round).
  :toy3d               y = ±4 (x, x², x³) (§4, Fig. 3), 3-layer MLPs, 30000
                       generator updates: about 6-8 minutes; experiments/cgml_toy3d.py.
                       Z learns the first moves here (step gains 0.52, 0.22, explaining
                       6% and 1.2% of the moves; then < 1%, gain 0): precision
                       0.613 -> 0.625, coverage 0.986 -> 0.990 from t = 0 to T = 10
                       (with the later gains 0.16, 0.09, ... kept: 0.626, 0.994; the
                       paper's Eq. 4 on the same G: 0.656, 0.996).
  :toy_scenes          layout -> image on toy_scenes (12 exactly known appearance
                       modes per layout): evaluate reports mode recall at t = 0
                       (z_0 decoded) and after the T inference steps. Measured
                       (1200 steps, ~6-9 min on a 2-core CPU shared with one other
                       run; the same z_0 at t = 0 and t = T, 32 layouts x 64
                       samples), seeds 0 / 1 / 2, recall t = 0 -> t = T:
                         calibrated Eq. 4 (default)   0.602 -> 0.602, 0.594 -> 0.594, 0.484 -> 0.484 (96 layouts)
                         gain fit alone (min_explained_move=0)  0.602 -> 0.604, 0.594 -> 0.594, 0.484 -> 0.482
                         the paper's Eq. 4 (gain 1)   0.602 -> 0.664, 0.594 -> 0.547, 0.443 -> 0.432 (32)
                       (the same G: Z never feeds back into training). Z learned
                       no direction here (step gain 0.01-0.04, explaining ~0.1% of
                       the moves), so every gain is 0 and inference keeps z_0: it
                       loses no modes and adds none;
                       the paper's Eq. 4 random-walks them a few points either
                       way. Nearest-mode recall 0.95-0.99 throughout. The
                       generator's own coverage varies a lot with the seed. z
                       step size beta = 1; with beta = 10 (before): 0.19 -> 0.03
                       (nearest 0.92 -> 0.55) on 32 layouts; beta = 2: 0.599 ->
                       0.570; beta = 0.5: 0.375 -> 0.398 (inference gains, the
                       model is weaker); these three with the paper's Eq. 4.
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
                   across epochs; see methods/cgml.py) ...
  z_init_candidates  ... as the lowest-energy of M uniform codes (the basin
                   of the example's mode, where a persistent code would be).
  z_step_size      beta of z_{t+1} = project(z_t - beta_t grad_z E) ...
  z_step_decay     ... with beta_t = z_step_size * z_step_decay^t, t = 0..l-1.
  momentum_scale   alpha of rho = alpha ||z_{t+1} - z_t|| (§2.2).
  inference_steps  T iterations of Eq. 4; T = l replays a training round.
  calibrate_step   Eq. 4's step s times the least-squares gain E[s . m] / E[||s||^2]
                   against the training moves m, per t, clipped to [0, 1] (False:
                   the paper's Eq. 4); logged as znet/step_gain ...
  step_gain_decay  ... moving averages with this decay per round ...
  min_explained_move  ... and 0 where the fitted step explains less than this share
                   of the moves' energy, E[s . m]^2 / (E||s||^2 E||m||^2)
                   (znet/explained_move).
  model.znet_iteration_input  Z also sees t / l (see methods/cgml.py).
  model.lipschitz  'spectral_norm' on every G and Z layer (or 'none'), each
                   normalised kernel times model.lipschitz_scale (G) or
                   model.znet_lipschitz_scale (Z), model.power_iterations.
`train.num_steps` counts generator updates: a batch makes l of them.

Eq. 4 on toy_scenes (issue #14; measured on the seed-1 run above, 1200 steps):
the Z-network has not learned the moves, and nothing in (z_t, x) would let it.
  * Z's predicted move against the training move from the same best-of-M start:
    cosine 0.06 (59% positive); at inference, against the descent towards the
    mode G(z_0) is nearest to: 0.005 (46% positive). Its z L1 (0.040) is that of
    predicting no move at all.
  * The moves are not texture noise: the first move towards a target and towards
    its noise-free render agree (cosine 0.97). They depend on the target beyond
    what (z_t, x) say: a k-nearest-neighbour regression on 2560 (z_t, move) pairs
    predicts held-out moves with cosine 0.14 from z_t, 0.12 with the class areas.
  * So rho_hat (the length of the training move, ~0.036 per inference step) is
    spent along a direction that carries no information: 13% of the samples
    change mode over T = 4 steps, 48% get nearer their nearest mode.
  * The "w/o rho" ablation (`:toy_scenes,no_momentum`, the same G; z <- project(z_hat))
    moves z by Z's own small predicted step: seed 0 0.602 -> 0.604, seed 1 0.594 ->
    0.581 (with rho: 0.664, 0.547). Training logs Z's direction against the training
    move as `znet/move_cosine`, and the gain it earns as `znet/step_gain`.
  * Hence `cgml.calibrate_step` (issue #14: inference must not lose the modes of
    z_0): Eq. 4 steps only as far as its steps have been seen to follow the
    training moves, a gain of 0.01-0.04 here (toy3d, where Z learns the first
    moves: 0.52 at t = 0); a Z whose steps are the moves keeps 1.
Tried and not kept (seed 1 unless said; t = 0 -> t = T recall): Gaussian steps
off the best start (sigma 0.2: 0.396 -> 0.391; 0.4: 0.177 -> 0.148, a weaker
G); a Huber z energy (delta 0.03: 0.602 -> 0.570, seed 0 0.602 -> 0.576; delta
0.1: 0.404 -> 0.404, a weaker G); the start drawn among the best 2 of 24 (0.484
-> 0.487, a weaker G) or 4 of 48 (0.438 -> 0.417); rho trained on the move's component along
Z's own prediction, whose mean is ~0 here (the same G: 0.594 -> 0.560).
"""

import ml_collections

from multimodal_jax import config_lib

# Every argument this file is meant to be run with (tests load each one).
VARIANTS = ["", "runlocal", "completion", "completion,box", "completion,box,no_momentum",
            "toy3d", "toy3d,runlocal", "toy3d,no_momentum", "toy_scenes", "toy_scenes,runlocal",
            "no_momentum", "colorization",
            "colorization,runlocal", "colorization,stl10", "colorization,imagenet"]


def _optimizer(learning_rate: float) -> ml_collections.ConfigDict:
  opt = config_lib.base_config().optimizer
  opt.learning_rate = learning_rate
  return opt


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, completion=False, box=False, toy3d=False,
                             toy_scenes=False, colorization=False, stl10=False, imagenet=False,
                             no_momentum=False)
  if sum([arg.completion, arg.toy3d, arg.toy_scenes, arg.colorization]) > 1:
    raise ValueError("Choose one task of completion, toy3d, toy_scenes, colorization.")
  if (arg.stl10 or arg.imagenet) and not arg.colorization:
    raise ValueError("stl10 and imagenet are colorization variants: use `colorization,stl10`.")
  if arg.box and (arg.toy3d or arg.toy_scenes or arg.colorization):
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
  elif arg.toy_scenes:
    config.data.name = "toy_scenes"
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
    config.train.num_steps = 1200  # 300 batches x l = 4.
    config.train.log_every = 100
    config.train.checkpoint_every = 400
    config.train.sample_every = 400
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
    config.cgml.inference_steps = 2
    config.cgml.z_init_candidates = 4
    config_lib.set_runlocal_schedule(config)
  config.lock()
  return config
