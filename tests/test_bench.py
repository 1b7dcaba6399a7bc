"""The benchmarks' shared helpers (experiments/bench_common.py: exact FLOP counts, the JSON record) and bench.py."""

import json
import pathlib
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from multimodal_jax.models import rrdb
from multimodal_jax.models import vgg as vgg_lib

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))
import bench  # pylint: disable=g-import-not-at-top,wrong-import-position
import bench_common  # pylint: disable=g-import-not-at-top,wrong-import-position
import exp_util  # pylint: disable=g-import-not-at-top,wrong-import-position


class _OneByOne(nn.Module):
  @nn.compact
  def __call__(self, h, _):
    return nn.Conv(4, (1, 1))(h), None


class TinyNet(nn.Module):
  """conv 3x3 (3 -> 4, SAME), conv 3x3 stride 2 (4 -> 4, 2 groups), a scan of two 1x1 convs, dense 64 -> 5."""

  @nn.compact
  def __call__(self, x):
    h = nn.Conv(4, (3, 3))(x)
    h = nn.Conv(4, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), feature_group_count=2)(h)
    repeat = nn.scan(_OneByOne, variable_axes={"params": 0}, split_rngs={"params": True}, length=2)
    h, _ = repeat(name="repeat")(h, None)
    return nn.Dense(5)(h.reshape(h.shape[0], -1))


