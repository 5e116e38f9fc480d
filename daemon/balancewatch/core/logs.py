"""Logging to stderr, as readable text or as one JSON object a line, in a form journald keeps well.

When stderr is the journal (``$JOURNAL_STREAM`` names its device and inode)
each line starts with a ``<N>`` syslog priority, which journald turns into
the entry's priority (and strips), and text lines carry no timestamp, which
journald adds itself. Elsewhere text lines carry a UTC timestamp, including
in a shell or a pipe started from a service, which inherits
``$JOURNAL_STREAM`` but not the journal.

The JSON format (``log.format: json``) writes one object a line: ``time``
(RFC 3339, UTC, milliseconds), ``level``, ``logger``, ``message``, an
``exception`` string when a traceback was logged, and the fields of
``EXTRA_FIELDS`` a log call passed with ``extra={...}``. Other extras are
left out, so nothing a call attaches for its own use (a settings object, a
secret) reaches the log by accident.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any, Literal

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

# The ``extra=`` keys that become JSON fields; log calls across the daemon use these names.
EXTRA_FIELDS = ("rule", "account", "currency", "message_id", "instance", "report", "kind")

LogFormat = Literal["text", "json"]


class _JournalFormatter(logging.Formatter):
    """Prefix every physical line with its syslog priority, so journald keeps the level."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


class JsonFormatter(logging.Formatter):
    """One JSON object per record, always on one line (newlines inside values are escaped)."""

    def __init__(self, journal: bool = False) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        line = json.dumps(self.fields(record), ensure_ascii=False, default=str)
        return f"<{_PRIORITY.get(record.levelno, 6)}>{line}" if self.journal else line

    def fields(self, record: logging.LogRecord) -> dict[str, Any]:
        """The record as a dict: the fixed keys first, then the allowed extras it carries."""
        stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        data: dict[str, Any] = {
            "time": stamp.replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in EXTRA_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        return data


def stderr_is_journal(environ: dict[str, str]) -> bool:
    """True when stderr is the stream ``$JOURNAL_STREAM`` (``DEVICE:INODE``) names."""
    device, sep, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        stat = os.fstat(sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return (str(stat.st_dev), str(stat.st_ino)) == (device, inode)


class _SkippedRuns(logging.Filter):
    """Drop APScheduler's "skipped: maximum number of running instances reached": a job still
    running at its next interval (a long delivery) is meant to be coalesced, not reported."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "maximum number of running instances reached" not in record.getMessage()


def make_formatter(log_format: LogFormat, journal: bool) -> logging.Formatter:
    """The formatter for ``log_format`` ("text" or "json"), for the journal or for anything else."""
    if log_format == "json":
        return JsonFormatter(journal=journal)
    if journal:
        return _JournalFormatter("%(name)s: %(message)s")
    formatter = logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


def setup(level: str = "info", environ: dict[str, str] | None = None, log_format: LogFormat = "text") -> None:
    """Send every log record to stderr at ``level``, as ``log_format``; quiet the chatty libraries.

    Replaces the root logger's handlers, so calling it again (a second command
    in one process, a test) leaves one handler, on the current ``sys.stderr``.
    """
    environ = dict(os.environ) if environ is None else environ
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format, stderr_is_journal(environ)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "sqlalchemy", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _SkippedRuns) for f in scheduler.filters):
        scheduler.addFilter(_SkippedRuns())
