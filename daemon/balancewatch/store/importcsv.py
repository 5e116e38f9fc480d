"""Importing a ledger CSV: every row checked first, then posted; a re-import skips what is there.

Columns (a header row names them, in any order): ``account``, ``amount``
(major units, signed: debits negative), and optionally ``currency`` (default
given by the caller), ``kind`` (default usage), ``service``, ``quantity``,
``time`` (ISO 8601; without an offset it is UTC) and ``reference`` (unique
per account: a row whose reference is already in the ledger is skipped; the
same reference twice in one file is an error).
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import select, tuple_
from sqlmodel import Session

from balancewatch.core.money import MoneyError, check_currency, to_minor
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.core.times import parse_instant
from balancewatch.store import ledger
from balancewatch.store.tables import ACCOUNT_TABLE, LEDGER_TABLE

REQUIRED = ("account", "amount")
KNOWN = (*REQUIRED, "currency", "kind", "service", "quantity", "time", "reference")
BATCH = 1000
T = TypeVar("T")

# The phases an import tells its progress callback about, with (done, total): while checking,
# bytes of the file read (rows are not counted ahead: that would read the file twice); while
# posting, rows posted of the rows checked.
CHECKING = "checking"
POSTING = "posting"
OnProgress = Callable[[str, int, int], None]
TELL_EVERY = 256  # rows read between two reports of the position while checking


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


def import_file(
    session: Session, path: Path, default_currency: str, now: datetime, on_progress: OnProgress | None = None
) -> ImportResult:
    """Check every row of ``path`` (cells, repeated references, unknown accounts), then post.

    Raises ProblemsError listing every problem, before anything is posted.
    ``on_progress`` hears ``(CHECKING, bytes read, file size)`` and then
    ``(POSTING, rows posted, rows)``.
    """
    rows, problems = check_rows(path, default_currency, now, on_progress)
    problems.extend(unknown_accounts(session, rows, str(path)))
    if problems:
        raise ProblemsError(problems)
    return import_rows(session, rows, now, str(path), on_progress)


def read_rows(path: Path, default_currency: str, now: datetime) -> list[Row]:
    """Parse and check every row; raises ProblemsError with ``file:line: column: message`` for each."""
    rows, problems = check_rows(path, default_currency, now)
    if problems:
        raise ProblemsError(problems)
    return rows


def check_rows(
    path: Path, default_currency: str, now: datetime, on_progress: OnProgress | None = None
) -> tuple[list[Row], list[Problem]]:
    """The rows that are fine, and a problem for every bad cell of the others.

    ``on_progress`` hears ``(CHECKING, bytes read, file size)`` every few hundred rows and at the end.
    """
    source = str(path)
    problems: list[Problem] = []
    rows: list[Row] = []
    first_line: dict[tuple[str, str], int] = {}
    try:
        # Text over a binary file, whose position counts bytes read: a text file's cannot be
        # asked while the csv reader iterates it.
        with path.open("rb") as binary, io.TextIOWrapper(binary, encoding="utf-8-sig", newline="") as handle:
            file_size = os.fstat(binary.fileno()).st_size
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in REQUIRED if c not in header]
            unknown = [c for c in header if c not in KNOWN]
            if missing or unknown:
                what = [f"missing column {c!r}" for c in missing] + [f"unknown column {c!r}" for c in unknown]
                return [], [Problem(source, 1, "", "; ".join(what) + f" (columns: {', '.join(KNOWN)})")]
            for n, (line, raw) in enumerate(_records(reader), 1):
                if on_progress is not None and n % TELL_EVERY == 0:
                    on_progress(CHECKING, binary.tell(), file_size)
                row, errors = _row(raw, line, default_currency, now)
                problems.extend(Problem(source, line, column, message) for column, message in errors)
                if row is None:
                    continue
                key = (row.account, row.reference or "")
                if row.reference and key in first_line:
                    problems.append(
                        Problem(
                            source,
                            line,
                            "reference",
                            f"{row.reference!r} is also on line {first_line[key]} for {row.account!r}; "
                            "a reference names one entry",
                        )
                    )
                    continue
                first_line.setdefault(key, line)
                rows.append(row)
            if on_progress is not None:
                on_progress(CHECKING, file_size, file_size)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return [], [Problem(source, 0, "", f"cannot read: {reason}")]
    return rows, problems


def unknown_accounts(session: Session, rows: list[Row], source: str) -> list[Problem]:
    """A problem for every row naming an account that does not exist."""
    names = sorted({r.account for r in rows})
    known: set[str] = set()
    for i in range(0, len(names), 500):
        query = select(ACCOUNT_TABLE.c.id).where(ACCOUNT_TABLE.c.id.in_(names[i : i + 500]))
        known.update(a for (a,) in session.execute(query))
    return [
        Problem(
            source, r.line, "account", f"no account {r.account!r} (add it with `balancewatch accounts add`)"
        )
        for r in rows
        if r.account not in known
    ]


def _records(reader: csv.DictReader[str]) -> Iterator[tuple[int, dict[str, str]]]:
    for raw in reader:
        # A row longer than the header puts its extra cells in a list under the None key.
        clean = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if not isinstance(v, list)}
        if any(clean.values()):
            yield reader.line_num, clean


def _row(
    raw: dict[str, str], line: int, default_currency: str, now: datetime
) -> tuple[Row | None, list[tuple[str, str]]]:
    """The row, or None and every (column, message) wrong in it."""
    errors: list[tuple[str, str]] = []
    account = raw.get("account", "")
    if not account:
        errors.append(("account", "empty: name the account id"))
    currency = raw.get("currency") or default_currency
    kind = raw.get("kind") or "usage"
    amount = None
    try:
        check_currency(currency)
    except MoneyError as exc:
        errors.append(("currency", str(exc)))
    else:
        amount = _cell(errors, "amount", _amount, raw.get("amount", ""), currency)
    quantity = _cell(errors, "quantity", _quantity, raw.get("quantity"))
    time = _cell(errors, "time", _time, raw.get("time"), now)
    try:
        if amount is None:
            ledger.check_kind(kind)
        else:
            ledger.check_entry(amount, kind, currency, quantity)
    except ledger.LedgerError as exc:
        errors.append((exc.field, exc.message))
    if errors or amount is None or time is None:
        return None, errors
    service, reference = raw.get("service") or None, raw.get("reference") or None
    return Row(line, account, currency, amount, kind, service, quantity, time, reference), []


def _cell(errors: list[tuple[str, str]], column: str, parse: Callable[..., T], *args: Any) -> T | None:
    try:
        return parse(*args)
    except ValueError as exc:
        errors.append((column, str(exc)))
        return None


def _amount(text: str, currency: str) -> int:
    if not text:
        raise ValueError("empty: write the amount in major units, e.g. -12.50")
    return to_minor(text, currency)


def _quantity(text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit():
        raise ValueError(f"{text!r} is not a whole number of units (0 or more)")
    return int(text)


def _time(text: str | None, now: datetime) -> datetime:
    return parse_instant(text) if text else now


def import_rows(
    session: Session,
    rows: list[Row],
    now: datetime,
    source: str = "",
    on_progress: OnProgress | None = None,
) -> ImportResult:
    """Post ``rows``, skipping references already in the ledger (also those another writer posts
    while this runs); commits every BATCH rows. ``on_progress`` hears ``(POSTING, rows done, rows)``
    after every row.

    Raises ProblemsError, before posting anything, for rows naming unknown accounts.
    """
    unknown = unknown_accounts(session, rows, source)
    if unknown:
        raise ProblemsError(unknown)
    seen = _existing_references(session, rows)
    posted = skipped = 0
    for i, row in enumerate(rows, 1):
        known = bool(row.reference) and (row.account, row.reference) in seen
        if known or not _post_row(session, row, now):
            skipped += 1
        else:
            posted += 1
        if row.reference:
            seen.add((row.account, row.reference))
        if i % BATCH == 0:
            session.commit()
        if on_progress is not None:
            on_progress(POSTING, i, len(rows))
    session.commit()
    return ImportResult(posted, skipped)


def _post_row(session: Session, row: Row, now: datetime) -> bool:
    """Post one row; False when its reference is taken (by another writer since the file was checked)."""
    try:
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
            check_reference=False,  # looked up for the whole file at once
        )
    except ledger.AlreadyPostedError:
        return False
    return True


def _existing_references(session: Session, rows: list[Row]) -> set[tuple[str, str]]:
    keys = list({(r.account, r.reference) for r in rows if r.reference})
    found: set[tuple[str, str]] = set()
    cols = (LEDGER_TABLE.c.account_id, LEDGER_TABLE.c.reference)
    for i in range(0, len(keys), 500):
        query = select(*cols).where(tuple_(*cols).in_(keys[i : i + 500]))
        found.update((a, r) for a, r in session.execute(query))
    return found
