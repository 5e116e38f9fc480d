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
   old), and the next statement clears it (``PyThreadState_SetAsyncExc(tid,
   NULL)``) before anything else can deliver it.
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
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any, TypeVar

from balancewatch.core.limits import format_size

T = TypeVar("T")

GRACE = 0.2  # seconds between injections into a render that swallowed the first
DEFER = 0.005  # seconds before looking again at a thread paused outside the render's own code
_RENDER_PACKAGES = frozenset({"jinja2", "markupsafe", "babel", "balancewatch"})
MAX_INT_DIGITS = 4300  # the longest number Python turns into text (sys.int_info.default_max_str_digits)


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


# Private prototypes of one C function: one to raise, one to clear (NULL). ctypes.pythonapi
# keeps the GIL held during the call, as the function requires.
_PROTO = ("PyThreadState_SetAsyncExc", ctypes.pythonapi)
_raise_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)(_PROTO)
_clear_in = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)(_PROTO)


class Watchdog:
    """Stops renders that overrun their deadline; one per process (``WATCHDOG``). See the module
    docstring for the protocol that keeps its exception inside the render it was meant for."""

    def __init__(self, grace: float = GRACE) -> None:
        self.grace = grace
        self.injections = 0  # exceptions raised in renders so far, for tests and curiosity
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

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
                    _clear_in(entry.tid, None)
                if self._entries.get(entry.tid) is entry:
                    del self._entries[entry.tid]

    def _leave(self, entry: _Entry) -> None:
        with self._lock:
            entry.leaving = True
            if entry.fired_at is not None:
                _clear_in(entry.tid, None)
            if self._entries.get(entry.tid) is entry:
                del self._entries[entry.tid]

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


# --------------------------------------------------------------------------- size: refused before it runs


class ValueTooLargeError(Exception):
    """A template asked for a value larger than an email may be; refused before it was made."""


def too_large(what: str, size: int, limit: int, *, exact: bool = True) -> ValueTooLargeError:
    """The error refusing ``what``, which would make ``size`` characters (or, not ``exact``,
    more than ``limit``: the count stopped there)."""
    amount = f"{size:,}" if exact else f"more than {limit:,}"
    return ValueTooLargeError(
        f"{what} would make {amount} characters; refused before it ran: a template value may be "
        f"at most {format_size(limit)} (render.max_size)"
    )


def weight(value: Any, limit: int) -> int:
    """About how many characters ``value`` takes as text, counted through nested lists, tuples,
    sets and dicts (a shared item once per reference); stops counting once past ``limit``."""
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str | bytes):
            total += len(item)
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, dict):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        else:
            total += 1
    return total


def check_binop(operator: str, left: Any, right: Any, limit: int) -> None:
    """Raise ValueTooLargeError when ``left <operator> right`` would make a value past ``limit``
    characters, or a number of more than MAX_INT_DIGITS digits."""
    if operator == "*":
        _check_repeat(left, right, limit)
    elif operator == "**":
        _check_power(left, right)
    elif operator == "%":
        if isinstance(left, str | bytes):
            check_printf(left, right, limit)
    elif operator == "+" and _is_sequence(left) and _is_sequence(right):
        size = len(left) + len(right)
        if size > limit:
            raise too_large(f"adding a {type(right).__name__} to a {type(left).__name__}", size, limit)


def _is_sequence(value: Any) -> bool:
    return isinstance(value, str | bytes | list | tuple)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_repeat(left: Any, right: Any, limit: int) -> None:
    if _is_int(left) and _is_int(right):
        bits = left.bit_length() + right.bit_length()
        if bits > _MAX_INT_BITS:
            raise _too_big_number(f"{_short(left)} * {_short(right)}", bits * math.log10(2))
        return
    seq, times = (left, right) if _is_int(right) else (right, left)
    if not (_is_sequence(seq) and _is_int(times)) or times <= 1:
        return
    size = weight(seq, limit) * times
    if size > limit:
        raise too_large(f"repeating a {type(seq).__name__} {times:,} times", size, limit)


_MAX_INT_BITS = int(MAX_INT_DIGITS * math.log2(10)) + 1


def _check_power(base: Any, exponent: Any) -> None:
    if not (_is_int(base) and _is_int(exponent)) or exponent <= 1 or abs(base) <= 1:
        return
    if exponent * math.log2(abs(base)) > _MAX_INT_BITS:
        raise _too_big_number(f"{_short(base)} ** {_short(exponent)}", exponent * math.log10(abs(base)))


def _too_big_number(what: str, digits: float) -> ValueTooLargeError:
    return ValueTooLargeError(
        f"{what} would be a number of about {int(digits) + 1:,} digits; refused before it ran: "
        f"numbers in a template may have at most {MAX_INT_DIGITS:,} digits"
    )


def _short(number: int) -> str:
    return str(number) if number.bit_length() < 64 else f"a {number.bit_length()}-bit number"


