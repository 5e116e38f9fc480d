"""A template can never crash the process through the CSS inliner, whatever it nests.

The inliner's HTML parser recurses once per level of nesting. These templates nest 20,000
levels deep in ways a simple scan of the tags misjudges (HTML5 keeps elements open there);
each runs in a child process, so a crash shows as its exit status: the render is either
refused with one line naming the template, or it completes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

STYLE = "<html><head><style>p{color:red}</style></head><body>"
VECTORS = {
    "a scope boundary the end tag cannot cross": "<div><object></div>",
    "misnested formatting": "<i><div></i>",
    "an empty comment": "<!--><div>",
    "svg's title holds markup": "<svg><title><div>",
}


@pytest.mark.parametrize("level", list(VECTORS.values()), ids=list(VECTORS))
def test_deep_nesting_is_refused_or_rendered_never_a_crash(tmp_path: Path, level: str) -> None:
    template = tmp_path / "templates" / "deep"
    template.mkdir(parents=True)
    (template / "subject.txt").write_text("s\n")
    (template / "body.txt").write_text("t\n")
    (template / "body.html").write_text(
        STYLE + "{% for i in range(20000) %}" + level + "{% endfor %}</body></html>\n"
    )
    child = subprocess.run(
        [
            sys.executable,
            "-m",
            "balancewatch",
            "render",
            "deep",
            "--templates",
            str(tmp_path / "templates"),
            "--part",
            "html",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BALANCEWATCH_STATE_DIR": str(tmp_path / "state")},
    )
    assert child.returncode in (0, 1), (child.returncode, child.stderr[-500:])
    if child.returncode == 1:
        [line] = child.stderr.splitlines()
        assert line.startswith(f"{template}/body.html") and "nest" in line
