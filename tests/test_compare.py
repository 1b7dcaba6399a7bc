"""experiments/compare.py: every run's budget is valid; a tiny run goes through to the records, the
tables, the plots and the README; the tables are assembled from hand-made records exactly."""

import json
import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "experiments"))

import compare  # pylint: disable=g-import-not-at-top,wrong-import-position
import compare_records as records  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimodal_jax import validation  # pylint: disable=g-import-not-at-top,wrong-import-position
from multimodal_jax.methods import base  # pylint: disable=g-import-not-at-top,wrong-import-position

TINY = compare.Run("reg", "L1 regression (baseline)", compare.TOY, "regression.py", "runlocal", quick_steps=4)


@pytest.mark.parametrize("quick", [True, False], ids=["quick", "full"])
def test_every_run_has_a_valid_config(quick):
  """Both budgets of every run pass the checks the loop makes before compiling (whole rounds, SRIM's z = 0 phase)."""
  for run in compare.RUNS:
    config = compare.run_config(run, quick, seed=0, data_dir="")
    config.lock()
    validation.validate(config)
    base.validate_method_config(config)
    for key, value in run.overrides:
      assert config[key.split(".")[0]][key.split(".")[1]] == value, run.slug
    if quick:
      assert config.train.num_steps == run.quick_steps, run.slug
      if "imle" in config and config.imle.zero_code_steps:
        assert 0 < config.imle.zero_code_steps < config.train.num_steps, run.slug


def test_slugs_are_unique_and_every_table_has_a_baseline():
  assert len({r.slug for r in compare.RUNS}) == len(compare.RUNS)
  for table in compare.TABLES:
    assert any(r.table == table and r.config == "regression.py" for r in compare.RUNS), table


def test_fingerprint_follows_the_config_and_the_method_source_not_the_seed():
  config = compare.run_config(TINY, False, seed=0, data_dir="")
  assert records.fingerprint(config) == records.fingerprint(compare.run_config(TINY, False, seed=3, data_dir="/x"))
  assert "multimodal_jax/methods/regression.py" in records.source_files(config)
  assert "multimodal_jax/models/conv_generator.py" in records.source_files(config)
  config.train.num_steps += 1
  assert records.fingerprint(config) != records.fingerprint(compare.run_config(TINY, False, seed=0, data_dir=""))


def test_mean_spread():
  assert records.mean_spread([1.0, 3.0]) == (2.0, pytest.approx(2 ** 0.5), 2)
  assert records.mean_spread([0.5, None, float("nan")]) == (0.5, None, 1)
  assert records.mean_spread([]) == (None, None, 0)


def test_a_tiny_run_reaches_the_records_tables_csv_and_readme(tmp_path, data_dir, capsys):
  """L1 regression on the tiny toy_scenes: its record, then its row (recall 0, nearest 1/K); a second
  --full finds the record current and trains nothing; a changed fingerprint marks it stale."""
  args = {"workdir": str(tmp_path / "runs"), "seeds": [0], "data_dir": data_dir, "runs_dir": str(tmp_path / "rec")}
  assert compare.run_full([TINY], args, force=False) == []
  path = records.record_path(args["runs_dir"], compare.TOY, "reg", 0)
  record = json.loads(pathlib.Path(path).read_text())
  assert record["fingerprint"] == records.fingerprint(compare.run_config(TINY, False, 0, data_dir))
  assert record["command"].startswith("python experiments/compare.py --full --only=reg --seeds=0")
  assert record["machine"]["jax"] and record["train_seconds"] > 0 and record["parameters"] > 0
  k = record["eval"]["num_modes"]
  assert record["eval"]["metrics"]["mode_recall"] == 0.0
  assert record["recall_at"]["1"] == [0.0, pytest.approx(1 / k)]
  assert os.path.exists(path[:-len("json")] + "png")

  before = pathlib.Path(path).read_bytes()
  capsys.readouterr()
  assert compare.run_full([TINY], args, force=False) == []
  assert "every record is current" in capsys.readouterr().out
  assert pathlib.Path(path).read_bytes() == before

  rows = compare.assemble([TINY], args["runs_dir"], data_dir)
  header, body = compare.table_rows(rows, compare.TOY)
  assert header[:3] == ["method", "mode recall", "precision"]
  # runlocal leaves LPIPS out of its evals: "—", no value
  assert body == [[TINY.name, "0.000", "0.000", f"{1 / k:.3f}", "—", "0.0000", "1", *body[0][7:]]]
  assert rows[0]["recall_at"][1] == (0.0, pytest.approx(1 / k))
  section = compare.write_outputs(rows, compare.assembled_intro(rows, args["runs_dir"]), str(tmp_path / "out"),
                                  "compare")
  for name in compare.PLOTS:
    assert (tmp_path / "out" / name).read_bytes()[:4] == b"\x89PNG", name
  assert (tmp_path / "out" / "compare.csv").read_text().splitlines()[1].startswith(f"{compare.TOY},reg,")
  readme = tmp_path / "README.md"
  readme.write_text(f"intro\n{compare.README_BEGIN}\nold table\n{compare.README_END}\nafter\n")
  compare.update_readme(section, str(readme))
  assert readme.read_text() == f"intro\n{compare.README_BEGIN}\n{section}{compare.README_END}\nafter\n"

  record["fingerprint"] = "0" * 16  # as if the method's code had changed since
  pathlib.Path(path).write_text(json.dumps(record))
  assert compare.assemble([TINY], args["runs_dir"], data_dir)[0]["stale"] == 1


