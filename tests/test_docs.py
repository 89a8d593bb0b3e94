"""The API reference lists every public name, and the tutorials gallery shows every tutorial."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

import dynlearn

API = Path(__file__).resolve().parents[1] / "docs" / "api.rst"
SUBPACKAGES = [
    "datasets",
    "metrics",
    "model_selection",
    "preprocessing",
    "plotting",
    "exceptions",
    "training",
    "data",
    "solvers",
    "nn",
]


def _documented_by_module() -> dict[str, set[str]]:
    """Names api.rst documents or links to, per ``.. module::`` section."""
    sections = re.split(r"^\.\. module:: (\S+)\n", API.read_text(), flags=re.MULTILINE)
    documented = {}
    for module, body in zip(sections[1::2], sections[2::2]):
        names = set(re.findall(r"^   (\w+)$", body, flags=re.MULTILINE))  # autosummary entries
        names |= set(re.findall(r"^\.\. data:: (\w+)$", body, flags=re.MULTILINE))
        names |= set(re.findall(r":class:`dynlearn\.(\w+)`", body))  # re-exports documented under dynlearn
        documented[module] = names
    return documented


@pytest.mark.parametrize("module", ["dynlearn"] + [f"dynlearn.{name}" for name in SUBPACKAGES])
def test_api_reference_lists_every_public_name(module):
    public = set(importlib.import_module(module).__all__)
    documented = _documented_by_module().get(module)
    assert documented is not None, f"docs/api.rst has no '.. module:: {module}' section; add one"
    missing, stale = public - documented, documented - public
    assert not missing, f"add {sorted(missing)} to the {module} section of docs/api.rst"
    assert not stale, f"{sorted(stale)} are listed under {module} in docs/api.rst but not in its __all__"


def test_every_subpackage_with_public_names_has_a_section():
    packages = {f"dynlearn.{p.parent.name}" for p in Path(dynlearn.__file__).parent.glob("*/__init__.py")}
    packages |= {f"dynlearn.{p.stem}" for p in Path(dynlearn.__file__).parent.glob("[!_]*.py")}
    public = {name for name in packages if hasattr(importlib.import_module(name), "__all__")}
    # The benchmark harness is a program, not API; the CLI and the estimators package are reached through
    # the ``dynlearn`` command and the top-level re-exports.
    undocumented = public - set(_documented_by_module()) - {"dynlearn.bench", "dynlearn.cli", "dynlearn.estimators"}
    assert not undocumented, f"public packages without a section in docs/api.rst: {sorted(undocumented)}"


ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "tutorials").glob("*.py"))


@pytest.fixture(scope="module")
def docs_conf():
    """The names docs/conf.py defines (its Sphinx hooks, which copy files, are not run)."""
    import runpy

    return runpy.run_path(str(ROOT / "docs" / "conf.py"))


def test_every_tutorial_is_executed_or_excluded_with_a_reason(docs_conf):
    executed, excluded = set(docs_conf["GALLERY_EXECUTED"]), docs_conf["GALLERY_NOT_EXECUTED"]
    names = {path.name for path in TUTORIALS}
    assert not executed & set(excluded), f"{sorted(executed & set(excluded))} are both executed and excluded"
    missing = names - executed - set(excluded)
    assert not missing, f"add {sorted(missing)} to GALLERY_EXECUTED or GALLERY_NOT_EXECUTED in docs/conf.py"
    stale = (executed | set(excluded)) - names
    assert not stale, f"docs/conf.py lists {sorted(stale)}, which are not in tutorials/"
    for name, reason in excluded.items():
        assert f"python tutorials/{name}" in reason, f"the reason for not running {name} must say how to run it"


def test_gallery_runs_exactly_the_executed_tutorials(docs_conf):
    pattern = docs_conf["sphinx_gallery_conf"]["filename_pattern"]
    source = ROOT / "docs" / docs_conf["sphinx_gallery_conf"]["examples_dirs"]
    run = {path.name for path in TUTORIALS if re.search(pattern, str(source / path.name))}
    assert run == set(docs_conf["GALLERY_EXECUTED"])


def test_executed_tutorials_need_no_download(docs_conf):
    # The documentation is built offline from a clean checkout: an executed tutorial may only use
    # simulated data and the data shipped inside the package, not a loader that can download.
    import inspect

    import dynlearn.datasets

    for name in docs_conf["GALLERY_EXECUTED"]:
        tree = ast.parse((ROOT / "tutorials" / name).read_text())
        used = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module == "dynlearn.datasets"
            for alias in node.names
        }
        assert not any(isinstance(node, ast.Import) and "dynlearn.datasets" in {a.name for a in node.names}
                       for node in ast.walk(tree)), f"{name}: import the dataset functions by name"  # fmt: skip
        downloads = {
            function
            for function in used
            if "download_if_missing" in inspect.signature(getattr(dynlearn.datasets, function)).parameters
        }
        assert not downloads, (
            f"{name} reads data that is downloaded ({sorted(downloads)}): move it to GALLERY_NOT_EXECUTED"
        )


def test_gallery_is_in_the_site_and_its_output_is_not_committed(docs_conf):
    conf = docs_conf["sphinx_gallery_conf"]
    assert f"   {conf['gallery_dirs']}/index" in (ROOT / "docs" / "index.rst").read_text().splitlines()
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    for folder in (conf["examples_dirs"], conf["gallery_dirs"], "generated"):
        assert f"docs/{folder}/" in ignored, f"docs/{folder}/ is generated by the build: add it to .gitignore"


@pytest.mark.parametrize("path", TUTORIALS, ids=lambda path: path.name)
def test_tutorial_text_reads_as_a_gallery_page(path):
    # sphinx-gallery takes the page title from the module docstring and reads the text cells as
    # reStructuredText; Markdown-only headings ("# ## Part") would show as plain text.
    docstring = ast.get_docstring(ast.parse(path.read_text()))
    assert docstring, f"{path.name} needs a module docstring: its title and introduction"
    title, underline = docstring.splitlines()[:2]
    assert underline == "=" * len(title), f"{path.name}: underline the docstring's first line with '='"
    headings = [line for line in path.read_text().splitlines() if line.startswith("# #")]
    assert not headings, f"{path.name}: write headings as a line underlined with '-', not {headings[0]!r}"


@pytest.mark.parametrize(("page", "limit"), [("README.md", 250), ("ARCHITECTURE.md", 300)])
def test_the_newcomer_pages_stay_short(page, limit):
    """The README is the newcomer's path and ARCHITECTURE.md the design; measurements live in the benchmarks."""
    n_lines = len((API.parents[1] / page).read_text().splitlines())
    assert n_lines <= limit, f"{page} has {n_lines} lines (at most {limit}): move detail to docs/ or benchmarks/README.md"
