"""Every file the project reads or writes, on a local disk or in a bucket (`gs://...`): one layer.

A path is a string. One with a scheme (`gs://bucket/run`) is remote and is
handed to `etils.epath` unchanged (its `gs://` backend is TensorFlow's
`tf.io.gfile` where TensorFlow is installed, as orbax, tfds and clu's
TensorBoard writers use); a local path is an ordinary one, made absolute by
`resolve`. Nothing here calls `os.path.abspath` on a URL, the bug that wrote a
run into a local folder named `gs:`.

What differs between the two:
- **atomic writes** (`write_bytes`, `write_text`): a temporary file and a
  rename on a disk; one object upload in a bucket, which Cloud Storage makes
  visible whole or not at all;
- **exclusive create** (`create_exclusive`, the workdir lock and the dataset
  build lock): `O_CREAT | O_EXCL` on a disk; on Cloud Storage an upload with
  the precondition `ifGenerationMatch=0` (JSON API), which the service
  refuses with 412 when the object exists. `STORAGE_EMULATOR_HOST` (the
  variable every Cloud Storage client library reads) points it at a local
  fake server, as in tests/test_storage_remote.py; docs/pods.md lists the
  variables for each library;
- **free space**: a bucket has no disk to fill (`free_bytes` is None).
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import shutil
import urllib.error
import urllib.parse
import urllib.request
import uuid

from multimodal_jax import errors

GCS_API = "https://storage.googleapis.com"


def _path(path: str):
  """`etils.epath.Path(path)`, imported on first use: `main` takes the workdir lock before it loads."""
  from etils import epath  # pylint: disable=g-import-not-at-top
  return epath.Path(path)


class MissingClientError(errors.UserError, ImportError):
  """A gs:// path without the Cloud Storage client that orbax needs (`pip install -e '.[gcs]'`)."""


def check_client(path: str) -> None:
  """Raises MissingClientError (one line) if `path` is in a bucket and google-cloud-storage is missing.

  orbax asks a gs:// checkpoint directory's bucket for its layout through
  google-cloud-storage; without it a run would fail deep inside orbax.
  """
  if not str(path).startswith("gs://"):
    return
  try:
    from google.cloud import storage as _  # pylint: disable=g-import-not-at-top,unused-import
  except ImportError as e:
    raise MissingClientError(f"{path}: a gs:// workdir needs the Cloud Storage client: pip install -e '.[gcs]' "
                             "(google-cloud-storage), then rerun.") from e


def is_remote(path: str) -> bool:
  """Whether `path` names an object store (`gs://...`, any `scheme://`), not a local file."""
  return "://" in str(path)


def resolve(path: str) -> str:
  """A local path made absolute; a remote one unchanged (never `os.path.abspath` on a URL)."""
  return str(path) if is_remote(path) else os.path.abspath(os.path.expanduser(str(path)))


def join(path: str, *parts: str) -> str:
  return posixpath.join(str(path), *parts) if is_remote(path) else os.path.join(str(path), *parts)


def dirname(path: str) -> str:
  return posixpath.dirname(str(path).rstrip("/")) if is_remote(path) else os.path.dirname(str(path))


