"""gs:// workdirs and data dirs end to end, against a local fake Cloud Storage (tests/fake_gcs.py; issue 41).

(a) a run on `gs://bucket/run` with its data in `gs://bucket/tfds` is
SIGKILLed after a checkpoint, resumes bit-exactly, and `evaluate` and
`sample` read it back; (b) two processes (jax.distributed on localhost, as
the pod script launches them) train on one gs:// workdir: one lock, one
run_info, one set of checkpoints; (c) a second run on a busy gs:// workdir is
refused. Nothing is written under a local folder named `gs:`. What the
bucket holds is read from the server itself, not through the project's code.
"""

import json
import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from conftest import REPO, run_worker
from fake_gcs import FakeGcs
from multimodal_jax import storage

BUCKET = "mmj-test"
REGRESSION = str(REPO / "configs" / "regression.py")


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
  """The fake server for this module; its variables in os.environ while the module runs (TF reads them once)."""
  fake = FakeGcs()
  fake.create_bucket(BUCKET)
  env = {**fake.env, "MULTIMODAL_JAX_DATA_MIRROR": str(tmp_path_factory.mktemp("mirror"))}  # this "host"'s copy
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield fake
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  fake.close()


def _flags(workdir: str, data_dir: str, **train) -> list[str]:
  train = {"num_steps": 4, "checkpoint_every": 2, "log_every": 2, "sample_every": 0, **train}
  return ([f"--config={REGRESSION}:runlocal", f"--workdir={workdir}", f"--config.data.data_dir={data_dir}",
           "--config.data.builder_config=tiny", "--config.data.batch_size=4"]
          + [f"--config.train.{k}={v}" for k, v in train.items()])


def _params(npz) -> dict[str, np.ndarray]:
  data = np.load(npz)
  return {k: data[k] for k in data.files if k.startswith("state/")}


def _cli(module: str, *args: str, cwd) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", f"multimodal_jax.{module}", *args], cwd=cwd, capture_output=True,
                        text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_the_storage_layer_on_a_bucket(gcs):
  root = f"gs://{BUCKET}/layer"
  storage.write_text(f"{root}/a/b.json", "one")
  storage.write_text(f"{root}/a/b.json", "two")
  assert gcs.read(BUCKET, "layer/a/b.json") == b"two" and storage.read_text(f"{root}/a/b.json") == "two"
  assert storage.exists(f"{root}/a/b.json") and storage.listdir(f"{root}/a") == ["b.json"]
  # The lock's primitive: one winner, whose content stays (Cloud Storage's ifGenerationMatch=0).
  assert storage.create_exclusive(f"{root}/.lock", "first")
  assert not storage.create_exclusive(f"{root}/.lock", "second")
  assert gcs.read(BUCKET, "layer/.lock") == b"first"
  storage.remove(f"{root}/.lock")
  assert storage.create_exclusive(f"{root}/.lock", "third")
  storage.write_text(f"{root}/ckpt/7/meta", "m")  # A corrupt checkpoint moved aside: a folder, object by object.
  storage.move(f"{root}/ckpt/7", f"{root}/corrupt/7-now")
  assert [n for n in gcs.objects(BUCKET, "layer/") if "7" in n and not n.endswith("/")] == ["layer/corrupt/7-now/meta"]
  assert storage.free_bytes(root) is None


def test_the_build_lock_in_a_bucket_lets_one_builder_in_at_a_time(gcs, capsys):
  from multimodal_jax.data import pipeline  # pylint: disable=g-import-not-at-top
  data_dir, events = f"gs://{BUCKET}/locktest", []

  def build(name):
    with pipeline._remote_build_lock(data_dir, "toy.tiny", poll_seconds=0.05):  # pylint: disable=protected-access
      events.append(f"{name} in")
      time.sleep(0.5)
      events.append(f"{name} out")

  first = threading.Thread(target=build, args=("first",))
  first.start()
  while not events:
    time.sleep(0.01)
  build("second")
  first.join()
  assert events == ["first in", "first out", "second in", "second out"]
  assert "Waiting for another process that is building 'toy.tiny'" in capsys.readouterr().out
  # A lock left by a killed build on this host is removed; the bucket is left without one.
  dead = subprocess.Popen(["true"])
  dead.wait()
  lock = {"host": socket.gethostname(), "pid": dead.pid, "started": "2030-01-02T03:04:05+0000"}
  assert storage.create_exclusive(f"{data_dir}/.toy.tiny.build.lock", json.dumps(lock))
  build("third")
  assert "Removing the build lock" in capsys.readouterr().out and not gcs.objects(BUCKET, "locktest/")


