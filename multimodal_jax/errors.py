"""What is the user's to fix: `UserError`, and whether a file is the user's code (`is_user_file`).

A bad `--import` module, a workdir that another run holds, a full disk, a bad
argument: the command-line programs (multimodal_jax/cli.py) print such an
error as one line, `error: <message>`, and exit with status 2. So does an
exception raised in the user's own code (a config file, an `--import`ed
module), named by its file and line (`innermost_user_frame`). A leaf module:
every layer may use it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import traceback

PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
# The checkout holding the package (configs/, experiments/), when it is installed in place.
PROJECT_ROOT = os.path.dirname(PACKAGE_DIR)

_LIBRARY_DIRS = tuple(sorted({os.path.realpath(p) for key in ("stdlib", "platstdlib", "purelib", "platlib")
                              if (p := sysconfig.get_paths().get(key))} | {os.path.realpath(sys.prefix)}))
# The project's own code outside the package: an exception there is a bug, with its traceback.
_PROJECT_CODE_DIRS = (PACKAGE_DIR, os.path.join(PROJECT_ROOT, "experiments"))


class UserError(Exception):
  """An error the user can fix; its message is one line naming the file, flag or key, and what to do."""


def is_user_file(filename: str) -> bool:
  """Whether `filename` is the user's code: a real file outside this package, the experiments and the libraries.

  The project's configs/ are the user's: a user edits them.
  """
  if not filename or filename.startswith("<") or not os.path.isfile(filename):
    return False
  path = os.path.realpath(filename)
  return not any(path == d or path.startswith(d.rstrip(os.sep) + os.sep)
                 for d in _PROJECT_CODE_DIRS + _LIBRARY_DIRS)


def innermost_user_frame(error: BaseException) -> traceback.FrameSummary | None:
  """The innermost frame of `error`'s traceback in the user's code (`is_user_file`), if any."""
  frames = [f for f in traceback.extract_tb(error.__traceback__) if is_user_file(f.filename)]
  return frames[-1] if frames else None
