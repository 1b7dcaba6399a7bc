"""Shared fixtures: a data dir holding the tiny variants of the offline datasets."""

import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


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
