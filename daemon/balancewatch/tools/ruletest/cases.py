"""A checked test file, as the runner runs it: money in minor units, times as aware UTC datetimes.

``load`` builds these from the models (the file as written) once every
reference in the file has been checked.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from balancewatch.store.preferences import Change
from balancewatch.tools.ruletest.models import AccountSpec, ExpectSpec


@dataclass(frozen=True, slots=True)
class Where:
    """A place in a test file: for failure reports and problems."""

    path: str
    line: int
    field: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class Opening:
    """An account as a test starts: opening balances and daily usage in minor units, and the
    owner's preferences per currency."""

    spec: AccountSpec
    balances: tuple[tuple[str, int], ...]
    preferences: tuple[tuple[str, Change], ...] = ()
    daily_usage: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger entry to post, in minor units, its currency and kind resolved."""

    account: str
    currency: str
    amount: int
    kind: str
    service: str | None
    quantity: int | None
    reference: str | None


@dataclass(frozen=True, slots=True)
class Write:
    """A balance to set outright, in minor units."""

    account: str
    currency: str
    amount: int


@dataclass(frozen=True, slots=True)
class PreferenceWrite:
    """Owner preferences to change, values checked and in minor units."""

    account: str
    currency: str
    change: Change


@dataclass(frozen=True, slots=True)
class Expectation:
    """An expected notification: the fields as written and recipients normalized."""

    where: Where
    spec: ExpectSpec
    to: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class Step:
    """One timeline step, at an absolute time; ``expect`` None means not checked."""

    where: Where
    at: datetime
    offset: timedelta
    posts: tuple[Entry, ...]
    writes: tuple[Write, ...]
    expect: tuple[Expectation, ...] | None
    preferences: tuple[PreferenceWrite, ...] = ()


@dataclass(frozen=True, slots=True)
class Case:
    """One test, ready to run."""

    name: str
    where: Where
    start: datetime
    accounts: tuple[Opening, ...]
    steps: tuple[Step, ...]


@dataclass(frozen=True, slots=True)
class TestFile:
    """A test file, checked: the rule files under test (None: the configured ones) and the tests."""

    __test__ = False  # not a pytest class

    path: Path
    rule_files: tuple[Path, ...] | None
    templates: Path | None
    cases: tuple[Case, ...]
