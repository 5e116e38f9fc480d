"""Where the CSS inliner runs: on the rendering thread for an email of ordinary size, on the
deep-stack thread when its elements could nest deeper than the thread's stack holds, and never
a crash at the boundary on a small stack."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from balancewatch.render import stack
from balancewatch.render.inline import inline_css

STYLE = "<html><head><style>td{color:red} .x{margin:0}</style></head><body>"


class Recording:
    """Stands in for the inliner; notes which thread each call ran on."""

    def __init__(self) -> None:
        self.real = stack.INLINER
        self.threads: list[int] = []

    def inline(self, html: str) -> Any:
        self.threads.append(threading.get_ident())
        return self.real.inline(html)


@pytest.fixture
def recording(monkeypatch: pytest.MonkeyPatch) -> Recording:
    recorder = Recording()
    monkeypatch.setattr(stack, "INLINER", recorder)
    return recorder


def table(rows: int) -> str:
    return STYLE + "<table>" + "<tr><td class=x>cell</td></tr>" * rows + "</table></body></html>"


def test_an_ordinary_email_is_inlined_on_the_rendering_thread(recording: Recording) -> None:
    out = inline_css(table(100))
    assert 'style="color: red;margin: 0;"' in out or 'style="color: red; margin: 0;"' in out
    assert recording.threads == [threading.get_ident()]


def test_more_elements_than_the_stack_holds_go_to_the_deep_thread(
    recording: Recording, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stack, "levels_this_thread_holds", lambda: stack.deepest_parse(100))
    inline_css(table(20))  # 4 + 1 + 40 elements
    inline_css(table(60))  # 125
    assert recording.threads[0] == threading.get_ident()
    assert recording.threads[1] != threading.get_ident()


@pytest.mark.parametrize(
    ("limit", "configured", "levels"),
    [
        (8 << 20, 0, 2_048),
        (resource.RLIM_INFINITY, 0, 2_048),  # unlimited: glibc's 8 MiB default for threads
        (1 << 20, 0, 256),
        (8 << 20, 1 << 20, 256),  # threading.stack_size set smaller
        (1 << 20, 8 << 20, 256),
    ],
)
def test_the_levels_follow_the_stack_limit(
    monkeypatch: pytest.MonkeyPatch, limit: int, configured: int, levels: int
) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _which: (limit, resource.RLIM_INFINITY))
    monkeypatch.setattr(threading, "stack_size", lambda *size: configured)
    assert stack.levels_this_thread_holds() == levels


def test_at_the_boundary_on_a_small_stack_the_process_lives(tmp_path: Path) -> None:
    """With a 1 MiB stack, the most elements inlined on the rendering thread, each nesting as
    deep as HTML lets a start tag (a stray cell opens a table body, a row and the cell), and
    nested in the way a scan of the tags misjudges; then one element more."""
    script = tmp_path / "boundary.py"
    script.write_text(
        "import sys\n"
        "from balancewatch.render import stack\n"
        "from balancewatch.render.inline import inline_css\n"
        "room = (stack.levels_this_thread_holds() - stack.IMPLIED_ALWAYS) // stack.IMPLIED_PER_ELEMENT\n"
        "head = '<html><head><style>td{color:red}</style></head><body>'\n"
        "def nested(n):  # four elements in the head, four in each level\n"
        "    return head + '<div><object><table><td>' * ((n - 4) // 4) + '</body></html>'\n"
        "for n in (room, room + 1):\n"
        "    try:\n"
        "        inline_css(nested(n))\n"
        "        print('inlined', n)\n"
        "    except Exception as exc:\n"
        "        print('refused', n, type(exc).__name__)\n"
    )

    def small_stack() -> None:
        resource.setrlimit(resource.RLIMIT_STACK, (1 << 20, resource.getrlimit(resource.RLIMIT_STACK)[1]))

    child = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=small_stack,
        env=dict(os.environ),
    )
    assert child.returncode == 0, (child.returncode, child.stderr[-500:])
    assert len(child.stdout.splitlines()) == 2, child.stdout