def test_a_run_on_a_bucket_resumes_bit_exactly_and_evaluate_and_sample_read_it_back(gcs, tmp_path, data_dir,
                                                                                    monkeypatch):
  workdir, remote_data = f"gs://{BUCKET}/run", f"gs://{BUCKET}/tfds"
  killed = subprocess.run([sys.executable, str(REPO / "tests" / "train_worker.py"),
                           *_flags(workdir, remote_data), "--kill_after_checkpoint=2"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert killed.returncode == -9, killed.stdout[-3000:] + killed.stderr[-3000:]
  objects = gcs.objects(BUCKET, "run/")
  assert "run/run_info.json" in objects and any(n.startswith("run/checkpoints/2/") for n in objects)
  assert not any(n.startswith("run/checkpoints/4") for n in objects)
  assert any(n.startswith("tfds/toy_scenes/tiny/") for n in gcs.objects(BUCKET, "tfds/"))  # Built in the bucket.
  run_worker(_flags(workdir, remote_data) + [f"--out={tmp_path / 'resumed.npz'}"])
  run_worker(_flags(str(tmp_path / "reference"), data_dir) + [f"--out={tmp_path / 'reference.npz'}"])
  resumed, reference = _params(tmp_path / "resumed.npz"), _params(tmp_path / "reference.npz")
  assert resumed.keys() == reference.keys()
  for k in resumed:
    np.testing.assert_array_equal(resumed[k], reference[k], err_msg=k)
  objects = gcs.objects(BUCKET, "run/")
  assert any(n.startswith("run/checkpoints/4/") for n in objects) and "run/.lock" not in objects
  assert any("tfevents" in n for n in objects)  # TensorBoard in the bucket.

  # What the evaluate and sample CLIs run, in this process (its environment points at the fake server).
  from multimodal_jax import evaluate, sample  # pylint: disable=g-import-not-at-top
  monkeypatch.chdir(tmp_path)
  assert evaluate.evaluate(workdir, num_inputs=2, num_samples=2, evals="diversity")["step"] == 4
  assert json.loads(gcs.read(BUCKET, "run/eval.json"))["step"] == 4
  sample.sample_to_png(workdir, f"{workdir}/grid.png", num_inputs=1, num_samples=2)
  assert gcs.read(BUCKET, "run/grid.png")[:8] == b"\x89PNG\r\n\x1a\n"
  assert not (tmp_path / "gs:").exists()  # The old bug: a local folder named `gs:` held the run.


def test_two_processes_share_one_remote_workdir(gcs, tmp_path):
  import portpicker  # pylint: disable=g-import-not-at-top
  port = portpicker.pick_unused_port()
  workdir, remote_data = f"gs://{BUCKET}/two", f"gs://{BUCKET}/tfds"
  procs = [run_worker(_flags(workdir, remote_data) + [
      f"--out={tmp_path / f'p{i}.npz'}", f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
      f"--process_id={i}"], wait=False, env={"XLA_FLAGS": "--xla_force_host_platform_device_count=1",
                                              "MULTIMODAL_JAX_DATA_MIRROR": str(tmp_path / f"host{i}")})
           for i in range(2)]
  logs = [p.communicate(timeout=600)[0] for p in procs]
  for p, log in zip(procs, logs):
    assert p.returncode == 0, log[-6000:]
  p0, p1 = _params(tmp_path / "p0.npz"), _params(tmp_path / "p1.npz")
  for k in p0:
    np.testing.assert_array_equal(p0[k], p1[k], err_msg=k)
  objects = gcs.objects(BUCKET, "two/")
  assert objects.count("two/run_info.json") == 1 and "two/.lock" not in objects
  assert sorted({n.split("/")[2] for n in objects if n.startswith("two/checkpoints/")} - {""}) == ["2", "4"]
  # The data: one shared copy in the bucket, read by each "host" from its own local mirror.
  assert "Downloading the prepared dataset gs://" in logs[1]
  for i in range(2):
    assert list((tmp_path / f"host{i}").glob("gs/*/tfds/toy_scenes/tiny/*/dataset_info.json"))
  assert sum("Taking over" in log or "is in use" in log for log in logs) == 0


def test_a_busy_remote_workdir_is_refused(gcs, tmp_path):
  holder = subprocess.Popen(["sleep", "120"])
  try:
    lock = {"host": socket.gethostname(), "pid": holder.pid, "started": "2030-01-02T03:04:05+00:00", "token": "x"}
    assert storage.create_exclusive(f"gs://{BUCKET}/busy/.lock", json.dumps(lock))
    result = _cli("main", f"--config={REGRESSION}:runlocal", f"--workdir=gs://{BUCKET}/busy", cwd=tmp_path)
  finally:
    holder.kill()
    holder.wait()
  lines = result.stderr.strip().splitlines()
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  assert f"gs://{BUCKET}/busy is in use by another run: pid {holder.pid}" in lines[0]
  assert gcs.objects(BUCKET, "busy/") == ["busy/.lock"]  # Nothing else written.
  assert not (tmp_path / "gs:").exists()
