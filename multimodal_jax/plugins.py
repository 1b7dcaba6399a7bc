"""User modules named on the command line: `--import=my_pkg.my_data` (repeatable).

A user keeps a dataset or a method in a module of their own, outside this
package, and registers it on import:

  registry.register("my_data", registry.DatasetSpec(...))        # multimodal_jax.data.registry
  base.register_method("my_method", "my_pkg.my_method")          # multimodal_jax.methods.base

`main`, `evaluate` and `sample` import the `--import` modules before the config
is validated or the run is loaded (docs/extending.md; the flag itself is
defined in multimodal_jax/cli.py). The names imported are kept (`imported()`)
and written to the run's run_info.json, so that `evaluate` and `sample` import
them again on that workdir without repeating the flag.
"""

from __future__ import annotations

import importlib
from typing import Iterable

from multimodal_jax import errors

_imported: list[str] = []


class PluginImportError(errors.UserError, ImportError):
  """A module named by `--import` (or recorded in run_info.json) does not import; the message is one line."""


def import_modules(names: Iterable[str], origin: str = "--import") -> None:
  """Imports each module in order, and remembers its name for `imported()`.

  Args:
    names: dotted module names.
    origin: where the names come from, for the error message.

  Raises:
    PluginImportError: one line naming the module that failed (and where, when its own code
      raised), chained to the original error.
  """
  for name in names:
    if name.endswith(".py") or "/" in name:
      raise PluginImportError(f"{origin}={name}: give a module name (e.g. my_data or my_pkg.my_data), not a "
                              "file path; put its directory on PYTHONPATH.")
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except
      # A module's import can fail in any way (a missing dependency, a name registered twice...).
      reason = (str(e).splitlines() or [""])[0]
      missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
      # The module itself (or its package) is missing, not one of its dependencies.
      is_missing = bool(missing) and (name == missing or name.startswith(missing + "."))
      hint = "; is its directory on PYTHONPATH?" if is_missing else ""
      # The line of the user's code that raised (none when the module itself is missing).
      frame = errors.innermost_user_frame(e)
      where = f" ({frame.filename}:{frame.lineno})" if frame else ""
      raise PluginImportError(
          f"Could not import {name!r} ({origin}): {type(e).__name__}: {reason}{where}{hint}") from e
    if name not in _imported:
      _imported.append(name)


def imported() -> list[str]:
  """The modules imported so far through `import_modules`, in order (recorded in run_info.json)."""
  return list(_imported)
