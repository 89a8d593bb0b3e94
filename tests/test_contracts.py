"""The package's structural contracts, kept by code rather than by memory (ARCHITECTURE.md, "Contracts").

Each test reads dynlearn's sources with ``ast`` and names the file and line that breaks the rule, so a change
that reintroduces a spelled-out column name, an eager heavy import or a reach into another layer's private
module fails here with the place to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dynlearn
from dynlearn import cli, data

PACKAGE = Path(dynlearn.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# ---------------------------------------------------------------- column names
# Where the id column's name may be written out, with the reason.
ID_LITERAL_ALLOWED = {
    ("dynlearn/data/_container.py", "ID_COLUMN"): "the definition that dynlearn.data exports",
    ("dynlearn/cli.py", "DEFAULT_ID_COLUMN"): "--help must answer without importing pandas (checked equal below)",
}


def _assigned_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
        return node.targets[0].id
    return None


def _id_literals(tree: ast.Module, file: str) -> list[int]:
    """Lines where ``"series_id"`` is a string constant, outside the allowed assignments."""
    allowed = {name for (allowed_file, name) in ID_LITERAL_ALLOWED if allowed_file == file}
    skipped = set()
    for node in ast.walk(tree):
        if _assigned_name(node) in allowed:
            skipped.add(id(node.value))
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value == data.ID_COLUMN and id(node) not in skipped
    )


def test_id_column_name_is_imported_not_spelled():
    found = {_relative(path): lines for path in SOURCES if (lines := _id_literals(_tree(path), _relative(path)))}
    assert not found, (
        f"The id column name {data.ID_COLUMN!r} is written out as a string at {found} (file: lines). Import "
        "ID_COLUMN (and TIME_COLUMN for the time column) from dynlearn.data instead, so that every frame "
        "dynlearn makes or reads uses the one definition."
    )


def test_id_column_scan_catches_a_spelled_name():
    # Only the allowed assignment passes; a subscript, a keyword and an f-string part are caught.
    source = 'DEFAULT_ID_COLUMN = "series_id"\nframe["series_id"]\nf(on="series_id")\nf"{frame[\'series_id\']}"\n'
    assert _id_literals(ast.parse(source), "dynlearn/cli.py") == [2, 3, 4]
    assert _id_literals(ast.parse(source), "dynlearn/metrics.py") == [1, 2, 3, 4]


def test_cli_defaults_are_the_data_layer_names():
    assert (cli.DEFAULT_ID_COLUMN, cli.DEFAULT_TIME_COLUMN) == (data.ID_COLUMN, data.TIME_COLUMN), (
        "dynlearn/cli.py spells the default column names so that --help imports nothing; they must equal "
        "dynlearn.data.ID_COLUMN and TIME_COLUMN."
    )


# ---------------------------------------------------------------- heavy imports of the numerics
# The numerics layers use torch only; pandas and scikit-learn are imported inside the functions that format
# results for users. dynlearn.exceptions subclasses scikit-learn's exceptions and importing scikit-learn
# imports pandas, so the check is on these modules' own top-level imports, not on sys.modules.
NUMERICS = ("training", "solvers", "nn")
HEAVY = ("pandas", "sklearn")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _top_level_imports(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, module) of every import run when the module is imported: not in functions or TYPE_CHECKING."""
    found = []
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            pending.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        pending.extend(ast.iter_child_nodes(node))
    return sorted(found)


def _heavy_imports(tree: ast.Module) -> list[tuple[int, str]]:
    return [(line, name) for line, name in _top_level_imports(tree) if name.split(".")[0] in HEAVY]


def test_numerics_import_neither_pandas_nor_sklearn_at_module_level():
    found = {
        _relative(path): lines
        for layer in NUMERICS
        for path in sorted((PACKAGE / layer).glob("*.py"))
        if (lines := _heavy_imports(_tree(path)))
    }
    assert not found, (
        f"{'/'.join(NUMERICS)} import {found} (file: [(line, module)]) when they are imported. These layers "
        "use torch only (ARCHITECTURE.md, Layers): import pandas or scikit-learn inside the function that "
        "needs it, with the annotation's import under `if TYPE_CHECKING:`."
    )


def test_heavy_import_scan_tells_eager_from_lazy():
    source = (
        "from typing import TYPE_CHECKING\n"
        "import pandas as pd\n"
        "if TYPE_CHECKING:\n    import sklearn\n"
        "def frame():\n    import pandas\n"
        "class History:\n    from sklearn.base import clone\n"
        "try:\n    import pandas.api\nexcept ImportError:\n    pass\n"
    )
    assert _heavy_imports(ast.parse(source)) == [(2, "pandas"), (8, "sklearn.base"), (10, "pandas.api")]
