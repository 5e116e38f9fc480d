"""Importing a ledger CSV: every row checked first, then posted; a re-import skips what is there.

Columns (a header row names them, in any order): ``account``, ``amount``
(major units, signed: debits negative), and optionally ``currency`` (default
given by the caller), ``kind`` (default usage), ``service``, ``quantity``,
``time`` (ISO 8601; without an offset it is UTC) and ``reference`` (unique
per account: a row whose reference is already in the ledger is skipped).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select, tuple_
from sqlmodel import Session

from balancewatch.money import MoneyError, to_minor
from balancewatch.problems import Problem, ProblemsError
from balancewatch.store import ledger
from balancewatch.store.tables import Account, LedgerEntry

REQUIRED = ("account", "amount")
KNOWN = (*REQUIRED, "currency", "kind", "service", "quantity", "time", "reference")
BATCH = 1000


@dataclass(frozen=True, slots=True)
class Row:
    line: int
    account: str
    currency: str
    amount: int
    kind: str
    service: str | None
    quantity: int | None
    time: datetime
    reference: str | None


@dataclass(frozen=True, slots=True)
class ImportResult:
    posted: int
    skipped: int


def read_rows(path: Path, default_currency: str, now: datetime) -> list[Row]:
    """Parse and check every row; raises ProblemsError with ``file:line: column: message`` for each."""
    problems: list[Problem] = []
    rows: list[Row] = []
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in REQUIRED if c not in header]
        unknown = [c for c in header if c not in KNOWN]
        if missing or unknown:
            what = [f"missing column {c!r}" for c in missing] + [f"unknown column {c!r}" for c in unknown]
            raise ProblemsError(
                [Problem(str(path), 1, "", "; ".join(what) + f" (columns: {', '.join(KNOWN)})")]
            )
        for record in _records(reader):
            line, raw = record
            try:
                rows.append(_row(line, raw, default_currency, now))
            except _CellError as exc:
                problems.append(Problem(str(path), line, exc.column, str(exc)))
    if problems:
        raise ProblemsError(problems)
    return rows


def _records(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    for raw in reader:
        clean = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if any(clean.values()):
            yield reader.line_num, clean


class _CellError(ValueError):
    def __init__(self, column: str, message: str) -> None:
        super().__init__(message)
        self.column = column


def _row(line: int, raw: dict[str, str], default_currency: str, now: datetime) -> Row:
    account = raw.get("account", "")
    if not account:
        raise _CellError("account", "empty: name the account id")
    currency = raw.get("currency") or default_currency
    kind = raw.get("kind") or "usage"
    try:
        amount = to_minor(raw["amount"], currency)
    except MoneyError as exc:
        raise _CellError("amount" if "currency" not in str(exc) else "currency", str(exc)) from None
    try:
        ledger.check_entry(amount, kind, currency)
    except (ledger.LedgerError, MoneyError) as exc:
        raise _CellError("kind" if "kind" in str(exc) else "amount", str(exc)) from None
    return Row(
        line,
        account,
        currency,
        amount,
        kind,
        raw.get("service") or None,
        _quantity(raw.get("quantity")),
        _time(raw.get("time"), now),
        raw.get("reference") or None,
    )


def _quantity(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise _CellError("quantity", f"{text!r} is not a whole number")
    return int(text)


def _time(text: str | None, now: datetime) -> datetime:
    if not text:
        return now
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise _CellError(
            "time", f"{text!r} is not an ISO 8601 time such as 2026-03-14T09:30:00+05:30"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def import_rows(session: Session, rows: list[Row], now: datetime, source: str = "") -> ImportResult:
    """Post ``rows``, skipping references already in the ledger; commits every BATCH rows.

    Raises ProblemsError, before posting anything, for rows naming unknown accounts.
    """
    known = {
        a for (a,) in session.execute(select(Account.id).where(Account.id.in_({r.account for r in rows})))
    }
    unknown = [
        Problem(source, r.line, "account", f"no account {r.account!r}")
        for r in rows
        if r.account not in known
    ]
    if unknown:
        raise ProblemsError(unknown)
    seen = _existing_references(session, rows)
    posted = skipped = 0
    for i, row in enumerate(rows, 1):
        if row.reference and (row.account, row.reference) in seen:
            skipped += 1
            continue
        ledger.post(
            session,
            row.account,
            row.currency,
            row.amount,
            row.kind,
            occurred_at=row.time,
            now=now,
            service=row.service,
            quantity=row.quantity,
            reference=row.reference,
        )
        if row.reference:
            seen.add((row.account, row.reference))
        posted += 1
        if i % BATCH == 0:
            session.commit()
    session.commit()
    return ImportResult(posted, skipped)


def _existing_references(session: Session, rows: list[Row]) -> set[tuple[str, str]]:
    keys = list({(r.account, r.reference) for r in rows if r.reference})
    found: set[tuple[str, str]] = set()
    cols = (LedgerEntry.account_id, LedgerEntry.reference)
    for i in range(0, len(keys), 500):
        query = select(*cols).where(tuple_(*cols).in_(keys[i : i + 500]))
        found.update((a, r) for a, r in session.execute(query))
    return found
