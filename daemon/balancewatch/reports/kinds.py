"""The kinds of message reports send (one per contents), each with the samples its templates
must render."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from balancewatch.liveset import Sample, SampleMaker
from balancewatch.reports.samples import MAKERS

# The name and title of each sample context ``reports.samples`` makes, in its order; data only.
NAMES: Mapping[str, Sequence[tuple[str, str]]] = {
    "usage": (
        ("month", "a month with subaccounts"),
        ("week-short-history", "a week, too short a history to average"),
        ("day", "a day with subaccounts"),
        ("empty-month", "a month without usage"),
    ),
    "daywise": (("month", "a month, day by day"), ("empty-month", "a month without entries")),
    "transactions": (("week", "a week of entries"), ("empty-week", "a week without entries")),
    "low-balance": (("five-low", "five low balances in three currencies"), ("none-low", "no balance low")),
}


def _named(contents: str, make: Callable[[], list[dict[str, Any]]]) -> SampleMaker:
    def samples() -> list[Sample]:
        names = NAMES.get(contents, ())
        return [
            Sample(*(names[n] if n < len(names) else (f"sample-{n + 1}", f"sample {n + 1}")), context)
            for n, context in enumerate(make())
        ]

    return samples


SAMPLES: Mapping[str, SampleMaker] = {
    f"report-{contents}": _named(contents, make) for contents, make in MAKERS.items()
}
