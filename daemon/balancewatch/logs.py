"""Logging to stderr in a form journald keeps well.

When stderr is the journal (``$JOURNAL_STREAM`` names its device and inode)
each line starts with a ``<N>`` syslog priority, which journald turns into
the entry's priority, and no timestamp, which journald adds itself.
Elsewhere lines carry a UTC timestamp, including in a shell or a pipe
started from a service, which inherits ``$JOURNAL_STREAM`` but not the journal.
"""

from __future__ import annotations

import logging
import os
import sys
import time

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class _JournalFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{_PRIORITY.get(record.levelno, 6)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


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


def setup(level: str = "info", environ: dict[str, str] | None = None) -> None:
    """Send balancewatch's logs to stderr at ``level``; quiet the chatty libraries."""
    environ = dict(os.environ) if environ is None else environ
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal(environ):
        handler.setFormatter(_JournalFormatter("%(name)s: %(message)s"))
    else:
        formatter = logging.Formatter(
            "%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ"
        )
        formatter.converter = time.gmtime
        handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("apscheduler", "sqlalchemy", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    scheduler = logging.getLogger("apscheduler.scheduler")
    if not any(isinstance(f, _SkippedRuns) for f in scheduler.filters):
        scheduler.addFilter(_SkippedRuns())
