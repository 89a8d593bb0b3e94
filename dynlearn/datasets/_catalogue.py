"""The catalogue of datasets: names, kinds and descriptions, for users and the command line."""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

from ..exceptions import input_error

KINDS = {"make": "simulated", "load": "bundled", "fetch": "download"}


@dataclass(frozen=True)
class DatasetEntry:
    """One dataset: its name, how it is obtained, and the function that returns it."""

    name: str
    kind: str
    function: Callable[..., Any]

    @property
    def summary(self) -> str:
        return (inspect.getdoc(self.function) or "").splitlines()[0]

    def description(self) -> str:
        """The dataset card when one ships with the package, else the function's documentation."""
        card = resources.files("dynlearn.datasets").joinpath("data", "descr", f"{self.name}.md")
        if card.is_file():
            return card.read_text(encoding="utf-8")
        return f"{self.function.__name__}\n\n{inspect.getdoc(self.function)}"


def catalogue() -> dict[str, DatasetEntry]:
    """Every dataset of :mod:`dynlearn.datasets`, by name (``make_lorenz`` is ``lorenz``)."""
    from .. import datasets

    entries = {}
    for attribute in datasets.__all__:
        prefix, _, name = attribute.partition("_")
        function = getattr(datasets, attribute)
        if prefix in KINDS and callable(function):
            # A loader that can download (load_cascaded_tanks) is listed as a download, whatever its prefix.
            downloads = "download_if_missing" in inspect.signature(function).parameters
            entries[name] = DatasetEntry(name, "download" if downloads else KINDS[prefix], function)
    return dict(sorted(entries.items()))


def dataset(name: str) -> DatasetEntry:
    """The catalogue entry ``name``; an error lists the real names."""
    entries = catalogue()
    if name not in entries:
        raise input_error("name", f"one of {sorted(entries)}", repr(name), "Run 'dynlearn datasets list'.")
    return entries[name]
