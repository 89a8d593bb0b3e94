"""The package's structural contracts, kept by code rather than by memory (ARCHITECTURE.md, "Contracts").

Each test reads dynlearn's sources with ``ast`` and names the file and line that breaks the rule, so a change
that reintroduces a spelled-out column name, an eager heavy import or a reach into another layer's private
module fails here with the place to fix.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

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


# ---------------------------------------------------------------- layer boundaries
# A subpackage's private modules (``dynlearn/<package>/_<module>.py``) are its own; other modules use the names
# its ``__init__`` exports. The top-level private modules (``_compat``, ``_backtest``, ...) are shared by design.
# Each remaining exception: (importing file, private module) -> why.
PRIVATE_IMPORTS_ALLOWED = {
    ("dynlearn/_auto.py", "dynlearn.estimators._base"): (
        "LastValueForecaster and SeasonalNaiveForecaster are models built on the SeriesModel skeleton; "
        "dynlearn.estimators.__all__ is the model loader's allowlist of concrete estimators, so the skeleton "
        "is not exported there"
    ),
    ("dynlearn/_auto.py", "dynlearn.estimators._base._check_every_feature_observed"): (
        "the naive forecasters refuse a variable never observed with the same check and message as every "
        "estimator, rather than forecasting it as 0"
    ),
    ("dynlearn/_auto.py", "dynlearn.estimators._intervals"): (
        "the same skeleton: ConformalIntervals and its attributes, for the naive forecasters and for "
        "calibrating a winner from its backtest residuals"
    ),
    ("dynlearn/nn/_energy_loss.py", "dynlearn.solvers._rk_mlp"): (
        "the same layout rule (input_gradient_factor) for the Hamiltonian's written-out gradient sweep"
    ),
    ("dynlearn/nn/_odernn_fused.py", "dynlearn.solvers._rk_mlp"): (
        "the layouts of the written-out backward passes' products (input_gradient_factor, weight_gradient): "
        "one rule for every hand-written backward, and no name for users"
    ),
    ("dynlearn/nn/_moment_loss.py", "dynlearn.solvers._rk_mlp"): (
        "the same layout rule (weight_gradient) and inference-mode switch (untracked) as every written-out backward"
    ),
    ("dynlearn/estimators/_neural_sde.py", "dynlearn.nn._moment_loss"): (
        "NeuralSDE's training loss as one autograd node: it computes what that estimator's private model records, "
        "so it has no name for users"
    ),
    ("dynlearn/cli.py", "dynlearn.estimators._base"): (
        "an unpickled object is accepted only if it is a SeriesModel, the base of every estimator"
    ),
}

# The benchmark scripts (benchmarks/, beside the package in a checkout) use dynlearn's public names too.
BENCHMARKS_DIR = PACKAGE.parent / "benchmarks"
BENCHMARK_PRIVATE_IMPORTS_ALLOWED = {
    ("benchmarks/physics.py", "dynlearn.datasets._physical"): (
        "the energies and fields of the generated systems, evaluated at rollout states the simulators never "
        "produced; the datasets export the generators, whose truth holds these only at simulated states"
    ),
    ("benchmarks/fixed_steps_written_out.py", "dynlearn.solvers._ode"): (
        "switches the written-out fixed steps off to time the segment clock on the same fit; no user needs that switch"
    ),
    ("benchmarks/neural_sde_loss_node.py", "dynlearn.estimators._neural_sde"): (
        "switches NeuralSDE's loss node off to time the recorded loss on the same steps; no user needs that switch"
    ),
    ("benchmarks/odernn_loop_before_after.py", "dynlearn.nn._odernn"): (
        "points the encoder at an earlier version of its Euler-GRU loop to time the two on the same fit"
    ),
    ("benchmarks/odernn_loop_before_after.py", "dynlearn.nn._odernn_fused"): (
        "the Euler-GRU loop whose versions it times against each other; no user calls it directly"
    ),
}


def _module_name(path: Path) -> list[str]:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def _package_of(path: Path) -> list[str]:
    return _module_name(path) if path.name == "__init__.py" else _module_name(path)[:-1]


def _imported_modules(tree: ast.Module, path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) for every dynlearn module ``path`` imports, including submodules named in ``from``."""
    package = _package_of(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + (node.module.split(".") if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            # ``from ..solvers import _ode`` imports the module dynlearn.solvers._ode.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names if alias.name.startswith("_")]
    return [(line, module) for line, module in found if module.split(".")[0] == "dynlearn"]


def _private_module_of_another_package(importer: Path, module: str) -> bool:
    parts = module.split(".")
    for depth in range(2, len(parts)):  # parts[:depth] is dynlearn.<subpackage>..., parts[depth] inside it
        package, name = parts[:depth], parts[depth]
        is_subpackage = (PACKAGE.parent.joinpath(*package) / "__init__.py").is_file()
        if is_subpackage and name.startswith("_") and not name.startswith("__"):
            return _package_of(importer)[:depth] != package
    return False


def _cross_package_private_imports() -> dict[tuple[str, str], list[int]]:
    found: dict[tuple[str, str], list[int]] = {}
    for path in SOURCES:
        for line, module in _imported_modules(_tree(path), path):
            if _private_module_of_another_package(path, module):
                found.setdefault((_relative(path), module), []).append(line)
    return found


def test_no_module_imports_another_packages_private_module():
    found = _cross_package_private_imports()
    unexpected = {key: lines for key, lines in found.items() if key not in PRIVATE_IMPORTS_ALLOWED}
    assert not unexpected, (
        f"{unexpected} ((file, private module): lines) reach into another subpackage's private module. "
        "Import the name from the subpackage itself, exporting it from its __init__ and __all__ (and "
        "docs/api.rst) if it is part of that layer's API, or move the code to the layer that uses it. A "
        "reach that cannot be avoided goes into PRIVATE_IMPORTS_ALLOWED with its reason."
    )
    stale = set(PRIVATE_IMPORTS_ALLOWED) - set(found)
    assert not stale, f"PRIVATE_IMPORTS_ALLOWED lists {sorted(stale)}, which no longer happen; remove them."


def test_benchmarks_import_no_private_dynlearn_module():
    if not BENCHMARKS_DIR.is_dir():
        pytest.skip("benchmarks/ is part of a checkout, not of an installed package")
    found: dict[tuple[str, str], list[int]] = {}
    for path in sorted(BENCHMARKS_DIR.glob("*.py")):
        for line, module in _imported_modules(_tree(path), path):
            if _private_module_of_another_package(path, module):
                parts = module.split(".")
                private = next(i for i in range(2, len(parts)) if parts[i].startswith("_"))
                lines = found.setdefault((_relative(path), ".".join(parts[: private + 1])), [])
                lines += [] if line in lines else [line]
    unexpected = {key: lines for key, lines in found.items() if key not in BENCHMARK_PRIVATE_IMPORTS_ALLOWED}
    assert not unexpected, (
        f"{unexpected} ((file, private module): lines): benchmarks reach into dynlearn's private modules. Use "
        "the public hooks (dynlearn.solvers.count_evaluations, dynlearn.training.Callback.on_batch_end and "
        "train_step, an estimator's module_), export the name, or list the reach in "
        "BENCHMARK_PRIVATE_IMPORTS_ALLOWED with its reason."
    )
    stale = set(BENCHMARK_PRIVATE_IMPORTS_ALLOWED) - set(found)
    assert not stale, f"BENCHMARK_PRIVATE_IMPORTS_ALLOWED lists {sorted(stale)}, which no longer happen; remove them."


def test_private_import_scan_resolves_relative_forms():
    estimator = PACKAGE / "estimators" / "_example.py"
    source = (
        "from ..nn._odernn import _step\n"  # a private module of another subpackage
        "from ..solvers import _ode\n"  # the same, named in the import list
        "from ..nn import make_mlp\n"  # a public name
        "from ._base import SeriesModel\n"  # its own subpackage
        "from .._compat import Interval\n"  # a top-level private module, shared by design
        "import dynlearn.data._output\n"  # the absolute form
    )
    flagged = [
        (line, module)
        for line, module in _imported_modules(ast.parse(source), estimator)
        if _private_module_of_another_package(estimator, module)
    ]
    assert flagged == [
        (1, "dynlearn.nn._odernn"), (1, "dynlearn.nn._odernn._step"), (2, "dynlearn.solvers._ode"),
        (6, "dynlearn.data._output"),
    ]