def _record(run, seed, metrics, fingerprint, train_seconds=60.0):
  return {"version": records.RECORD_VERSION, "run": run.slug, "name": run.name, "table": run.table, "seed": seed,
          "fingerprint": fingerprint, "train_seconds": train_seconds, "num_steps": 8, "parameters": 1234,
          "machine": {"cpu": "cpu X", "cpu_count": 2, "backend": "cpu", "device_kind": "cpu", "device_count": 1,
                      "jax": "0.1"},
          "eval": {"metrics": metrics}}


def test_assembly_of_two_hand_made_records_is_exact_and_reproducible(tmp_path):
  """Two seeds of one SR run: mean ± sample std per column, the bicubic row from its metrics; the same
  records give byte-identical tables."""
  run = compare.Run("sr", "SRIM", compare.SR, "regression.py", "runlocal")
  missing = compare.Run("sr2", "never run", compare.SR, "regression.py", "runlocal")
  fp = records.fingerprint(compare.run_config(run, False, 0, ""))
  runs_dir = str(tmp_path / "records")
  for seed, (lpips, score) in enumerate([(0.30, 4.0), (0.32, 6.0)]):
    metrics = {"lpips_mean": lpips, "sr_diversity_score": score, "bicubic/psnr": 27.0, "bicubic/lpips": 0.35}
    records.write(_record(run, seed, metrics, fp, train_seconds=60.0 * (seed + 1)), runs_dir)
  rows = compare.assemble([run, missing], runs_dir)
  header, body = compare.table_rows(rows, compare.SR)
  col = {name: i for i, name in enumerate(header)}
  assert body[0][0] == "bicubic upsampling (baseline)"
  assert body[0][col["LPIPS mean"]] == "0.350" and body[0][col["diversity score"]] == "0.00"
  assert body[0][col["PSNR best"]] == "27.00"
  assert body[1][0] == "SRIM" and body[1][col["LPIPS mean"]] == "0.310 ± 0.014"
  assert body[1][col["diversity score"]] == "5.00 ± 1.41" and body[1][col["seeds"]] == "2"
  assert body[1][col["train time (min)"]] == "1.5 ± 0.7" and body[1][col["LR-PSNR mean"]] == "—"
  assert body[2][0] == "never run" and body[2][col["train time (min)"]] == "no record yet"
  out = [compare.write_outputs(compare.assemble([run, missing], runs_dir), "intro", str(tmp_path / d), "compare")
         for d in ("a", "b")]
  assert out[0].count("![") == 3  # no sample sheet without a toy_scenes row
  for name in ("compare.md", "compare.csv"):
    assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
  intro = compare.assembled_intro(rows, runs_dir)
  assert "from 2 records" in intro and "1 of 2 rows" in intro and "2 x cpu X" in intro


def test_the_readme_results_are_the_committed_records_assembled(tmp_path):
  """`compare.py --assemble --update_readme` on a clone reproduces the README's section byte for byte."""
  readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
  committed = readme[readme.index(compare.README_BEGIN) + len(compare.README_BEGIN) + 1:
                     readme.index(compare.README_END)]
  rows = compare.assemble(list(compare.RUNS), records.RUNS_DIR)
  section = compare.write_outputs(rows, compare.assembled_intro(rows, records.RUNS_DIR), str(tmp_path), "compare",
                                  link_dir="experiments/results")
  assert section == committed, "README's Results differ from the records: run compare.py --assemble --update_readme"


def test_readme_without_markers_is_one_clear_error(tmp_path):
  readme = tmp_path / "README.md"
  readme.write_text("no markers\n")
  with pytest.raises(ValueError, match="markers"):
    compare.update_readme("x", str(readme))
  assert os.path.exists(readme)
