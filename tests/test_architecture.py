"""The package's shape: layers whose imports point down, one job per module.

The layers are listed here and in docs/ARCHITECTURE.md (checked to agree).
A module may import its own layer and the layers below it, never one above.
"""

import ast
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tfmnist"
# Top layer first: (name, paths relative to tfmnist/).
LAYERS = (
    ("commands", ("cli", "train.py", "evaluate.py", "predict.py", "make_records.py", "convert.py",
                  "serve.py")),
    ("evaluation", ("evaluation",)),
    ("serving", ("serving",)),
    ("training", ("training",)),
    ("data and models", ("data", "models")),
    ("run folder, machine, metrics", ("run_dir.py", "hardware.py", "metrics.py")),
    ("foundations", ("files.py", "progress.py", "errors.py", "__init__.py")),
)
MAX_LINES = 400


def _modules():
  return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _name(path):
  parts = path.relative_to(REPO).with_suffix("").parts
  return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _layer(path):
  relative = path.relative_to(PACKAGE).as_posix()
  for index, (_, prefixes) in enumerate(LAYERS):
    if any(relative == p or relative.startswith(p + "/") for p in prefixes):
      return index
  raise AssertionError(f"{relative} is in no layer; add it to LAYERS and docs/ARCHITECTURE.md")


_BY_NAME = {_name(p): p for p in _modules()}


def _target(module):
  """The tfmnist module file an import of `module` loads (a package: its __init__)."""
  while module and module not in _BY_NAME:
    module = module.rpartition(".")[0]
  return _BY_NAME.get(module)


def _imports(path):
  """(line, imported module) of every tfmnist import in `path`, lazy ones included."""
  tree = ast.parse(path.read_text())
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, a.name) for a in node.names if a.name.startswith("tfmnist")]
    elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("tfmnist"):
      # `from tfmnist.data import pipeline` loads tfmnist.data.pipeline.
      found += [(node.lineno, f"{node.module}.{a.name}") for a in node.names]
  return found


def test_every_module_is_in_a_layer():
  for path in _modules():
    _layer(path)


def _upward(path, imports):
  """The imports of `path` that point to a higher layer, as messages."""
  found = []
  for line, module in imports:
    target = _target(module)
    if target is not None and _layer(target) < _layer(path):
      found.append(f"{path.relative_to(REPO)}:{line} imports {module} "
                   f"({LAYERS[_layer(target)][0]} is above {LAYERS[_layer(path)][0]})")
  return found


def test_imports_point_down_only():
  upward = [message for path in _modules() for message in _upward(path, _imports(path))]
  assert not upward, "\n".join(upward)


def test_an_upward_import_would_be_caught():
  records = PACKAGE / "data" / "records.py"
  assert _upward(records, [(1, "tfmnist.training.loop")])
  assert _upward(records, [(1, "tfmnist.evaluation.report.write_report")])
  assert not _upward(records, [(1, "tfmnist.files"), (2, "tfmnist.data.pipeline")])


def test_architecture_doc_lists_the_same_layers():
  text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
  block = re.search(r"```\nlayers, top first\n(.*?)```", text, re.S)
  assert block, "docs/ARCHITECTURE.md has no 'layers, top first' block"
  documented = []
  for line in block.group(1).strip().splitlines():
    name, _, paths = line.partition(":")
    documented.append((name.strip(), tuple(paths.split())))
  assert documented == [(name, tuple(f"tfmnist/{p}" for p in prefixes))
                        for name, prefixes in LAYERS]


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_is_short_and_says_its_job(path):
  text = path.read_text()
  assert len(text.splitlines()) <= MAX_LINES, f"{path.name}: over {MAX_LINES} lines"
  assert ast.get_docstring(ast.parse(text)), f"{path.name}: no docstring saying its job"


def test_only_commands_read_flags_or_print():
  offenders = []
  for path in _modules():
    if _layer(path) == 0:
      continue
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
      if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "print":
        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} prints")
      if isinstance(node, ast.ImportFrom) and node.module == "absl" and any(
          a.name == "flags" for a in node.names):
        offenders.append(f"{path.relative_to(REPO)}:{node.lineno} imports absl.flags")
  assert not offenders, "\n".join(offenders)
