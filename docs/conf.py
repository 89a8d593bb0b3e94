"""Sphinx configuration of the dynlearn documentation.

Build from the repository root with
``sphinx-build -W --keep-going -n -b html docs docs/_build/html``.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
# Document the checkout this file belongs to, not whichever dynlearn is installed.
sys.path.insert(0, str(ROOT))
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
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md", "_tutorials"]
templates_path = ["_templates"]

# API pages are generated from the docstrings on every build (docs/generated is not committed).
autosummary_generate = True
autosummary_imported_members = True


def _unavailable_methods() -> dict[str, list[str]]:
    """Per classifier, the public methods its class inherits but its instances lack (``available_if``).

    The classifiers built on forecasters have no ``partial_fit``, intervals
    or calibration; autodoc reads the class, where the descriptor still
    shows the method, so the template leaves these out of their pages.
    """
    from sklearn.base import ClassifierMixin

    unavailable = {}
    for name in dynlearn.__all__:
        cls = getattr(dynlearn, name)
        if isinstance(cls, type) and issubclass(cls, ClassifierMixin):
            instance = cls()
            missing = [m for m in dir(cls) if not m.startswith("_") and not hasattr(instance, m)]
            if missing:
                unavailable[name] = missing
    return unavailable


autosummary_context = {"unavailable": _unavailable_methods()}

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

# The tutorials gallery: sphinx-gallery renders each script of tutorials/ as a page, runs the ones
# below in their fast mode (DYNLEARN_TUTORIAL_FAST=1) and shows the figures they draw. The build
# runs offline from a clean checkout, so a tutorial that reads downloaded data is shown with its
# code but not run, with its reason on its page. Every tutorial is in exactly one of the two lists
# (tests/test_docs.py checks it, and the build stops on one that is in neither).
GALLERY_EXECUTED = ("forecasting_real_series.py", "probabilistic_forecasting.py")
GALLERY_NOT_EXECUTED = {
    "datasets_tour.py": (
        "it reads PhysioNet 2012 and the CMU motion-capture file, which are downloaded on first use. "
        "Run it with ``python tutorials/datasets_tour.py``, with ``DYNLEARN_PHYSIONET_PATH`` and "
        "``DYNLEARN_MOCAP6_PATH`` naming local copies if there is no internet."
    ),
    "conserved_quantity.py": (
        "it reads the real pendulum recording of Schmidt & Lipson, which is downloaded on first use. "
        "Run it with ``python tutorials/conserved_quantity.py``, with ``DYNLEARN_PENDULUM_PATH`` naming a "
        "local copy if there is no internet."
    ),
    "irregular_series.py": (
        "it reads PhysioNet 2012, which is downloaded on first use. Run it with "
        "``python tutorials/irregular_series.py``, with ``DYNLEARN_PHYSIONET_PATH`` naming a local copy "
        "if there is no internet."
    ),
    "systems_with_inputs.py": (
        "it reads the Cascaded Tanks records, which are downloaded on first use, and PhysioNet 2012. Run it "
        "with ``python tutorials/systems_with_inputs.py``, with ``DYNLEARN_TANKS_PATH`` and "
        "``DYNLEARN_PHYSIONET_PATH`` naming local copies."
    ),
}
# The gallery runs copies of the scripts in docs/_tutorials (generated, not committed): sphinx-gallery
# runs each script in its own folder, so the figures the scripts save land there, not in tutorials/.
GALLERY_SOURCE = "_tutorials"
GALLERY_OUTPUT = "auto_tutorials"
GALLERY_HEADER = """\
Tutorials
=========

The tutorials are the scripts in the repository's ``tutorials/`` folder, in percent format
(``# %%`` cells: run them as plain Python, or open them as notebooks with Jupytext). Each
writes its figures to the current folder. Set ``DYNLEARN_TUTORIAL_FAST=1`` for a quick run
on small data; the test suite runs every one of them that way (``tests/tutorials/``).

The pages below that show output and figures were produced by running the script when
this site was built, in the fast mode: its numbers come from brief training on small data,
not from the full run the text describes. Tutorials that need downloaded data are shown
with their code only; each says so at its top, and how to run it.
"""

sphinx_gallery_conf = {
    "examples_dirs": GALLERY_SOURCE,
    "gallery_dirs": GALLERY_OUTPUT,
    # Run only the tutorials that work offline; the others are rendered without running.
    "filename_pattern": r"[\\/](" + "|".join(re.escape(name) for name in GALLERY_EXECUTED) + r")$",
    "within_subsection_order": "FileNameSortKey",
    "image_scrapers": ("matplotlib",),
    "remove_config_comments": True,
    "write_computation_times": False,
    "show_memory": False,
}

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


def _gallery_sources(app, config):
    """Copy tutorials/*.py beside a generated gallery header, for sphinx-gallery to read and run."""
    tutorials = sorted(path.name for path in (ROOT / "tutorials").glob("*.py"))
    unlisted = set(tutorials) - set(GALLERY_EXECUTED) - set(GALLERY_NOT_EXECUTED)
    if unlisted:
        raise RuntimeError(
            f"docs/conf.py: add {sorted(unlisted)} to GALLERY_EXECUTED, or to GALLERY_NOT_EXECUTED with the reason"
        )
    os.environ["DYNLEARN_TUTORIAL_FAST"] = "1"  # the executed tutorials run briefly, on small data
    source = DOCS / GALLERY_SOURCE
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir()
    for name in tutorials:
        shutil.copyfile(ROOT / "tutorials" / name, source / name)
    (source / "GALLERY_HEADER.rst").write_text(GALLERY_HEADER)


def _note_unexecuted_tutorial(app, docname, source):
    """Say at the top of a tutorial's page that the build did not run it, why, and how to run it."""
    folder, _, stem = docname.partition("/")
    reason = GALLERY_NOT_EXECUTED.get(f"{stem}.py")
    if folder != GALLERY_OUTPUT or reason is None:
        return
    # Below the page title: the docstring's first line and its underline of "=".
    source[0] = re.sub(
        r"^(\S.*\n=+\n)",
        lambda title: (
            f"{title.group(1)}\n.. note::\n\n   This tutorial was not run when this page was built: {reason}\n"
        ),
        source[0],
        count=1,
        flags=re.MULTILINE,
    )


def setup(app):
    app.connect("autodoc-skip-member", _skip_generated_request_setters)
    app.connect("autodoc-process-bases", _public_bases)
    # Before sphinx-gallery reads the tutorials (it does so when the builder starts).
    app.connect("config-inited", _gallery_sources, priority=100)
    app.connect("source-read", _note_unexecuted_tutorial)
