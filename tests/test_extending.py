"""Datasets from outside the package: `--import`, run_info.json, and LocalBuilders in user code.

The end-to-end test runs `main`, `evaluate` and `sample` as a user would, in
fresh processes, on tests/user_data_example.py and tests/user_method_example.py
(the examples of docs/extending.md), importable only through PYTHONPATH.
"""

import json
import os
import pathlib
import runpy
import subprocess
import sys
import textwrap

import ml_collections
import numpy as np
import pytest

from conftest import REPO
from multimodal_jax import inference
from multimodal_jax import plugins
from multimodal_jax import workdir as workdir_lib

EXAMPLE_MODULE = "user_data_example"
EXAMPLE_DATASET = "two_colour_blocks"
METHOD_MODULE = "user_method_example"
EVALUATOR_MODULE = "user_evaluator_example"


def run_cli(tool: str, *args: str, cwd: pathlib.Path) -> subprocess.CompletedProcess:
  """`python -m multimodal_jax.<tool> ARGS` with tests/ (the example module) on PYTHONPATH."""
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(REPO / "tests"), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  # No LPIPS weights: evaluation uses the pixel distance wherever the test runs.
  env["MULTIMODAL_JAX_WEIGHTS_DIR"] = str(cwd / "no_weights")
  return subprocess.run([sys.executable, "-m", f"multimodal_jax.{tool}", *args], env=env, cwd=cwd,
                        capture_output=True, text=True, timeout=600)


def _check_ok(proc: subprocess.CompletedProcess) -> str:
  output = proc.stdout + proc.stderr
  assert proc.returncode == 0, f"{proc.args} failed ({proc.returncode}):\n{output[-6000:]}"
  return output


def test_a_user_dataset_and_method_train_evaluate_and_sample_through_the_clis(tmp_path, data_dir):
  workdir, png = tmp_path / "run", tmp_path / "grid.png"
  train_out = _check_ok(run_cli(
      "main", f"--config={REPO / 'tests' / 'user_method_config.py'}:runlocal",
      f"--config.data.data_dir={data_dir}", f"--import={EXAMPLE_MODULE}", f"--import={METHOD_MODULE}",
      f"--workdir={workdir}", cwd=tmp_path))
  assert "Training best_of_k (best of 2 hypotheses" in train_out and EXAMPLE_DATASET in train_out
  assert "best_of_k sampling weights: 16/16 examples" in train_out  # its prepare() ran, with progress
  assert (workdir / "prepared.npz").exists()
  with open(workdir / workdir_lib.RUN_INFO) as f:
    assert json.load(f)["imports"] == [EXAMPLE_MODULE, METHOD_MODULE]

  # No --import: the modules recorded in run_info.json are imported.
  # A user's evaluator, added to the list with --evals (docs/extending.md).
  eval_out = _check_ok(run_cli("evaluate", f"--workdir={workdir}", "--num_inputs=4", "--num_samples=4",
                               f"--import={EVALUATOR_MODULE}", "--evals=fidelity,diversity,best_mse",
                               cwd=tmp_path))
  with open(workdir / "eval.json") as f:
    result = json.load(f)
  assert result["dataset"] == EXAMPLE_DATASET and f"on {EXAMPLE_DATASET}" in eval_out
  assert result["method"] == "best_of_k"
  assert result["metrics"]["diversity_mean_abs_pixel"] > 0.0  # Two hypotheses: samples differ.
  assert "mode_recall" not in result["metrics"]  # The example gives no true_modes.
  assert 0.0 < result["metrics"]["best_mse"] and "best-of-4 MSE" in eval_out
  assert result["evals"] == ["fidelity", "diversity", "best_mse"]

  # Repeating the flag is harmless.
  sample_out = _check_ok(run_cli("sample", f"--workdir={workdir}", f"--out={png}", "--num_inputs=2",
                                 "--num_samples=2", f"--import={EXAMPLE_MODULE}", cwd=tmp_path))
  assert png.exists() and EXAMPLE_DATASET in sample_out


def test_an_unknown_import_fails_in_one_line(tmp_path):
  proc = run_cli("main", f"--config={REPO / 'configs' / 'regression.py'}:runlocal",
                 "--import=no_such_module", f"--workdir={tmp_path / 'run'}", cwd=tmp_path)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines() == [  # One line (cli.user_errors), not a traceback.
      "error: Could not import 'no_such_module' (--import): ModuleNotFoundError: "
      "No module named 'no_such_module'; is its directory on PYTHONPATH?"]
  assert not (tmp_path / "run" / workdir_lib.RUN_INFO).exists()


@pytest.mark.parametrize("module", [EXAMPLE_MODULE, METHOD_MODULE, EVALUATOR_MODULE])
def test_docs_show_the_tested_examples(module):
  # docs/extending.md shows tests/user_*_example.py without their docstrings.
  example = (REPO / "tests" / f"{module}.py").read_text()
  code = example.split('"""\n\n', 1)[1]
  assert code in (REPO / "docs" / "extending.md").read_text()
  assert len(code.splitlines()) < (30 if module == EVALUATOR_MODULE else 60)


