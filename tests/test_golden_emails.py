"""What customers receive, as files under review: every shipped template with every sample.

Each (template, kind, sample) of the shipped templates and rules is rendered as
``balancewatch render`` renders it and compared with its snapshot in
``tests/golden/<template>/<kind>/<sample>.eml.txt``: the subject, the text part and
the HTML part as sent. A change to a template, a filter or a context builder that
changes what a customer reads fails here until the snapshots are written again:

    BALANCEWATCH_UPDATE_GOLDEN=1 .venv-test/bin/python -m pytest tests/test_golden_emails.py

and the diff of ``tests/golden`` shows, in review, exactly what changed for customers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from balancewatch.config import load_settings
from balancewatch.liveset import Sample
from balancewatch.tools.studio.catalogue import Catalogue, Preview

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("BALANCEWATCH_UPDATE_GOLDEN") == "1"


def shipped_catalogue() -> Catalogue:
    return Catalogue.load(load_settings(environ={}, search=()))


def snapshot(preview: Preview) -> str:
    """The parts a customer reads, in one reviewable text."""
    assert preview.rendered is not None, preview.problem
    rendered = preview.rendered
    html = rendered.html if rendered.html is not None else "(no HTML part)\n"
    return f"Subject: {rendered.subject}\n\n===== text =====\n{rendered.text}\n===== html =====\n{html}"


def path_of(template: str, kind: str, sample: str) -> Path:
    return GOLDEN / template / kind / f"{sample}.eml.txt"


CATALOGUE = shipped_catalogue()
ENTRIES = CATALOGUE.entries()


@pytest.mark.parametrize(
    ("template", "kind", "sample"),
    [(t, k, s) for t, k, s in ENTRIES],
    ids=[f"{t}/{k}/{s.name}" for t, k, s in ENTRIES],
)
def test_every_shipped_email_matches_its_snapshot(template: str, kind: str, sample: Sample) -> None:
    text = snapshot(CATALOGUE.render(template, kind, sample))
    path = path_of(template, kind, sample.name)
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    assert path.is_file(), f"no snapshot {path}: write them with BALANCEWATCH_UPDATE_GOLDEN=1"
    assert text == path.read_text(encoding="utf-8")


def test_no_snapshot_is_left_for_an_email_that_no_longer_exists() -> None:
    expected = {path_of(t, k, s.name) for t, k, s in ENTRIES}
    on_disk = set(GOLDEN.rglob("*.eml.txt"))
    if UPDATE:
        for stale in on_disk - expected:
            stale.unlink()
        on_disk &= expected
    assert on_disk == expected
