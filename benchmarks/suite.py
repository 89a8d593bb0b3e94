"""Run dynlearn's comparison suite: the same as ``dynlearn bench``, writing into this folder by default.

Usage::

    python benchmarks/suite.py [--quick | --tiny] [--device cpu|cuda] [--out DIR] [--seeds N] [--only NAME ...]
                               [--pendulum-path DIR] [--physionet-path DIR]

Without ``--out`` the report goes to ``benchmarks/results/suite/<quick|tiny|full>/``.
See ``benchmarks/README.md`` ("The comparison suite") for how to read and extend it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dynlearn.cli import main

RESULTS = Path(__file__).resolve().parent / "results" / "suite"


def run(argv: list[str]) -> int:
    """``dynlearn bench`` with ``argv``, its output folder defaulting to ``RESULTS/<size>``."""
    argv = list(argv)
    if "--out" not in argv and not {"--list", "-h", "--help"} & set(argv):
        size = "quick" if "--quick" in argv else "tiny" if "--tiny" in argv else "full"
        argv += ["--out", str(RESULTS / size)]
    return main(["bench", *argv])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