def test_count_flops_matches_a_hand_count_of_a_tiny_conv_net():
  x = jnp.zeros((2, 8, 8, 3))
  net = TinyNet()
  params = net.init(jax.random.PRNGKey(0), x)
  # 2 FLOPs per multiply-add, padded positions included: 2 * B * H_out * W_out * K^2 * C_in/groups * C_out.
  conv1 = 2 * 2 * 8 * 8 * 9 * 3 * 4            # 27,648
  conv2 = 2 * 2 * 4 * 4 * 9 * (4 // 2) * 4      # 4,608 (two groups of 2 input channels)
  scan = 2 * (2 * 2 * 4 * 4 * 1 * 4 * 4)        # 2,048 (two 1x1 convs inside a scan)
  dense = 2 * 2 * (4 * 4 * 4) * 5               # 1,280
  assert bench_common.count_flops(lambda p: net.apply(p, x), params) == conv1 + conv2 + scan + dense == 35584


def test_count_flops_of_the_rrdb_equals_its_analytic_count_in_both_dense_conv_styles():
  x, z = jnp.zeros((1, 4, 4, 3)), jnp.zeros((1, 4, 4, 2))
  expected = rrdb.flops_per_sample(8, 2, 4, 5, (4, 4), upsample_factor=4)
  for style in ("split", "concat"):
    net = rrdb.RRDBNet(features=8, num_blocks=2, growth=4, upsample_factor=4, dense_conv_style=style)
    params = jax.eval_shape(net.init, jax.random.PRNGKey(0), x, z)
    assert bench_common.count_flops(lambda p: net.apply(p, x, z), params) == expected


def test_count_flops_of_vgg19_to_conv5_4_on_a_64_pixel_image():
  model = vgg_lib.VGG(arch="vgg19")
  x = jnp.zeros((1, 64, 64, 3))
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  expected, h, cin = 0, 64, 3
  for b, n_convs in enumerate(vgg_lib.VGG_BLOCKS["vgg19"]):
    for _ in range(n_convs):
      expected += 2 * h * h * 9 * cin * vgg_lib.VGG_WIDTHS[b]
      cin = vgg_lib.VGG_WIDTHS[b]
    h //= 2
  got = bench_common.count_flops(lambda p: model.apply(p, x, taps=("conv5_4",)), params)
  assert got == expected


def test_count_flops_takes_the_dearer_branch_of_a_cond():
  a = jnp.ones((4, 8))
  fn = lambda flag, a: jax.lax.cond(flag, lambda v: v[:, :4] @ v[:, 4:], lambda v: v[:, :4], a)
  assert bench_common.count_flops(fn, True, a) == bench_common.count_flops(fn, False, a) == 2 * 4 * 4 * 4


def test_write_record_holds_the_machine_dtype_and_numbers(tmp_path):
  path = bench_common.write_record("bench_x", "bfloat16", 1.5e9, {"rate": 2.0}, {"m": 3}, directory=str(tmp_path))
  record = json.loads(pathlib.Path(path).read_text())
  assert record["benchmark"] == "bench_x" and record["dtype"] == "bfloat16"
  assert record["numbers"] == {"rate": 2.0} and record["settings"] == {"m": 3}
  assert record["peak_flops_per_s"] == 1.5e9
  assert record["machine"]["jax"] == jax.__version__
  assert record["machine"]["device_kind"] == jax.devices()[0].device_kind
  assert record["machine"]["backend"] == jax.default_backend()
  assert record["timestamp"].endswith("+00:00")


def test_matmul_peak_is_positive_and_in_the_asked_dtype_units():
  peak = bench_common.matmul_peak("float32", sizes=(64,), repeats=1)
  assert np.isfinite(peak) and peak > 0


def test_count_flops_given_first_counts_the_branch_a_known_step_takes():
  a = jnp.ones((4, 8))
  fn = lambda step, a: jax.lax.cond(step % 3 == 0, lambda v: v[:, :4] @ v[:, 4:], lambda v: v[:, :4], a)
  count = bench_common.count_flops_given_first(fn, jnp.int32(0), a)
  assert [count(step) for step in range(4)] == [2 * 4 * 4 * 4, 0, 0, 2 * 4 * 4 * 4]
  # Through an optimization barrier (the IMLE steps' timing callbacks put one around the state).
  barrier = lambda step, a: fn(*jax.lax.optimization_barrier((step, a)))
  count = bench_common.count_flops_given_first(barrier, jnp.int32(0), a)
  assert count(1) == 0 and count(3) == 2 * 4 * 4 * 4


def test_bench_row_of_a_tiny_method_has_positive_rates_and_a_sane_flop_ratio(data_dir):
  config = exp_util.load_config("regression.py", "runlocal", 0, data_dir)
  peak = bench_common.matmul_peak("float32", sizes=(256,), repeats=1)
  row = bench.bench_method("regression", config, peak, config_name="regression.py:runlocal", rounds=1, repeats=1,
                           sample_inputs=2, samples_per_input=2)
  assert row["updates_per_round"] == 1
  assert row["updates_per_s"] > 0 and row["examples_per_s"] > 0 and row["images_per_s"] > 0
  assert row["gflop_per_round"] > 0 and 0 < row["flops_over_peak"] < 10
  assert row["peak_bytes"] is None or row["peak_bytes"] > 0
  assert "| regression | regression.py:runlocal |" in bench.markdown([row], [], {"float32": peak}, "bench.py")


def test_flow_speed_ratio_is_taken_at_the_first_n_reaching_the_imle_recall():
  flow = [{"steps": n, "recall": r, "precision": 0.5, "recall_nearest": r, "images_per_s": 100.0 / n}
          for n, r in [(1, 0.2), (4, 0.91), (2, 0.6), (8, 0.95)]]
  imle = {"recall": 0.9, "precision": 0.9, "recall_nearest": 0.95, "images_per_s": 400.0}
  assert bench.speed_ratio(flow, imle) == (4, 16.0)  # 400 / 25: N = 4 is the smallest N with recall >= 0.9
  assert bench.speed_ratio(flow, dict(imle, recall=0.99)) == (None, None)
  text = "\n".join(bench.flow_markdown({"flow": flow, "imle": imle, "matching_steps": 4, "speed_ratio": 16.0}))
  assert "| flow matching, x 4 steps | 0.910 | 0.500 | 0.910 | 25.0 | 16.0 |" in text
  assert "at N = 4" in text and "**16.0x**" in text
