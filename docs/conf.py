"""Sphinx configuration of the dynlearn documentation.

Build from the repository root with
``sphinx-build -W --keep-going -n -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Document the checkout this file belongs to, not whichever dynlearn is installed.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
# Importing the package must not start work on threads the build does not need.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import dynlearn

project = "dynlearn"
author = "dynlearn developers"
copyright = "dynlearn developers"
release = dynlearn.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_parser",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]
templates_path = ["_templates"]

# API pages are generated from the docstrings on every build (docs/generated is not committed).
autosummary_generate = True
autosummary_imported_members = True

autodoc_typehints = "none"  # numpydoc's Parameters sections carry the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_attributes_as_param_list = True
numpydoc_xref_param_type = False
numpydoc_validation_checks = {"PR07"}  # every documented parameter says what it is

# Markdown user guide pages: headings become link targets, like the README's anchors.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

# Internal references are checked (-n). The build runs offline, so third-party
# inventories (intersphinx) cannot be fetched: their names are accepted as they are.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|pandas|pd|sklearn|scipy|matplotlib|torchsde|torchdiffeq|joblib)(\..*)?"),
    (r"py:.*", r"(abc|collections|contextlib|dataclasses|datetime|enum|os|pathlib|typing|threading)\..*"),
    (r"py:class", r"(int|float|str|bool|bytes|dict|list|tuple|set|object|type|callable|None|Any)"),
    (
        r"py:class",
        r"(BaseException|Exception|ValueError|RuntimeError|TypeError|OSError|KeyError|UserWarning|Warning|ImportError|FileNotFoundError|IOError)",
    ),
]

html_theme = "pydata_sphinx_theme"
html_title = f"dynlearn {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []


def _skip_generated_request_setters(app, what, name, obj, skip, options):
    """Leave out scikit-learn's generated ``set_*_request`` methods; its own docs describe them."""
    if name.startswith("set_") and name.endswith("_request"):
        return True
    return None


def _public_bases(app, name, obj, options, bases):
    """Show only bases a reader can look up: drop dynlearn's private implementation classes."""
    bases[:] = [
        base
        for base in bases
        if not (base.__module__.startswith("dynlearn") and ("._" in base.__module__ or base.__name__.startswith("_")))
    ]


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated_request_setters)
    app.connect("autodoc-process-bases", _public_bases)
