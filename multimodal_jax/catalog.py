"""What can be run, for `python -m multimodal_jax.main --list`: configs, methods, models, datasets.

Each entry has its one-line description: a config file's (configs/*.py) and
a registered module's docstring opens with it. The configs' `VARIANTS`
(every `:arg` the file is meant to run with) are read from the file. Nothing
is imported to describe an entry (the files are parsed), so listing is quick
and a broken entry shows up as such instead of stopping the list. Names that
`--import`ed modules registered are listed too.
"""

from __future__ import annotations

import ast
import glob
import importlib.util
import os
import re

from multimodal_jax import errors
from multimodal_jax.data import registry as data_registry
from multimodal_jax.evaluation import evaluators
from multimodal_jax.methods import base as methods_base
from multimodal_jax.models import registry as models_registry

CONFIGS_DIR = os.path.join(errors.PROJECT_ROOT, "configs")


def _first_line(docstring: str | None) -> str:
  """A docstring's first line, without a leading "`name`: " (the module's own name)."""
  lines = (docstring or "").strip().splitlines()
  return re.sub(r"^`[\w.]+`:\s*", "", lines[0].strip()) if lines else ""


def _parse(path: str) -> ast.Module | None:
  try:
    with open(path) as f:
      return ast.parse(f.read(), filename=path)
  except (OSError, SyntaxError, ValueError):
    return None


def _module_tree(module: str) -> ast.Module | None:
  try:
    spec = importlib.util.find_spec(module)
  except (ImportError, ValueError):
    spec = None
  return _parse(spec.origin) if spec and spec.origin and spec.origin.endswith(".py") else None


def _module_line(module: str) -> str:
  """The first docstring line of a module, found without importing it."""
  tree = _module_tree(module)
  return _first_line(ast.get_docstring(tree)) if tree else "(cannot be read)"


def _dataset_line(target: str) -> str:
  """The first docstring line of the builder class of the DatasetSpec "module:NAME" names.

  A module defines several (toy_scenes' variants): the module's own first line is the fallback. A
  spec without a builder is read from the TFDS catalogue.
  """
  module, _, name = target.partition(":")
  tree = _module_tree(module)
  if tree is None:
    return "(cannot be read)"
  definitions = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
  for node in tree.body:
    if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets)
        and isinstance(node.value, ast.Call)):
      keywords = {k.arg: k.value for k in node.value.keywords}
      builder = keywords.get("builder_cls")
      if isinstance(builder, ast.Name) and builder.id in definitions and ast.get_docstring(definitions[builder.id]):
        return _first_line(ast.get_docstring(definitions[builder.id]))
      if isinstance(builder, ast.Constant) and builder.value is None and isinstance(keywords.get("tfds_name"),
                                                                                    ast.Constant):
        return f"'{keywords['tfds_name'].value}' from the TFDS catalogue; {_first_line(ast.get_docstring(tree))}"
  return _first_line(ast.get_docstring(tree))


def config_entries(directory: str = CONFIGS_DIR) -> list[tuple[str, str, list[str]]]:
  """(file name, description, variants) of every config file in `directory`."""
  out = []
  for path in sorted(glob.glob(os.path.join(directory, "*.py"))):
    tree = _parse(path)
    if tree is None:
      out.append((os.path.basename(path), "(does not parse)", []))
      continue
    variants = []
    for node in tree.body:
      if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "VARIANTS" for t in node.targets):
        try:
          variants = [str(v) for v in ast.literal_eval(node.value)]
        except ValueError:
          variants = ["(not a literal list)"]
    out.append((os.path.basename(path), _first_line(ast.get_docstring(tree)), variants))
  return out


def _table(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
  width = max((len(name) for name, _ in rows), default=0)
  return [f"{indent}{name:<{width}}  {text}".rstrip() for name, text in rows]


def describe() -> str:
  """The text `main --list` prints."""
  lines = []
  configs = config_entries()
  lines.append(f"Configs ({CONFIGS_DIR}; run one with `python -m multimodal_jax.main "
               "--config=configs/NAME.py[:VARIANT] --workdir=DIR`):")
  if not configs:
    lines.append("  (none: the configs/ folder is in the project's checkout)")
  width = max((len(name) for name, _, _ in configs), default=0)
  for name, text, variants in configs:
    shown = ", ".join(v or "(default)" for v in variants) if variants else "(no VARIANTS list)"
    lines += [f"  {name:<{width}}  {text}", f"  {'':<{width}}  variants: {shown}"]
  lines.append("Methods (config.method):")
  lines += _table([(name, _module_line(module)) for name, module in sorted(methods_base.METHODS.items())])
  lines.append("Models (config.model.name; kind):")
  lines += _table([(name, f"{kind}: {_module_line(target.partition(':')[0])}")
                   for name, (target, kind) in sorted(models_registry.MODELS.items())])
  lines.append("Datasets (config.data.name):")
  rows = []
  for name in data_registry.dataset_names():
    if name in data_registry.DATASETS:
      rows.append((name, _dataset_line(data_registry.DATASETS[name])))
    else:  # Registered by an --import module (get_dataset imports nothing for it).
      module = getattr(data_registry.get_dataset(name).builder_cls, "__module__", None) or "an --import module"
      rows.append((name, f"registered by {module}"))
  lines += _table(rows)
  lines.append("Evaluators (config.evals; `evaluate --evals=a,b`): " + ", ".join(sorted(evaluators.EVALUATORS)))
  lines.append("Details: docs/extending.md (adding your own), docs/evaluation.md (the evaluators).")
  return "\n".join(lines)
