"""Where the CSS inliner runs: on the caller's thread when no parse of the document can nest
deeper than that thread's stack holds, else on a thread with a 1 GiB stack.

The inliner (``css-inline``, Rust) parses HTML recursively, one call per level of nesting, and a
stack overflow in native code ends the whole process. HTML5's parsing rules keep elements open
in ways a scan of the tags cannot follow (``<div><object></div>``), so no estimate of the depth
is safe; the number of elements is: a parse never nests deeper than the elements the document
opens plus those the parser adds (``html``, ``body``, a table's ``tbody`` and ``tr`` around a
stray cell: ``IMPLIED_PER_ELEMENT`` at most for each).

Measured with ``css-inline`` 0.23: about 800 bytes of stack a level (10,000 levels pass on an
8 MiB stack, 20,000 do not). ``STACK_PER_LEVEL`` allows 2.5 times that. An email of a few
hundred elements (every shipped template) is inlined where it is rendered; handing it to
another thread and back cost about a sixth of the inlining.
"""

from __future__ import annotations

import os
import queue
import resource
import threading
from dataclasses import dataclass, field

import css_inline

DEEP_STACK = 1 << 30  # bytes of stack for the deep thread (reserved, not used)
STACK_PER_LEVEL = 2_048  # bytes of the inliner's recursion per level of nesting, with a margin
IMPLIED_PER_ELEMENT = 3  # levels one start tag can open at most (a stray <td>: tbody, tr, td)
IMPLIED_ALWAYS = 8  # html, head, body and the like
ASSUMED_STACK = 8 << 20  # a thread's stack when the limit says nothing (unlimited): glibc's default
SHARE_OF_STACK = 2  # of the stack, the inliner may use at most 1/SHARE_OF_STACK (its caller has the rest)

INLINER = css_inline.CSSInliner(
    inline_style_tags=True,
    keep_style_tags=False,  # the rules are in the elements' style attributes now ...
    keep_at_rules=True,  # ... except @media and the like, kept in a <style> tag
    keep_link_tags=False,
    load_remote_stylesheets=False,  # no network, no files
)


def run_inliner(html: str, elements: int) -> str:
    """The inliner's output for ``html``, which has ``elements`` start tags: on this thread
    when they cannot nest deeper than half its stack holds, else on the deep thread. Raises
    what the inliner raises (``css_inline.InlineError``, ValueError); any other failure of
    the inliner as ValueError."""
    if deepest_parse(elements) <= levels_this_thread_holds():
        return _inline(html)
    return _DEEP.run(html)


def deepest_parse(elements: int) -> int:
    """The most levels an HTML parser can nest a document of ``elements`` start tags."""
    return elements * IMPLIED_PER_ELEMENT + IMPLIED_ALWAYS


def levels_this_thread_holds() -> int:
    """The levels of the inliner's recursion that fit in half of a normal thread's stack here.

    The stack is the process's stack limit (the main thread's, and glibc's default for new
    threads), or the size set by ``threading.stack_size`` when one is set and smaller. A
    thread started with another size by native code is not a caller here."""
    return _stack_bytes() // SHARE_OF_STACK // STACK_PER_LEVEL


def _stack_bytes() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
    stack = ASSUMED_STACK if soft == resource.RLIM_INFINITY or soft <= 0 else soft
    configured = threading.stack_size()
    return min(stack, configured) if configured else stack


def _inline(html: str) -> str:
    try:
        return str(INLINER.inline(html))
    except (css_inline.InlineError, ValueError):
        raise
    except Exception as exc:
        raise ValueError(f"the CSS inliner failed: {exc!r}") from None
    except BaseException as exc:
        # A panic in the inliner: pyo3's PanicException is a BaseException. Anything else (an
        # interruption raised into this thread) goes on as it came.
        if type(exc).__name__ != "PanicException":
            raise
        raise ValueError(f"the CSS inliner failed: {exc!r}") from None


class _DeepThread:
    """The long-lived deep-stack thread and the queue of jobs it runs one after the other.

    The thread lives as long as the process (started again in a forked child): starting one
    per email cost more than the inlining itself. Jobs from several threads queue for it.
    1 GiB holds more than 200,000 levels, beyond what a render's size limit lets a template write.
    """

    def __init__(self) -> None:
        self._reset()
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._start = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def run(self, html: str) -> str:
        job = _Job(html)
        self._ensure_started()
        self._jobs.put(job)
        while not job.done.wait(1.0):
            if self._thread is None or not self._thread.is_alive():
                raise ValueError("the CSS inliner's thread ended")
        if job.error is not None:
            raise job.error
        return job.result

    def _ensure_started(self) -> None:
        with self._start:
            if self._thread is not None and self._thread.is_alive():
                return
            with _DEEP_LOCK:  # stack_size is process-wide: set only around this thread's start
                previous = threading.stack_size(DEEP_STACK)
                try:
                    self._thread = threading.Thread(target=self._serve, name="css-inline", daemon=True)
                    self._thread.start()
                finally:
                    threading.stack_size(previous)

    def _serve(self) -> None:
        while True:
            self._jobs.get().run()


_DEEP_LOCK = threading.Lock()


@dataclass
class _Job:
    html: str
    result: str = ""
    error: Exception | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        try:
            self.result = _inline(self.html)
        except (css_inline.InlineError, ValueError) as exc:
            self.error = exc
        except BaseException as exc:  # the serving thread must outlive any job, or callers would wait
            self.error = ValueError(f"the CSS inliner failed: {exc!r}")
        finally:
            self.done.set()


_DEEP = _DeepThread()
