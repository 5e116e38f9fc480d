"""A one-line progress display for long commands, on a terminal only.

``Progress`` rewrites one line of stderr in place (``\\r``): done of total,
the rate per second and, when the total is known, the time left. It writes at
most once per ``interval`` (a tight loop may call ``advance`` for every row),
and ends the line with a summary. When the stream is not a terminal (a pipe,
a log file, systemd) or the command was given ``--quiet``, it writes nothing
at all, so scripts and logs never see carriage returns.

A log record written to the same stream while the line is shown (a
warning about one account of a report) first erases the line, so it starts
on a clean line; the next update draws the line again below it.

Time is read from ``clock`` (seconds, monotonic) unless ``now`` is passed in,
so a test drives it without sleeping.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

INTERVAL = 0.2  # seconds between redraws: about 5 a second, cheap even over ssh
CLEAR_TO_END = "\x1b[K"  # erase what a longer previous line left to the right


def count(n: float) -> str:
    """A count as people read it: 12,345."""
    return f"{n:,.0f}"


def size(n: float) -> str:
    """A byte count in the largest unit that keeps it at or above 1: 1.5 MB."""
    if n < 1000:
        return f"{n:,.0f} B"
    for unit in ("kB", "MB"):
        n /= 1000
        if n < 1000:
            return f"{n:,.1f} {unit}"
    return f"{n / 1000:,.1f} GB"


def duration(seconds: float) -> str:
    """A short duration: 7s, 2m05s, 1h02m."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def is_terminal(stream: TextIO) -> bool:
    """True when ``stream`` is a terminal; False for pipes, files and closed or odd streams."""
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


class Progress:
    """Progress of ``total`` units of work (None: unknown), shown as ``label: done/total ...``.

    Use as a context manager: leaving it normally writes the summary line;
    leaving it by an exception erases the line, so the error that follows
    starts on a clean line. ``fmt`` formats amounts (``count`` or ``size``);
    ``noun`` names the units in the summary ("rows").
    """

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        stream: TextIO | None = None,
        quiet: bool = False,
        clock: Callable[[], float] = time.monotonic,
        fmt: Callable[[float], str] = count,
        noun: str = "",
        interval: float = INTERVAL,
    ) -> None:
        self.label, self.total, self.fmt, self.noun = label, total, fmt, noun
        self.stream = sys.stderr if stream is None else stream
        self.enabled = not quiet and is_terminal(self.stream)
        self.clock, self.interval = clock, interval
        self.done = 0
        self.started = clock()
        self._drawn_at: float | None = None
        self._finished = False
        self._handlers: list[logging.Handler] = []

    def __enter__(self) -> Progress:
        return self.start()

    def start(self) -> Progress:
        """Watch for log records written to the same stream (see the module's docstring); ``finish``
        and ``abandon`` stop watching. The context manager calls it; returns self."""
        if self.enabled and not self._handlers:
            self._handlers = [
                h for h in logging.getLogger().handlers if getattr(h, "stream", None) is self.stream
            ]
            for handler in self._handlers:
                handler.addFilter(self._clear_for_log)
        return self

    def _stop_watching(self) -> None:
        for handler in self._handlers:
            handler.removeFilter(self._clear_for_log)
        self._handlers = []

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.finish()
        else:
            self.abandon()

    def advance(self, n: int = 1, now: float | None = None) -> None:
        """Count ``n`` more units done; redraw if the last redraw is ``interval`` old."""
        self.update(self.done + n, now)

    def update(self, done: int, now: float | None = None) -> None:
        """Set the units done so far; redraw if the last redraw is ``interval`` old."""
        self.done = done
        if not self.enabled or self._finished:
            return
        now = self.clock() if now is None else now
        if self._drawn_at is not None and now - self._drawn_at < self.interval:
            return
        if self._drawn_at is None and now - self.started < self.interval:
            return  # work done in a blink shows only its summary
        self._drawn_at = now
        self._write("\r" + self.line(now) + CLEAR_TO_END)

    def finish(self, now: float | None = None) -> None:
        """Replace the line with the summary and end it; later calls do nothing."""
        self._stop_watching()
        if self._finished:
            return
        self._finished = True
        if self.enabled:
            now = self.clock() if now is None else now
            self._write("\r" + self.summary(now) + CLEAR_TO_END + "\n")

    def abandon(self) -> None:
        """Erase the line (if one was drawn) without a summary; later calls do nothing."""
        self._stop_watching()
        if self._finished:
            return
        self._finished = True
        if self.enabled and self._drawn_at is not None:
            self._write("\r" + CLEAR_TO_END)

    def _clear_for_log(self, record: logging.LogRecord) -> bool:
        """A handler filter: erase the drawn line before the record is written; keep every record."""
        if self._drawn_at is not None and not self._finished:
            self._write("\r" + CLEAR_TO_END)
            self._drawn_at = -float("inf")  # the next update draws again at once
        return True

    def line(self, now: float) -> str:
        """The in-place line: ``label: done/total (pct%), rate/s, time left``."""
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        parts = [f"{self.label}: {self.fmt(self.done)}"]
        if self.total:
            parts[0] += f"/{self.fmt(self.total)} ({100 * self.done // self.total}%)"
        parts.append(f"{self.fmt(rate)}/s")
        if self.total and rate > 0:
            parts.append(f"{duration(max(0, self.total - self.done) / rate)} left")
        return ", ".join(parts)

    def summary(self, now: float) -> str:
        """The closing line: ``label: done noun in elapsed (rate/s)``."""
        elapsed = now - self.started
        noun = f" {self.noun}" if self.noun else ""
        rate = f" ({self.fmt(self.done / elapsed)}/s)" if elapsed > 0 else ""
        return f"{self.label}: {self.fmt(self.done)}{noun} in {duration(elapsed)}{rate}"

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