def exists(path: str) -> bool:
  return _path(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
  return _path(path).is_dir() if is_remote(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
  """The names in directory `path`; [] if it does not exist."""
  if not is_remote(path):
    return sorted(os.listdir(path)) if os.path.isdir(path) else []
  p = _path(path)
  return sorted(child.name for child in p.iterdir()) if p.is_dir() else []


def makedirs(path: str) -> None:
  """Creates the directory (a bucket has none: a prefix exists once an object is under it)."""
  if is_remote(path):
    _path(path).mkdir(parents=True, exist_ok=True)
  else:
    os.makedirs(path, exist_ok=True)


def read_bytes(path: str) -> bytes:
  if is_remote(path):
    return _path(path).read_bytes()
  with open(path, "rb") as f:
    return f.read()


def read_text(path: str) -> str:
  return read_bytes(path).decode()


def write_bytes(path: str, data: bytes) -> None:
  """Writes `path` whole or not at all: a temporary file and a rename locally, one upload remotely."""
  makedirs(dirname(path))
  if is_remote(path):
    _path(path).write_bytes(data)
    return
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)  # A run killed mid-write leaves the previous file whole.


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def remove(path: str) -> None:
  """Deletes the file `path`; no error if it is already gone."""
  try:
    if is_remote(path):
      _path(path).unlink()
    else:
      os.remove(path)
  except FileNotFoundError:
    pass


def remove_tree(path: str) -> None:
  p = _path(path)
  if p.exists():
    p.rmtree()


def copy_tree(source: str, target: str, last: str | None = None) -> None:
  """Copies the files under `source` to `target`, file by file, between a disk and a bucket either way.

  `last`: a file name copied after every other in its folder (a dataset's
  dataset_info.json, tfds' mark of a prepared dataset).
  """
  makedirs(target)
  for name in sorted(listdir(source), key=lambda n: n == last):
    child = join(source, name)
    if isdir(child):
      copy_tree(child, join(target, name), last)
    else:
      write_bytes(join(target, name), read_bytes(child))


def move(source: str, target: str) -> None:
  """Moves a file or directory (remote: copied object by object, then deleted: no rename in a bucket)."""
  if not is_remote(source) and not is_remote(target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    shutil.move(source, target)
    return
  if isdir(source):
    copy_tree(source, target)
    remove_tree(source)
  else:
    write_bytes(target, read_bytes(source))
    remove(source)


def free_bytes(path: str) -> int | None:
  """Bytes free on the filesystem that holds (or would hold) `path`; None for a bucket (no disk to fill)."""
  if is_remote(path):
    return None
  existing = os.path.abspath(path)
  while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
    existing = os.path.dirname(existing)
  return shutil.disk_usage(existing).free


def create_exclusive(path: str, text: str) -> bool:
  """Creates `path` holding `text` only if nothing is there; False if something is.

  Local: `O_CREAT | O_EXCL` (a full disk removes the empty file and raises
  the OSError). Cloud Storage: an upload with `ifGenerationMatch=0`, so two
  hosts racing for the same name get one winner (`_gcs_create_if_absent`).
  """
  if not is_remote(path):
    try:
      fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
      return False
    try:
      with os.fdopen(fd, "w") as f:
        f.write(text)
    except OSError:
      os.remove(path)
      raise
    return True
  scheme, _, rest = str(path).partition("://")
  if scheme != "gs":
    raise ValueError(f"{path}: exclusive create (the workdir lock) knows local paths and gs:// only.")
  bucket, _, name = rest.partition("/")
  return _gcs_create_if_absent(bucket, name, text.encode())


def _gcs_endpoint() -> str:
  host = os.environ.get("STORAGE_EMULATOR_HOST", "")
  if not host:
    return GCS_API
  return host if "://" in host else f"http://{host}"


METADATA_TOKEN_URL = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token"


def _gcs_token() -> str | None:
  """An OAuth token for Cloud Storage; None against an emulator.

  google-auth's default credentials where it is installed (a laptop after
  `gcloud auth application-default login`), else the metadata server of the
  VM (a TPU VM's service account), as TensorFlow's GCS filesystem does.
  """
  if os.environ.get("STORAGE_EMULATOR_HOST"):
    return None
  try:
    import google.auth  # pylint: disable=g-import-not-at-top
    import google.auth.transport.requests  # pylint: disable=g-import-not-at-top
  except ImportError:
    request = urllib.request.Request(METADATA_TOKEN_URL, headers={"Metadata-Flavor": "Google"})
    try:
      with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["access_token"]
    except (OSError, ValueError, KeyError) as e:
      raise OSError(errno.EACCES, "no credentials for Cloud Storage: on a TPU VM its service account is used; "
                    "elsewhere pip install google-auth and run `gcloud auth application-default login`") from e
  credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_write"])
  credentials.refresh(google.auth.transport.requests.Request())
  return credentials.token


def _gcs_create_if_absent(bucket: str, name: str, data: bytes) -> bool:
  """One JSON-API upload with `ifGenerationMatch=0`: True if created, False if the object existed (412).

  A multipart upload (metadata, then the bytes): Cloud Storage enforces the
  precondition on every upload type; fake-gcs-server, the tests' stand-in,
  on this one.
  """
  boundary = uuid.uuid4().hex
  body = b"".join([
      f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
      json.dumps({"name": name}).encode(),
      f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
      data, f"\r\n--{boundary}--\r\n".encode()])
  query = urllib.parse.urlencode({"uploadType": "multipart", "ifGenerationMatch": "0"})
  url = f"{_gcs_endpoint()}/upload/storage/v1/b/{urllib.parse.quote(bucket, safe='')}/o?{query}"
  request = urllib.request.Request(url, data=body, method="POST",
                                   headers={"Content-Type": f"multipart/related; boundary={boundary}"})
  token = _gcs_token()
  if token:
    request.add_header("Authorization", f"Bearer {token}")
  try:
    with urllib.request.urlopen(request, timeout=60) as response:
      response.read()
    return True
  except urllib.error.HTTPError as e:
    if e.code == 412:  # Precondition failed: the object exists.
      return False
    raise OSError(errno.EIO, f"gs://{bucket}/{name}: Cloud Storage answered {e.code} {e.reason}") from e
