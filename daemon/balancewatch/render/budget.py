"""The render budget: every email is rendered within a time limit and a size limit.

A template is code a designer wrote, and the daemon runs it for every alert,
report and top-up notice, in its evaluation, report and reload threads. A loop
that never ends would hold one of those threads (and the CPU) for good: later
reloads and SIGHUP would wait behind it, a restart with the file on disk would
never become ready. So each render runs under a ``RenderBudget`` (``render:``
in config.yaml, 2 s and 1 MB by default) and is stopped when it overruns.

Time: one watchdog thread for the whole process
------------------------------------------------

Python cannot kill a thread, and the template runs in the caller's thread.
What it can do is raise an exception *in* another thread:
``PyThreadState_SetAsyncExc`` marks the thread, and the interpreter raises the
exception there at its next check between bytecodes. One watchdog thread does
that for every render past its deadline; a render only registers itself (its
thread id and deadline, in a dict) before it starts and unregisters when it
ends, both O(1) under one lock, so the daemon can render 50,000 emails in a
sweep without a thread or a timer each. The watchdog sleeps until the earliest
deadline it knows of, or, with nothing registered, until a render registers.

The hard part is that an asynchronous exception must never land outside the
render it was meant for: raised in the code that runs *after* a render, it
would break some unrelated step of the daemon. The protocol:

1. The watchdog injects only while holding the lock, only into a registered
   entry not yet marked as leaving, and records that it did (``fired_at``).
2. The rendering thread registers under the lock *inside* the try whose
   ``finally`` unregisters: an exception raised at any point after
   registration is inside the guarded region.
3. Leaving starts with ``with lock:`` as the first statement of that
   ``finally``. A ``threading.Lock`` is entered in C and CPython delivers no
   asynchronous exception between acquiring it and the start of the block, so
   once the lock is held the thread marks the entry as leaving (an attribute
   store, no check point either) and the watchdog can no longer inject. At
   most one injected exception can still be pending (a new one replaces the
   old), and the next statement drops it before anything else can deliver it
   (``_drop_pending``: replaced by a marker raised and caught there and then;
   never cleared with ``PyThreadState_SetAsyncExc(tid, NULL)``, which leaves
   CPython's check for pending work on in every thread for good, so that every
   bytecode pays for it and a profiled or traced call never starts).
4. An exception that fires anyway in the leave path (in the window before the
   lock, should an interpreter check there) is caught by the caller of the
   guarded region, which leaves again (leaving is idempotent) and reports the
   timeout. Nothing can fire after that: the entry is gone.
5. The exception is a ``BaseException``, so ``except Exception`` in Jinja, a
   filter or Babel lets it through. If something swallows it anyway and the
   render goes on, the watchdog injects again every ``GRACE`` seconds until
   the render ends.
6. Inside the render the thread may also run code that is not the render's: a
   finalizer or weak-reference callback that a garbage collection started
   there. An exception raised in one is printed and dropped by Python, and the
   clean-up it was doing is lost. So the watchdog looks at the frame the thread
   is paused at (it holds the GIL: the thread resumes exactly there, and
   handles the exception first) and injects only into template code, Jinja,
   MarkupSafe, Babel or balancewatch; elsewhere it looks again every
   ``DEFER`` seconds, and after ``GRACE`` seconds injects wherever the thread
   is, so code of any kind that never ends is still stopped.
7. The look at the frame cannot see the future: paused in template code just
   before an object is freed, the thread can resume into that object's
   weak-reference callback and meet the exception there. Python then hands it
   to ``sys.unraisablehook``, which the watchdog wraps: an interruption of a
   render still running is not printed as "Exception ignored"; the watchdog is
   woken to inject again at once, into the render's own code as in step 6.
   The callback's clean-up is lost, as it would be for any exception there.

A render started inside another render in the same thread runs under the outer
one's deadline. A forked child starts with no watchdog and gets its own.

Size: checked while rendering, and refused before a single step allocates it
-----------------------------------------------------------------------------

The output is streamed and counted (``render.max_size``, subject, text and
HTML together) and the render stops once past the limit. But some single
operations allocate gigabytes in one C call the watchdog cannot interrupt
(``"x" * 10**9``, ``2 ** 10**9``, ``"%0999999999d" % 1``,
``"x".ljust(10**9)``): the checks at the end of this module estimate what such
an operation would make and refuse it before it runs, with a template error.
No value a template makes may be larger than the whole email may be.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

T = TypeVar("T")

GRACE = 0.2  # seconds between injections into a render that swallowed the first
DEFER = 0.005  # seconds before looking again at a thread paused outside the render's own code
_RENDER_PACKAGES = frozenset({"jinja2", "markupsafe", "babel", "balancewatch"})


# --------------------------------------------------------------------------- time: the watchdog


class RenderTimeoutError(Exception):
    """A render overran its deadline and was stopped; ``__cause__`` carries the traceback of where."""


class _Interrupt(BaseException):
    """Raised by the watchdog in a render past its deadline. Never seen outside ``Watchdog.run``.

    A BaseException: ``except Exception`` in Jinja, a filter or Babel must not swallow it."""


@dataclass(slots=True, eq=False)
class _Entry:
    tid: int
    deadline: float  # time.monotonic()
    fired_at: float | None = None  # last injection; written by the watchdog under its lock
    leaving: bool = False  # set by the rendering thread under the lock: no injection after


class _Dropped(BaseException):
    """What replaces an interruption still pending when its render leaves: raised and caught in
    ``_drop_pending`` at once."""


# A private prototype of the C function; ctypes.pythonapi keeps the GIL held during the call, as
# the function requires.
_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(
    ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
)


def _drop_pending() -> None:
    """Drop an interruption still pending for the calling thread (there may be none).

    Clearing it with ``PyThreadState_SetAsyncExc(tid, NULL)`` would set CPython's flag for
    pending asynchronous exceptions with none to deliver: nothing resets it (CPython 3.11, 3.12),
    so every thread then checks for pending work at every bytecode, and a function entered
    under a profiler or tracer checks for ever and never runs. A marker instead replaces what is
    pending, and the next call, a check point, raises it here, which resets the flag."""
    try:
        _raise_in(threading.get_ident(), _Dropped)  # (returning from it is a check point too)
        for _ in range(_DROP_CHECKS):
            _check_point()
    except _Dropped:
        return
    raise RuntimeError("an asynchronous exception was not delivered at a function's entry")


_DROP_CHECKS = 3  # the first call's entry delivers it; the others are a margin


def _check_point() -> None:
    """A function: its entry is where the interpreter delivers a pending asynchronous exception."""


class Watchdog:
    """Stops renders that overrun their deadline; one per process (``WATCHDOG``). See the module
    docstring for the protocol that keeps its exception inside the render it was meant for."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.injections = 0  # exceptions raised in renders so far, for tests and curiosity
        self._reset()
        os.register_at_fork(after_in_child=self._reset)
        self._previous_hook = sys.unraisablehook
        sys.unraisablehook = self._unraisable

    def _reset(self) -> None:
        # A raw Lock: its __enter__ is C, so no asynchronous exception can arrive inside it
        # (a Condition's __enter__ is Python). The watchdog waits on a Condition over it.
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._entries: dict[int, _Entry] = {}
        self._wake_at = math.inf  # when the watchdog looks next; inf: when a render registers
        self._thread: threading.Thread | None = None

    def run(self, render: Callable[[], T], timeout: float) -> T:
        """``render()``, stopped with RenderTimeoutError once it has run ``timeout`` seconds.

        Whatever ``render`` raises passes through unchanged. No exception of the watchdog's
        reaches the caller in any other form, before or after this call.
        """
        entry = _Entry(threading.get_ident(), time.monotonic() + timeout)
        if entry.tid in self._entries:  # only this thread adds or removes its own entry
            return render()  # a render inside a render: the outer deadline applies
        try:
            return self._guarded(entry, render)
        except _Interrupt as interrupt:
            self._leave(entry)  # it may have fired before the guarded region had left
            raise RenderTimeoutError(f"rendering took longer than {timeout:g}s") from interrupt

    def _guarded(self, entry: _Entry, render: Callable[[], T]) -> T:
        try:
            with self._lock:
                self._entries[entry.tid] = entry
                if entry.deadline < self._wake_at:
                    self._ensure_watching()
            return render()
        finally:
            # Keep this the first statement: see step 3 of the protocol.
            with self._lock:
                entry.leaving = True
                if entry.fired_at is not None:
                    _drop_pending()
                if self._entries.get(entry.tid) is entry:
                    del self._entries[entry.tid]

    def _leave(self, entry: _Entry) -> None:
        with self._lock:
            entry.leaving = True
            if entry.fired_at is not None:
                _drop_pending()
            if self._entries.get(entry.tid) is entry:
                del self._entries[entry.tid]

    def _unraisable(self, unraisable: Any) -> None:
        """``sys.unraisablehook``: step 7. Anything but an interruption of a running render goes to
        the hook that was in place before."""
        if isinstance(unraisable.exc_value, _Dropped):
            return  # a finalizer ran at the check point meant for it: the marker did its work
        if isinstance(unraisable.exc_value, _Interrupt) and self._swallowed(threading.get_ident()):
            return
        self._previous_hook(unraisable)

    def _swallowed(self, tid: int) -> bool:
        """A callback in thread ``tid`` dropped an interruption: if that thread is rendering,
        have the watchdog look again now; return whether it is."""
        with self._lock:
            entry = self._entries.get(tid)
            if entry is None or entry.leaving:
                return False
            entry.fired_at = time.monotonic() - self.grace  # due at once, into render code only
            self._wake.notify()
            return True

    def _ensure_watching(self) -> None:
        """Called with the lock held: wake the watchdog for an earlier deadline, or start it."""
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._watch, name="render-watchdog", daemon=True)
            self._thread.start()
        else:
            self._wake.notify()

    def _watch(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                self._wake_at = self._inject_overdue(now)
                self._wake.wait(None if self._wake_at == math.inf else self._wake_at - now)

    def _inject_overdue(self, now: float) -> float:
        """Raise in every render past its deadline (again after ``grace``, if it swallowed the
        last one); return when to look next. Called with the lock held."""
        next_at = math.inf
        frames: dict[int, FrameType] | None = None
        for entry in self._entries.values():
            if entry.leaving:
                continue
            due = entry.deadline if entry.fired_at is None else entry.fired_at + self.grace
            if now >= due:
                frames = sys._current_frames() if frames is None else frames
                frame = frames.get(entry.tid)
                if frame is not None and frame.f_globals.get("__name__") == __name__:
                    # In this module's own code (a size check, or leaving the guarded region after
                    # an earlier interruption): never raise here, whatever the grace; it is brief.
                    due = now + DEFER
                elif now - due >= self.grace or _in_render_code(frame):
                    _raise_in(entry.tid, _Interrupt)
                    entry.fired_at = now
                    self.injections += 1
                    due = now + self.grace
                else:
                    due = now + DEFER  # step 6: probably a finalizer, soon done
            next_at = min(next_at, due)
        return next_at


def _in_render_code(frame: FrameType | None) -> bool:
    """Whether a thread paused at ``frame`` is in a template or the code rendering it."""
    if frame is None:
        return True
    names = frame.f_globals
    return "__jinja_template__" in names or str(names.get("__name__", "")).split(".")[0] in _RENDER_PACKAGES


WATCHDOG = Watchdog()


# --------------------------------------------------------------------------- templates that keep overrunning

TRIP_AFTER = 3  # overruns in a row that make a template be refused without rendering
RETRY_AFTER = 30.0  # seconds a tripped template is refused before one render may try again


@dataclass(slots=True)
class _Trips:
    in_a_row: int = 0
    retry_at: float = 0.0  # time.monotonic(); meaningful once in_a_row >= TRIP_AFTER
    last: Any = None  # what the last overrun was reported as


class OverrunBreaker:
    """Remembers the templates of one set that overran their time budget several times in a row,
    and refuses them without rendering for a while.

    A template that never finishes with real data (its samples were fine) would otherwise cost
    a whole budget per email: hours for a sweep of thousands, during which a fixed template
    cannot take over (a sweep runs on the set it began with) and a stop waits. Once tripped, one
    render every ``retry_after`` seconds tries again; one that finishes resets the template, so
    a few slow emails among many good ones never trip it. Thread-safe.
    """

    def __init__(self, trip_after: int = TRIP_AFTER, retry_after: float = RETRY_AFTER) -> None:
        self.trip_after, self.retry_after = trip_after, retry_after
        self._lock = threading.Lock()
        self._trips: dict[str, _Trips] = {}

    def refusal(self, name: str) -> tuple[Any, int] | None:
        """How ``name`` last overran and how many times in a row, to refuse it with; None to
        render it (this caller may be the one allowed to try again)."""
        trips = self._trips.get(name)
        if trips is None or trips.in_a_row < self.trip_after:
            return None
        now = time.monotonic()
        with self._lock:
            if now >= trips.retry_at:
                trips.retry_at = now + self.retry_after  # this caller tries; others are refused meanwhile
                return None
            return trips.last, trips.in_a_row

    def overran(self, name: str, report: Any) -> None:
        """``name`` was stopped at its deadline; ``report`` says how (returned by ``refusal``)."""
        with self._lock:
            trips = self._trips.setdefault(name, _Trips())
            trips.in_a_row += 1
            trips.last = report
            if trips.in_a_row >= self.trip_after:
                trips.retry_at = time.monotonic() + self.retry_after

    def finished(self, name: str) -> None:
        """``name`` rendered within its budget."""
        if name in self._trips:  # the common case costs one lookup
            with self._lock:
                self._trips.pop(name, None)
