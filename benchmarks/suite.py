"""Run dynlearn's comparison suite: the same as ``dynlearn bench``, writing into this folder by default.

Usage::

    python benchmarks/suite.py [--quick | --tiny] [--device cpu|cuda] [--out DIR] [--seeds N] [--only NAME ...]
                               [--pendulum-path DIR] [--physionet-path DIR] [--with-published]

Without ``--out`` the report goes to ``benchmarks/results/suite/<quick|tiny|full>/``.
``--with-published`` then also runs the published-protocol benchmarks of
``run.py`` (HNN Table 1, the LNN double pendulum, the Latent ODE toy
periodic and PhysioNet tables) into ``<out>/published/``: they reproduce
whole papers' setups, which the suite's tasks only approach.
See ``benchmarks/README.md`` ("The comparison suite") for how to read and extend it.
"""

from __future__ import annotations

import sys
from pathlib import Path

from dynlearn.cli import main

RESULTS = Path(__file__).resolve().parent / "results" / "suite"
PUBLISHED = ("hnn_table1", "lnn_double_pendulum", "latent_toy_periodic", "physionet_slice")


def run(argv: list[str]) -> int:
    """``dynlearn bench`` with ``argv``, its output folder defaulting to ``RESULTS/<size>``."""
    argv = list(argv)
    published = "--with-published" in argv
    argv = [a for a in argv if a != "--with-published"]
    if "--out" not in argv and not {"--list", "-h", "--help"} & set(argv):
        size = "quick" if "--quick" in argv else "tiny" if "--tiny" in argv else "full"
        argv += ["--out", str(RESULTS / size)]
    status = main(["bench", *argv])
    if status == 0 and published and "--out" in argv:
        status = _run_published(argv)
    return status


def _run_published(argv: list[str]) -> int:
    """The published-protocol benchmarks of run.py, with the suite's size, device and data paths."""
    import run as benchmarks  # run.py sits beside this file, on sys.path when run as a script

    out = Path(argv[argv.index("--out") + 1]) / "published"
    names = [name for name in PUBLISHED if name in benchmarks.PERF]
    forwarded = ["--quick"] if {"--quick", "--tiny"} & set(argv) else []
    for option in ("--device", "--pendulum-path"):
        if option in argv:
            forwarded += [option, argv[argv.index(option) + 1]]
    return benchmarks.main(["--only", *names, "--out", str(out), *forwarded])


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
