"""The CSV attachment of a report: RFC 4180 text from a Built's header and rows."""

from __future__ import annotations

import csv
import io

from balancewatch.reports.base import Built

CONTENT_TYPE = "text/csv"


def csv_text(built: Built) -> str:
    """The header row then every row, comma-separated, CRLF line ends, fields quoted when needed.

    Amounts are major units as plain decimals beside a currency column, dates
    ISO 8601 (see docs/reports.md for each kind's columns).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(built.csv_header)
    writer.writerows(built.csv_rows)
    return out.getvalue()


def csv_filename(built: Built, report_id: str, period_key: str) -> str:
    """``<report>-<account>-<period>.csv`` (``<report>-<period>.csv`` for operators), safe as a name."""
    parts = [report_id] + ([built.account.id] if built.account is not None else []) + [period_key]
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in "-".join(parts)) + ".csv"
