"""experiments/compare.py: every run's budget is valid, and one tiny run goes through to the table and README."""

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))

import compare  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimodal_jax import validation  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimodal_jax.methods import base  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_every_run_has_a_valid_config(quick):
  """Both budgets of every run pass the checks the loop makes before compiling (whole rounds, SRIM's z = 0 phase)."""
  for run in compare.RUNS:
    config = compare.run_config(run, quick, seed=0, data_dir="")
    config.lock()
    validation.validate(config)
    base.validate_method_config(config)
    if quick:
      assert config.train.num_steps == run.quick_steps, run.slug
      if "imle" in config and config.imle.zero_code_steps:
        assert 0 < config.imle.zero_code_steps < config.train.num_steps, run.slug


def test_slugs_are_unique_and_every_table_has_a_baseline():
  assert len({r.slug for r in compare.RUNS}) == len(compare.RUNS)
  for table in (compare.TOY, compare.SR, compare.DIGITS):
    assert any(r.table == table and r.config == "regression.py" for r in compare.RUNS), table


def test_a_tiny_run_reaches_the_table_csv_and_readme(tmp_path, data_dir):
  """L1 regression on the tiny toy_scenes: the row is the deterministic baseline's (recall 0, nearest 1/K)."""
  run = compare.Run("reg", "L1 regression (baseline)", compare.TOY, "regression.py", "runlocal", quick_steps=4)
  rows = compare.run_all([run], {"workdir": str(tmp_path / "runs"), "quick": True, "seed": 0,
                                 "data_dir": data_dir})
  assert "error" not in rows[0], rows[0].get("error")
  m = rows[0]["eval"]["metrics"]
  k = rows[0]["eval"]["num_modes"]
  assert m["mode_recall"] == 0.0
  assert m["mode_recall_nearest"] == pytest.approx(1 / k)
  assert rows[0]["recall_at"][1] == (0.0, pytest.approx(1 / k)) and rows[0]["parameters"] > 0

  header, body = compare.table_rows(rows, compare.TOY)
  assert header[:3] == ["method", "mode recall", "precision"]
  assert body == [[run.name, "0.000", "0.000", f"{1 / k:.3f}", "0.0000", *body[0][5:]]]
  compare.write_csv(rows, str(tmp_path / "compare.csv"))
  assert (tmp_path / "compare.csv").read_text().splitlines()[1].startswith(f"{compare.TOY},reg,")

  for name, plot in (("qd.png", compare.plot_quality_diversity), ("recall.png", compare.plot_recall),
                     ("sheet.png", compare.sample_sheet)):
    plot(rows, str(tmp_path / name))
    assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG", name

  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{compare.README_BEGIN}\nold table\n{compare.README_END}\nafter\n")
  compare.update_readme("| new |\n", str(readme))
  assert readme.read_text() == f"intro\n{compare.README_BEGIN}\n| new |\n{compare.README_END}\nafter\n"
  # A second run reuses the trained workdir (its recorded wall time) instead of training again.
  again = compare.run_all([run], {"workdir": str(tmp_path / "runs"), "quick": True, "seed": 0,
                                  "data_dir": data_dir})
  assert again[0]["train_seconds"] == rows[0]["train_seconds"]


def test_readme_without_markers_is_one_clear_error(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("no markers\n")
  with pytest.raises(ValueError, match="markers"):
    compare.update_readme("x", str(readme))
  assert os.path.exists(readme)
