"""Logging to stderr in a form journald keeps well.

Under systemd (``$JOURNAL_STREAM`` set) each line starts with a ``<N>``
syslog priority, which journald turns into the entry's priority, and no
timestamp, which journald adds itself. Elsewhere lines carry a UTC timestamp.
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


def setup(level: str = "info", environ: dict[str, str] | None = None) -> None:
    """Send balancewatch's logs to stderr at ``level``; quiet the chatty libraries."""
    environ = dict(os.environ) if environ is None else environ
    handler = logging.StreamHandler(sys.stderr)
    if environ.get("JOURNAL_STREAM"):
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
