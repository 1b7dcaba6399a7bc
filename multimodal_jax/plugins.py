"""User modules named on the command line: `--import=my_pkg.my_data` (repeatable).

A user keeps a dataset or a method in a module of their own, outside this
package, and registers it on import:

  registry.register("my_data", registry.DatasetSpec(...))        # multimodal_jax.data.registry
  base.register_method("my_method", "my_pkg.my_method")          # multimodal_jax.methods.base

`main`, `evaluate` and `sample` import the `--import` modules before the config
is validated or the run is loaded (docs/extending.md). The names imported are
kept (`imported()`) and written to the run's run_info.json, so that `evaluate`
and `sample` import them again on that workdir without repeating the flag.
"""

from __future__ import annotations

import importlib
import sys
from typing import Iterable, NoReturn

from absl import flags

IMPORT_FLAG = "import"  # A Python keyword: read it as flags.FLAGS["import"].value.

_imported: list[str] = []


def define_import_flag() -> None:
  """Defines the repeatable `--import=MODULE` flag (once, whichever CLI asks first)."""
  if IMPORT_FLAG not in flags.FLAGS:
    flags.DEFINE_multi_string(
        IMPORT_FLAG, [], "A Python module to import first (repeatable), e.g. one that registers a "
        "dataset or a method; it must be importable (its directory on PYTHONPATH or the current one).")


def import_modules(names: Iterable[str], origin: str = "--import") -> None:
  """Imports each module in order, and remembers its name for `imported()`.

  Args:
    names: dotted module names.
    origin: where the names come from, for the error message.

  Raises:
    ImportError: one line naming the module that failed, chained to the original error.
  """
  for name in names:
    if name.endswith(".py") or "/" in name:
      raise ImportError(f"{origin}={name}: give a module name (e.g. my_data or my_pkg.my_data), not a file "
                        "path; put its directory on PYTHONPATH.")
    try:
      importlib.import_module(name)
    except Exception as e:  # pylint: disable=broad-except
      # A module's import can fail in any way (a missing dependency, a name registered twice...).
      reason = (str(e).splitlines() or [""])[0]
      missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
      # The module itself (or its package) is missing, not one of its dependencies.
      is_missing = bool(missing) and (name == missing or name.startswith(missing + "."))
      hint = "; is its directory on PYTHONPATH?" if is_missing else ""
      raise ImportError(f"Could not import {name!r} ({origin}): {type(e).__name__}: {reason}{hint}") from e
    if name not in _imported:
      _imported.append(name)


def imported() -> list[str]:
  """The modules imported so far through `import_modules`, in order (recorded in run_info.json)."""
  return list(_imported)


def fail(message: str) -> NoReturn:
  """A config, usage or workdir error of a CLI (`main`, `evaluate`, `sample`): one `error:` line, exit 2."""
  sys.stderr.write(f"error: {message}\n")
  sys.exit(2)


def parse_cli_flags(argv: list[str]) -> list[str]:
  """absl flag parsing for the CLIs: a flag error is one `error:` line (exit 2), logging is at WARNING.

  absl turns INFO logging on after parsing unless --verbosity was given, and
  absl/orbax/JAX INFO lines would bury the CLI's own output (`--verbosity=0`
  brings them back). `main.parse_flags` adds its config-key errors.
  """
  try:
    rest = flags.FLAGS(argv)
  except flags.Error as e:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    fail(" ".join(dict.fromkeys(lines[:1] + lines[-1:])))
  if flags.FLAGS["verbosity"].using_default_value:
    flags.FLAGS.verbosity = -1  # absl's WARNING; marks the flag as set, so absl keeps it.
  return rest
