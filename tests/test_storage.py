"""multimodal_jax/storage.py on a local disk: the layer every read and write of a run goes through.

Against a fake Cloud Storage server (gs:// workdirs, data dirs, the lock):
tests/test_storage_remote.py.
"""

import os

import pytest

from multimodal_jax import storage


def test_a_url_is_never_made_absolute_and_a_local_path_always_is(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert storage.resolve("gs://bucket/run") == "gs://bucket/run"  # Not <cwd>/gs:/bucket/run.
  assert storage.resolve("run") == str(tmp_path / "run")
  assert storage.resolve("~/x") == os.path.join(os.path.expanduser("~"), "x")
  assert storage.join("gs://bucket/run", "checkpoints", "3") == "gs://bucket/run/checkpoints/3"
  assert storage.dirname("gs://bucket/run/checkpoints/") == "gs://bucket/run"
  assert storage.is_remote("gs://b/x") and not storage.is_remote(str(tmp_path))
  assert storage.free_bytes("gs://bucket/run") is None and storage.free_bytes(str(tmp_path / "new" / "dir")) > 0


def test_writes_are_whole_and_leave_no_temporary_file(tmp_path):
  path = str(tmp_path / "a" / "b.json")
  storage.write_text(path, "one")
  storage.write_text(path, "two")
  assert storage.read_text(path) == "two" and os.listdir(tmp_path / "a") == ["b.json"]
  storage.write_bytes(path, b"\x00\x01")
  assert storage.read_bytes(path) == b"\x00\x01"
  assert storage.listdir(str(tmp_path / "a")) == ["b.json"] and storage.listdir(str(tmp_path / "none")) == []


def test_create_exclusive_has_one_winner_and_keeps_the_first_content(tmp_path):
  path = str(tmp_path / ".lock")
  assert storage.create_exclusive(path, "first")
  assert not storage.create_exclusive(path, "second")
  assert storage.read_text(path) == "first"
  storage.remove(path)
  storage.remove(path)  # Already gone: no error.
  assert storage.create_exclusive(path, "third") and storage.read_text(path) == "third"


def test_move_takes_a_directory_whole(tmp_path):
  source = tmp_path / "checkpoints" / "7"
  (source / "state").mkdir(parents=True)
  (source / "state" / "x").write_text("x")
  (source / "meta").write_text("m")
  target = str(tmp_path / "checkpoints_corrupt" / "7-now")
  storage.move(str(source), target)
  assert not source.exists()
  assert sorted(os.listdir(target)) == ["meta", "state"] and open(os.path.join(target, "state", "x")).read() == "x"


def test_exclusive_create_refuses_a_scheme_it_cannot_lock():
  with pytest.raises(ValueError, match="local paths and gs:// only"):
    storage.create_exclusive("s3://bucket/.lock", "x")


def test_a_bucket_without_the_cloud_storage_client_is_one_line(monkeypatch):
  import sys  # pylint: disable=g-import-not-at-top
  monkeypatch.setitem(sys.modules, "google.cloud.storage", None)  # as if not installed
  with pytest.raises(storage.MissingClientError, match=r"gs://b/run: a gs:// workdir needs the Cloud Storage "
                                                       r"client: pip install -e '\.\[gcs\]'"):
    storage.check_client("gs://b/run")
  storage.check_client("/tmp/run")  # a local path needs nothing