# ---------------------------------------------------------------- plugins and run_info.json


@pytest.fixture
def fresh_imports(monkeypatch, tmp_path):
  """An empty plugins.imported() and tmp_path on sys.path, both undone after the test."""
  monkeypatch.setattr(plugins, "_imported", [])
  monkeypatch.syspath_prepend(str(tmp_path))
  return tmp_path


def test_import_modules_records_names_and_reports_failures_in_one_line(fresh_imports):
  (fresh_imports / "mmj_plugin_ok.py").write_text("LOADED = True\n")
  (fresh_imports / "mmj_plugin_broken.py").write_text(
      "import mmj_missing_dependency\n")
  (fresh_imports / "mmj_plugin_raises.py").write_text(
      "raise ValueError('Dataset registered twice.\\nSecond line.')\n")
  plugins.import_modules(["mmj_plugin_ok", "mmj_plugin_ok", "json"])
  assert plugins.imported() == ["mmj_plugin_ok", "json"]

  with pytest.raises(ImportError, match=r"^Could not import 'mmj_plugin_raises' \(--import\): ValueError: "
                     r"Dataset registered twice\. \(.*mmj_plugin_raises\.py:1\)$") as raised:
    plugins.import_modules(["mmj_plugin_raises"])
  assert isinstance(raised.value.__cause__, ValueError)
  # A missing dependency of an existing module: no PYTHONPATH hint.
  with pytest.raises(ImportError,
                     match=r"'mmj_plugin_broken' .*'mmj_missing_dependency' \(.*mmj_plugin_broken\.py:1\)$"):
    plugins.import_modules(["mmj_plugin_broken"])
  with pytest.raises(ImportError, match=r"^--import=my_data\.py: give a module name"):
    plugins.import_modules(["my_data.py"])
  assert plugins.imported() == ["mmj_plugin_ok", "json"]


def test_run_info_records_imports_and_load_trained_imports_them(fresh_imports):
  config = ml_collections.ConfigDict({"method": "regression", "seed": 0})
  batch_spec = {"x": np.zeros((2, 4, 4, 1), np.float32)}
  plugins.import_modules(["json"])
  workdir_lib.write_run_info(str(fresh_imports), config, batch_spec)
  info = json.loads((fresh_imports / workdir_lib.RUN_INFO).read_text())
  assert info["imports"] == ["json"]
  workdir_lib.write_run_info(str(fresh_imports), config, batch_spec, imports=("mmj_not_installed",))
  info = json.loads((fresh_imports / workdir_lib.RUN_INFO).read_text())
  assert info["imports"] == ["mmj_not_installed"]
  # The run's modules are imported before anything else is read.
  with pytest.raises(ImportError, match=r"^Could not import 'mmj_not_installed' \(recorded in .*run_info\.json\)"
                     r": ModuleNotFoundError: .*; is its directory on PYTHONPATH\?$"):
    inference.load_trained(str(fresh_imports))


# ---------------------------------------------------------------- LocalBuilder in user code

_SCRIPT = textwrap.dedent('''\
    """A user's top-level script that defines and builds a LocalBuilder with a BuilderConfig."""
    import dataclasses

    import numpy as np
    import tensorflow_datasets as tfds

    from multimodal_jax.data import registry


    @dataclasses.dataclass
    class CountConfig(tfds.core.BuilderConfig):
      num_examples: int = 3


    class ScriptCounts(registry.LocalBuilder):
      VERSION = tfds.core.Version("1.0.0")
      BUILDER_CONFIGS = [CountConfig(name="three"), CountConfig(name="five", num_examples=5)]

      def _info(self):
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({"v": tfds.features.Scalar(dtype=np.int32)}))

      def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

      def _generate_examples(self):
        for i in range(self.builder_config.num_examples):
          yield i, {"v": np.int32(i)}


    builder = ScriptCounts(config="five", data_dir=DATA_DIR, file_format="array_record")
    builder.download_and_prepare()
    VALUES = sorted(int(r["v"]) for r in builder.as_data_source("train"))
    CODE_PATH = str(ScriptCounts.code_path)
    ''')


def test_a_local_builder_in_a_top_level_script_builds(tmp_path):
  # tfds looked for metadata in the "package" `__main__`, i.e. in the .py file
  # itself: NotADirectoryError. The same happened for top-level modules.
  script = tmp_path / "make_counts.py"
  script.write_text(_SCRIPT)
  namespace = runpy.run_path(str(script), init_globals={"DATA_DIR": str(tmp_path / "data")},
                             run_name="__main__")
  assert namespace["VALUES"] == [0, 1, 2, 3, 4]
  assert namespace["CODE_PATH"] == str(script)