# %[(key)][flags][width][.precision][length]type; width and precision may be * (from the arguments)
_PRINTF = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d*))?[hlL]?[a-zA-Z%]")
_NUMBER = re.compile(r"\d+")


def check_printf(fmt: str | bytes, args: Any, limit: int) -> None:
    """Refuse ``fmt % args`` when a width or precision in ``fmt`` (or an argument ``*`` takes)
    is larger than ``limit``: ``"%0999999999d" % 1`` allocates a gigabyte in one step."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else fmt
    if "%" not in text:
        return
    stars = False
    for match in _PRINTF.finditer(text):
        for number in (match[1], match[2]):
            if number == "*":
                stars = True
            elif number and _above(number, limit):
                raise too_large(f"the format {_quote(match[0])}", _as_int(number), limit)
    if stars:
        values = args if isinstance(args, tuple) else (args,)
        for value in values:
            if _is_int(value) and abs(value) > limit:
                raise too_large("a format width taken from the arguments", abs(value), limit)


def check_format_spec(spec: str, limit: int) -> None:
    """Refuse a ``str.format`` field whose width or precision is larger than ``limit``
    (``"{:>999999999}".format(1)``)."""
    for number in _NUMBER.findall(spec):
        if _above(number, limit):
            raise too_large(f"the format {_quote('{:' + spec + '}')}", _as_int(number), limit)


def _above(digits: str, limit: int) -> bool:
    digits = digits.lstrip("0") or "0"
    return len(digits) > len(str(limit)) or int(digits) > limit


def _as_int(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10**18


def _quote(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


# Methods whose result size is worked out from their arguments before they run.
def _padded(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    width = args[0] if args else kwargs.get("width", 0)
    return max(len(obj), width) if _is_int(width) else len(obj)


def _expanded(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    tabsize = args[0] if args else kwargs.get("tabsize", 8)
    tab = "\t" if isinstance(obj, str) else b"\t"
    return len(obj) + obj.count(tab) * max(tabsize, 0) if _is_int(tabsize) else len(obj)


def _replaced(obj: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> int:
    if len(args) < 2 or not all(isinstance(a, str | bytes) for a in args[:2]):
        return len(obj)
    old, new = args[0], args[1]
    count = args[2] if len(args) > 2 else kwargs.get("count", -1)
    return replaced_size(obj, old, new, count)


def replaced_size(text: str | bytes, old: str | bytes, new: str | bytes, count: Any = -1) -> int:
    """The length of ``text.replace(old, new, count)``, without making it."""
    if len(new) <= len(old):
        return len(text)
    found = len(text) + 1 if not old else text.count(old)  # type: ignore[arg-type]
    if _is_int(count) and count >= 0:
        found = min(found, count)
    return len(text) + found * (len(new) - len(old))


_SIZED_METHODS: dict[str, Callable[[Any, tuple[Any, ...], Mapping[str, Any]], int]] = {
    "ljust": _padded,
    "rjust": _padded,
    "center": _padded,
    "zfill": _padded,
    "expandtabs": _expanded,
    "replace": _replaced,
}


def check_method_call(
    method: Any, args: tuple[Any, ...], kwargs: Mapping[str, Any], limit: int
) -> tuple[Any, ...]:
    """Refuse a call of a str, bytes, list or tuple method that would make a value past ``limit``:
    a padding or ``replace`` whose result would be too long, a ``join`` of too much, or any
    whole-number argument larger than ``limit``. Returns the arguments to call it with (a
    ``join``'s iterable, read into a tuple to be measured)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(owner, str | bytes | list | tuple):
        return args
    name = getattr(method, "__name__", "")
    for value in (*args, *kwargs.values()):
        if _is_int(value) and value > limit:
            raise too_large(f"{type(owner).__name__}.{name}({value:,})", value, limit)
    if name == "join" and len(args) == 1 and isinstance(owner, str | bytes):
        items = tuple(args[0])
        size = joined_size(owner, items, limit)
        if size > limit:
            raise too_large(f"joining {len(items):,} items", size, limit, exact=False)
        return (items,)
    estimate = _SIZED_METHODS.get(name)
    if estimate is not None and isinstance(owner, str | bytes):
        size = estimate(owner, args, kwargs)
        if size > limit:
            raise too_large(f"{type(owner).__name__}.{name}(...)", size, limit)
    return args


def joined_size(separator: str | bytes, items: Iterable[Any], limit: int) -> int:
    """About the length of ``separator.join(items)`` (items as text), counted up to past ``limit``."""
    total = -len(separator)
    for item in items:
        # Text and numbers are most of what is joined: counted here, not by weight().
        if isinstance(item, str | bytes):
            total += len(separator) + len(item)
        elif _is_int(item):
            total += len(separator) + 1 + item.bit_length() * 3 // 10
        else:
            total += len(separator) + weight(item, limit)
        if total > limit:
            break
    return max(total, 0)
