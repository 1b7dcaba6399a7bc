"""Routes TensorFlow's Cloud Storage traffic to a local fake server: run as a process by tests/fake_gcs.py.

TensorFlow's GCS filesystem (`tf.io.gfile`, hence etils.epath, orbax's
metadata, clu's TensorBoard writers and tfds) talks to the hard-coded
https://www.googleapis.com and https://storage.googleapis.com; it has no
emulator variable. Its libcurl honours `https_proxy` and `CURL_CA_BUNDLE`, so
this is a CONNECT proxy for those hosts only: it ends TLS with a throw-away CA
(made with the `openssl` command) and passes the HTTP/1.1 bytes to the plain
HTTP fake server, fixing three differences on the way (`_Rewrite`).

A process of its own: a proxy thread inside the test process deadlocks when
TensorFlow makes its HTTP calls holding the GIL. It prints {"port", "ca"} as
one JSON line and exits when its stdin closes (its parent has gone).

Usage: python fake_gcs_proxy.py TARGET_HOST TARGET_PORT
"""

import json
import os
import select
import socket
import ssl
import subprocess
import sys
import tempfile
import threading

HOSTS = ("www.googleapis.com", "storage.googleapis.com", "oauth2.googleapis.com")


def make_certificates(directory: str) -> tuple[str, str, str]:
  """(CA certificate, leaf certificate, leaf key) for HOSTS, with the openssl command."""
  ca_key, ca, key, csr, leaf, ext = (os.path.join(directory, n) for n in
                                     ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.pem", "ext.cnf"))
  ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

  def run(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)

  run("req", "-x509", *ec, "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=fake-gcs-test-ca",
      "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
  run("req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={HOSTS[0]}")
  with open(ext, "w") as f:
    f.write("subjectAltName=" + ",".join(f"DNS:{h}" for h in HOSTS)
            + "\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n")
  run("x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", leaf, "-days", "2",
      "-extfile", ext)
  return ca, leaf, key


def _storage_layout(request: bytes) -> bytes | None:
  """TF asks for a bucket's storageLayout before renaming a directory; fake-gcs-server has no such route."""
  first_line = request.split(b"\r\n", 1)[0]
  if not (request.startswith(b"GET /storage/v1/b/") and b"/storageLayout" in first_line):
    return None
  bucket = request.split(b"/storage/v1/b/", 1)[1].split(b"/", 1)[0]
  body = (b'{"kind":"storage#storageLayout","bucket":"' + bucket + b'","location":"US-CENTRAL1",'
          b'"locationType":"region","hierarchicalNamespace":{"enabled":false}}')
  return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode()
          + b"\r\n\r\n" + body)


def _pipe(client: ssl.SSLSocket, server: socket.socket) -> None:
  """Copies bytes both ways until either side closes, with `_storage_layout` and two header fixes."""
  sockets = [client, server]
  try:
    while True:
      readable, _, _ = select.select(sockets, [], [], 60)
      if not readable:
        return
      for s in readable:
        data = s.recv(65536)
        while isinstance(s, ssl.SSLSocket) and s.pending():  # decrypted bytes buffered in the TLS layer
          data += s.recv(s.pending())
        if not data:
          return
        if s is client:
          answer = _storage_layout(data)
          if answer is not None:
            client.sendall(answer)
            continue
          # TF sends `Transfer-Encoding: identity` on empty POSTs; Go's net/http answers 501.
          server.sendall(data.replace(b"\r\nTransfer-Encoding: identity\r\n", b"\r\n"))
        else:
          # The server builds resumable-upload URLs as http://; curl must come back through the proxy.
          client.sendall(data.replace(b"\r\nLocation: http://", b"\r\nLocation: https://"))
  except (OSError, ssl.SSLError):
    return
  finally:
    for s in sockets:
      try:
        s.close()
      except OSError:
        pass


def _handle(connection: socket.socket, context: ssl.SSLContext, target: tuple[str, int]) -> None:
  try:
    request = b""
    while b"\r\n\r\n" not in request:
      chunk = connection.recv(4096)
      if not chunk:
        connection.close()
        return
      request += chunk
    method, host_port, _ = request.split(b"\r\n", 1)[0].decode().split(" ", 2)
    if method != "CONNECT" or host_port.split(":")[0] not in HOSTS:
      connection.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
      connection.close()
      return
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # else ~40 ms a request
    connection.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
    client = context.wrap_socket(connection, server_side=True)
    server = socket.create_connection(target)
    server.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    _pipe(client, server)
  except Exception:  # pylint: disable=broad-except  # one failed connection, not the proxy
    connection.close()


def main(target_host: str, target_port: int) -> None:
  ca, leaf, key = make_certificates(tempfile.mkdtemp(prefix="fake_gcs_tls_"))
  context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
  context.load_cert_chain(leaf, key)
  context.set_alpn_protocols(["http/1.1"])
  listener = socket.socket()
  listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  listener.bind(("127.0.0.1", 0))
  listener.listen(64)

  def accept():
    while True:
      connection, _ = listener.accept()
      threading.Thread(target=_handle, args=(connection, context, (target_host, target_port)),
                       daemon=True).start()

  threading.Thread(target=accept, daemon=True).start()
  print(json.dumps({"port": listener.getsockname()[1], "ca": ca}), flush=True)
  sys.stdin.read()  # Returns when the parent closes our stdin or exits: no orphan proxies.


if __name__ == "__main__":
  main(sys.argv[1], int(sys.argv[2]))
