"""Dataset cards: one per dataset in datasets/, shipped unchanged as the Bunch descriptions."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

import pytest

CARDS = Path(__file__).resolve().parents[2] / "datasets"
NAMES = ["lynx_hare", "real_pendulum", "physionet2012", "person_activity", "mocap6", "cascaded_tanks"]


@pytest.mark.parametrize("name", NAMES)
def test_shipped_description_is_the_card(name):
    shipped = files("dynlearn.datasets").joinpath("data", "descr", f"{name}.md").read_text(encoding="utf-8")
    assert shipped == (CARDS / f"{name}.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NAMES)
def test_card_has_the_facts_a_user_needs(name):
    card = (CARDS / f"{name}.md").read_text(encoding="utf-8")
    for section in ("## What it measures", "## Variables and units", "## Sampling and size", "## Source",
                    "## Licence", "## Citation"):  # fmt: skip
        assert section in card, f"{name}.md lacks {section!r}"
