"""Template filters that turn data into words a customer reads."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from balancewatch.core.durations import every
from balancewatch.render.templates import TemplateSet


@pytest.mark.parametrize(
    ("delta", "words"),
    [
        (timedelta(days=1), "every day"),
        (timedelta(hours=24), "every day"),
        (timedelta(hours=12), "every 12 hours"),
        (timedelta(days=7), "every week"),
        (timedelta(days=2), "every 2 days"),
        (timedelta(minutes=90), "every 90 minutes"),
        (timedelta(hours=1), "every hour"),
        (timedelta(seconds=45), "every 45 seconds"),
    ],
)
def test_every_names_the_interval_in_words_without_rounding(delta: timedelta, words: str) -> None:
    assert every(delta) == words


def test_every_is_a_template_filter(tmp_path: object) -> None:
    files = {"r/subject.txt": "s", "r/body.txt": "we will remind you {{ d | every }}."}
    rendered = TemplateSet(files, tmp_path).render("r", {"d": timedelta(hours=12)})  # type: ignore[arg-type]
    assert rendered.text == "we will remind you every 12 hours.\n"


@pytest.mark.parametrize(
    ("locale", "day"), [("en_US", "Mar 2"), ("en_IN", "2 Mar"), ("de_DE", "2. März"), ("fr_FR", "2 mars")]
)
def test_skeleton_orders_and_spells_the_fields_as_the_locale_does(
    tmp_path: object, locale: str, day: str
) -> None:
    files = {"r/subject.txt": "s", "r/body.txt": "{{ at | skeleton('MMMd') }} {{ on | skeleton('MMMd') }}"}
    context = {
        "locale": locale,
        "timezone": "Asia/Kolkata",
        "at": datetime(2026, 3, 1, 20, 0, tzinfo=UTC),  # 01:30 on 2 March in Kolkata
        "on": date(2026, 3, 2),
    }
    rendered = TemplateSet(files, tmp_path).render("r", context)  # type: ignore[arg-type]
    assert rendered.text == f"{day} {day}\n"
