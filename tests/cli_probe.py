"""Runs command-line programs as a user would, many per Python start-up: `python tests/cli_probe.py SPEC OUT`.

Each program (`python -m multimodal_jax.main ARGS`, `evaluate`, `sample`)
runs in a process of its own: a child forked from this one after it has
imported JAX, TensorFlow, orbax and the package (~10 s on a 2-core CPU), so
a probe costs its own work only. The child runs the module as `__main__`
(`runpy`, as `python -m` does) with its argv, working directory and
environment, its stdout and stderr in files, and exits with the program's
status. Before the program, the child may run a `prelude` (Python source):
a test's patch (a disk that fills up, a Ctrl-C at a given moment).

SPEC (json): a list of {"name", "module", "argv", "cwd", "env", "prelude",
"timeout"}; probes run in order, so one may use what an earlier one wrote.
OUT (json): {name: {"status", "stdout", "stderr", "seconds"}}; status is the
exit status, or -N for a signal N.
"""

import json
import os
import runpy
import signal
import sys
import time
import traceback

# What the programs import: loaded once, here, before any child is forked. JAX starts no backend
# on import (a backend's threads would not survive a fork); each child starts its own.
import jax  # noqa: F401  pylint: disable=unused-import
import orbax.checkpoint  # noqa: F401  pylint: disable=unused-import
import tensorflow_datasets  # noqa: F401  pylint: disable=unused-import
from clu import metric_writers  # noqa: F401  pylint: disable=unused-import

from multimodal_jax import catalog  # noqa: F401  pylint: disable=unused-import
from multimodal_jax import evaluate  # noqa: F401  pylint: disable=unused-import  (defines flags only as __main__)
from multimodal_jax import sample  # noqa: F401  pylint: disable=unused-import
from multimodal_jax import train  # noqa: F401  pylint: disable=unused-import
# Not multimodal_jax.main: it defines its flags on import, and the child runs it as __main__.


def _child(probe: dict, out_path: str, err_path: str) -> None:
  """In the forked child: the program's process. Never returns."""
  status = 1
  try:
    os.chdir(probe.get("cwd") or os.getcwd())
    os.environ.update(probe.get("env") or {})
    # As `python -m` does: the working directory, then $PYTHONPATH, lead sys.path.
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    sys.path[:0] = [os.getcwd()] + extra
    for fd, path in ((1, out_path), (2, err_path)):
      target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
      os.dup2(target, fd)
      os.close(target)
    # A fresh interpreter on a terminal: Ctrl-C raises KeyboardInterrupt (pytest may ignore SIGINT).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    module = probe["module"]
    sys.argv = [module.replace(".", "/") + ".py", *probe.get("argv", [])]
    sys.modules.pop(module, None)  # Imported above as a library; `python -m` runs a fresh copy as __main__.
    try:
      if probe.get("prelude"):
        prelude = compile(probe["prelude"], f"<prelude of {probe['name']}>", "exec")
        exec(prelude, {"__name__": "prelude"})  # pylint: disable=exec-used
      runpy.run_module(module, run_name="__main__", alter_sys=True)
      status = 0
    except SystemExit as e:
      status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
      if not isinstance(e.code, (int, type(None))):
        sys.stderr.write(f"{e.code}\n")
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()  # As the interpreter would, for an uncaught exception.
      status = 1
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # pylint: disable=protected-access


def run(probes: list[dict], workdir: str) -> dict:
  results = {}
  for i, probe in enumerate(probes):
    out_path, err_path = os.path.join(workdir, f"{i}.out"), os.path.join(workdir, f"{i}.err")
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:
      _child(probe, out_path, err_path)
    deadline = start + probe.get("timeout", 300)
    while True:
      done, wait_status = os.waitpid(pid, os.WNOHANG)
      if done:
        break
      if time.monotonic() > deadline:
        os.kill(pid, signal.SIGKILL)
        _, wait_status = os.waitpid(pid, 0)
        break
      time.sleep(0.05)
    with open(out_path) as f_out, open(err_path) as f_err:
      results[probe["name"]] = {"status": os.waitstatus_to_exitcode(wait_status), "stdout": f_out.read(),
                                "stderr": f_err.read(), "seconds": time.monotonic() - start}
  return results


if __name__ == "__main__":
  spec_path, result_path = sys.argv[1:3]
  with open(spec_path) as f:
    spec = json.load(f)
  with open(result_path, "w") as f:
    json.dump(run(spec, os.path.dirname(os.path.abspath(result_path))), f)
