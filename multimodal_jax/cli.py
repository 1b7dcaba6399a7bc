"""What the command-line programs share (`main`, `evaluate`, `sample`): entry, flag parsing, errors, --import.

  * `run(main)`: a program's entry. It sets the process up first
    (`set_up_process`: the JAX workarounds, multimodal_jax/jax_workarounds.py),
    then hands over to absl's `app.run`. Importing `multimodal_jax` changes
    nothing in JAX; a program does, explicitly, here.
  * `parse_cli_flags`: absl's parsing, a flag error as one `error:` line.
  * `fail`: a config, usage or workdir error as one `error:` line, exit 2.
  * `--import=MODULE` (repeatable, `define_import_flag`, `import_flagged_modules`):
    user modules that register a dataset or a method (multimodal_jax/plugins.py).
"""

from __future__ import annotations

import sys
from typing import Callable, NoReturn

from absl import app
from absl import flags

from multimodal_jax import jax_workarounds
from multimodal_jax import plugins

IMPORT_FLAG = "import"  # A Python keyword: read it as flags.FLAGS["import"].value.


def set_up_process() -> None:
  """The process-wide set-up every program does before anything else: the JAX workarounds."""
  jax_workarounds.install()


def run(main: Callable[[list[str]], None],
        flags_parser: Callable[[list[str]], list[str]] | None = None) -> None:
  """A program's entry point: `set_up_process()`, then absl's `app.run(main)` with `parse_cli_flags`."""
  set_up_process()
  app.run(main, flags_parser=flags_parser or parse_cli_flags)


def define_import_flag() -> None:
  """Defines the repeatable `--import=MODULE` flag (once, whichever CLI asks first)."""
  if IMPORT_FLAG not in flags.FLAGS:
    flags.DEFINE_multi_string(
        IMPORT_FLAG, [], "A Python module to import first (repeatable), e.g. one that registers a "
        "dataset or a method; it must be importable (its directory on PYTHONPATH or the current one).")


def import_flagged_modules() -> None:
  """Imports the `--import` modules, in order (`plugins.import_modules`)."""
  plugins.import_modules(flags.FLAGS[IMPORT_FLAG].value)


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
