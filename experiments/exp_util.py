"""Helpers shared by the experiment scripts (run as `python experiments/<name>.py`)."""

import importlib.util
import json
import os
import subprocess

import ml_collections

from multimodal_jax import train
from multimodal_jax import workdir as workdir_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def git_commit() -> str:
  """HEAD's hash, `+dirty` where tracked files differ from it ('' outside git): what a record was made with."""
  def git(*args):
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=30, cwd=REPO,
                          check=False).stdout.strip()
  try:
    head = git("rev-parse", "HEAD")
    return head + ("+dirty" if head and git("status", "--porcelain", "--untracked-files=no") else "")
  except (OSError, subprocess.SubprocessError):
    return ""


def load_config(name: str, arg: str | None, seed: int, data_dir: str) -> ml_collections.ConfigDict:
  """`configs/<name>`'s get_config(arg), with the experiment's seed and data dir (unlocked)."""
  spec = importlib.util.spec_from_file_location("cfg", os.path.join(REPO, "configs", name))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(arg)
  config.seed = seed
  config.data.data_dir = data_dir
  return config


def check_same_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Raises if workdir holds a run of another config (nothing there is fine)."""
  info_path = os.path.join(workdir, workdir_lib.RUN_INFO)
  if os.path.exists(info_path):
    with open(info_path) as f:
      saved = json.load(f)["config"]
    if saved != json.loads(config.to_json_best_effort()):
      raise ValueError(f"{workdir} holds a run of another config: delete it or pass another --workdir.")


def train_or_reuse(config: ml_collections.ConfigDict, workdir: str):
  """Trains `config` in workdir, resuming a partial run; refuses a run of another config.

  Returns the final train state (its `step` is short of `train.num_steps` where a SIGTERM or
  Ctrl-C stopped the run: the loop saves a checkpoint and returns).
  """
  check_same_config(config, workdir)
  return train.train_and_evaluate(config, workdir)
