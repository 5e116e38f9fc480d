"""Every render runs within a budget of time and size: a template can never wedge the daemon.

A template that loops for ever is stopped at ``render.timeout`` naming its file
and line; one that writes too much is stopped at ``render.max_size``; a single
step that would allocate gigabytes in one go is refused before it runs. The
watchdog that stops renders never raises anywhere else.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from balancewatch.alerts.context import sample_alert_context
from balancewatch.config import load_settings
from balancewatch.core import shipped
from balancewatch.core.limits import RenderBudget
from balancewatch.core.problems import ProblemsError
from balancewatch.render.budget import WATCHDOG, OverrunBreaker
from balancewatch.render.inline import inline_css
from balancewatch.render.templates import OverBudgetError, RenderError, TemplateSet, load_templates
from balancewatch.runtime.loadset import load_set
from tests.test_daemon import wait_until

TIMEOUT = 0.5  # seconds: the budget in these tests, small to keep the suite fast
SLACK = 0.5  # how much later than the budget a stop may come on a loaded machine
BUDGET = RenderBudget(timeout=TIMEOUT, max_size=1_000_000)
NESTED_LOOPS = (
    "Hello\n{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}\n"
)
RULE = "alerts:\n  - id: a\n    exhausted: true\n    template: probe\n    restored: probe\n"


def probe(tmp_path: Path, body: str, budget: RenderBudget = BUDGET, **extra: str) -> TemplateSet:
    """A template set whose template ``probe`` has ``body`` as its body.txt (``extra``: more files)."""
    root = tmp_path / "templates"
    for name, text in {"probe/subject.txt": "Balance", "probe/body.txt": body, **extra}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_templates(root, budget)


def stopped(templates: TemplateSet, context: dict[str, Any] | None = None) -> tuple[str, float]:
    """The problem that stopped rendering ``probe`` (relative to the templates directory), and
    the seconds the render took."""
    started = time.monotonic()
    with pytest.raises(RenderError) as caught:
        templates.render("probe", sample_alert_context() if context is None else context)
    took = time.monotonic() - started
    return str(caught.value.problem).removeprefix(f"{templates.directory}/"), took


# --- time ---------------------------------------------------------------------------------------------


def test_two_nested_loops_are_stopped_within_the_budget_naming_the_file_and_line(tmp_path: Path) -> None:
    problem, took = stopped(probe(tmp_path, NESTED_LOOPS))

    assert problem == (
        "probe/body.txt:2: rendering took longer than 0.5s (render.timeout); a loop may never end"
    )
    assert TIMEOUT <= took < TIMEOUT + SLACK


def test_a_loop_in_a_shared_layout_is_reported_in_the_layout(tmp_path: Path) -> None:
    templates = probe(
        tmp_path,
        "plain",
        **{
            "_base.html": "<html>\n<body>\n{% block content %}{% endblock %}\n"
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}</body>",
            "probe/body.html": '{% extends "_base.html" %}{% block content %}hi{% endblock %}',
        },
    )
    problem, _took = stopped(templates)
    assert problem.startswith("_base.html:4: rendering took longer than 0.5s (render.timeout)")


def test_a_render_that_swallows_the_interruption_is_interrupted_again(tmp_path: Path) -> None:
    stubborn = Stubborn()
    problem, took = stopped(
        probe(tmp_path, "Hi\n{{ stubborn }}"), {**sample_alert_context(), "stubborn": stubborn}
    )

    assert problem.startswith("probe/body.txt:2: rendering took longer than 0.5s")
    assert stubborn.swallowed == 1
    assert took < TIMEOUT + 3 * 0.2 + SLACK  # budget; grace periods (not render code); slack


class Stubborn:
    """A value whose text never ends, and which ignores the first attempt to stop it."""

    def __init__(self) -> None:
        self.swallowed = 0

    def __str__(self) -> str:
        while True:
            try:
                while True:
                    pass
            except BaseException:
                if self.swallowed:
                    raise
                self.swallowed += 1


def test_renders_in_several_threads_are_each_stopped_at_their_own_deadline(tmp_path: Path) -> None:
    short = probe(tmp_path / "short", NESTED_LOOPS, RenderBudget(timeout=0.3))
    long = probe(tmp_path / "long", NESTED_LOOPS, RenderBudget(timeout=1.0))
    # Generous for the good renders: on a loaded machine four threads share one core, and what
    # is tested is that the others' stops never land in them, not how fast they are.
    good = load_templates(shipped.templates_dir(), RenderBudget(timeout=10))
    results: dict[str, Any] = {}

    def wedged(name: str, templates: TemplateSet) -> None:
        results[name] = stopped(templates)

    def busy(name: str) -> None:
        ends = time.monotonic() + 1.2
        renders = 0
        while time.monotonic() < ends:  # all the while the others are being stopped
            good.render("low-balance", sample_alert_context())
            renders += 1
        results[name] = renders

    threads = [
        threading.Thread(target=wedged, args=("short", short)),
        threading.Thread(target=wedged, args=("long", long)),
        threading.Thread(target=busy, args=("busy-1",)),
        threading.Thread(target=busy, args=("busy-2",)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results["short"][0].startswith("probe/body.txt:2: rendering took longer than 0.3s")
    assert results["long"][0].startswith("probe/body.txt:2: rendering took longer than 1s")
    assert 0.3 <= results["short"][1] < 0.3 + SLACK
    assert 1.0 <= results["long"][1] < 1.0 + SLACK
    assert results["busy-1"] > 0 and results["busy-2"] > 0  # every good render finished


def test_no_interruption_ever_escapes_a_render_even_when_its_deadline_falls_at_its_end(
    tmp_path: Path,
) -> None:
    templates = probe(tmp_path, "{% for i in range(n) %}{{ i }}{% endfor %}")
    # Long enough (~8 ms) that the watchdog, which needs the GIL back from the rendering thread
    # (up to the 5 ms switch interval), can stop it: on a loaded machine a shorter render always won.
    context = {**sample_alert_context(), "n": 30_000}
    unbounded = RenderBudget(timeout=60)
    # The quickest of five: a busy machine slows some renders, and deadlines placed after a slow
    # one would all be met (the mix of outcomes below is what shows deadlines fell at the end).
    took = min(timed(lambda: with_budget(templates, unbounded).render("probe", context)) for _ in range(5))
    outcomes = {"finished": 0, "stopped": 0}
    escaped: list[BaseException] = []

    for i in range(150):
        budget = RenderBudget(timeout=took * (0.1 + 1.9 * i / 150))  # deadlines around the end
        try:
            with_budget(templates, budget).render("probe", context)
            outcomes["finished"] += 1
        except OverBudgetError:
            outcomes["stopped"] += 1
        try:
            busy_python(20_000)  # whatever runs after a render; a stray exception would land here
        except BaseException as exc:  # anything at all is the failure
            escaped.append(exc)
    try:
        busy_python_for(3 * 0.2)  # longer than a grace period: nothing comes late either
    except BaseException as exc:
        escaped.append(exc)

    assert escaped == []
    assert outcomes["finished"] > 0 and outcomes["stopped"] > 0, outcomes


def with_budget(templates: TemplateSet, budget: RenderBudget) -> TemplateSet:
    return TemplateSet(templates.files, templates.directory, budget)


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def busy_python(n: int) -> int:
    total = 0
    for i in range(n):
        total += i
    return total


def busy_python_for(seconds: float) -> None:
    ends = time.monotonic() + seconds
    while time.monotonic() < ends:
        busy_python(1000)


# A render whose own code frees objects with weak-reference callbacks of another library: an
# interruption can land in such a callback, where Python drops it. Run in a child process, so the
# daemon's hooks are what see it (pytest replaces sys.unraisablehook during each test).
CALLBACK_RENDERS = """
import sys, weakref
from jinja2.sandbox import SandboxedEnvironment
from balancewatch.render.budget import WATCHDOG, RenderTimeoutError

foreign = {"__name__": "somelibrary.cache"}
exec("def cleanup(ref):\\n    total = 0\\n    for i in range(300):\\n        total += i\\n", foreign)
own = {"__name__": "balancewatch.probe", "weakref": weakref, "cleanup": foreign["cleanup"]}
exec(
    "class Thing:\\n    pass\\n"
    "def churn():\\n"
    "    for _ in range(20):\\n"
    "        thing = Thing()\\n"
    "        ref = weakref.ref(thing, cleanup)\\n"
    "        del thing\\n"
    "    return ''\\n",
    own,
)
loops = "{% for i in range(100000) %}{% for j in range(100000) %}{{ churn() }}{% endfor %}{% endfor %}"
template = SandboxedEnvironment().from_string(loops)
stopped = 0
for _ in range(int(sys.argv[1])):
    try:
        WATCHDOG.run(lambda: template.render(churn=own["churn"]), 0.02)
    except RenderTimeoutError:
        stopped += 1
print(stopped)
"""


def test_an_interruption_dropped_by_a_weakref_callback_is_neither_printed_nor_lost() -> None:
    child = subprocess.run(
        [sys.executable, "-c", CALLBACK_RENDERS, "6"], capture_output=True, text=True, timeout=60
    )
    assert (child.returncode, child.stdout) == (0, "6\n"), child.stderr[-2000:]
    assert "Exception ignored" not in child.stderr and child.stderr == ""


# After renders were stopped, a call made under a profiler must run, and in time. Run in a child
# process: were CPython's flag for pending asynchronous exceptions left set (by clearing one with
# PyThreadState_SetAsyncExc(tid, NULL)), the profiled call would never start, and that hang would
# otherwise be the test worker's.
PROFILED_AFTER_TIMEOUTS = """
import cProfile, sys
from jinja2.sandbox import SandboxedEnvironment
from balancewatch.render.budget import WATCHDOG, RenderTimeoutError

loops = "{% for i in range(100000) %}{% for j in range(100000) %}{{ '' }}{% endfor %}{% endfor %}"
template = SandboxedEnvironment().from_string(loops)
stopped = 0
for _ in range(int(sys.argv[1])):
    try:
        WATCHDOG.run(template.render, 0.02)
    except RenderTimeoutError:
        stopped += 1
    # A render that ends just as its deadline passes: the interruption may be pending, or not.
    WATCHDOG.run(lambda: sum(range(20_000)), 0.001)

def work():
    return sum(range(1000))

print(stopped, cProfile.Profile().runcall(work))
"""


def test_after_renders_are_stopped_a_profiled_call_still_runs() -> None:
    child = subprocess.run(
        [sys.executable, "-c", PROFILED_AFTER_TIMEOUTS, "5"], capture_output=True, text=True, timeout=30
    )
    assert (child.returncode, child.stdout, child.stderr) == (0, "5 499500\n", "")


def test_a_render_that_finishes_renders_exactly_what_jinja_renders(tmp_path: Path) -> None:
    templates = load_templates(shipped.templates_dir())
    context = sample_alert_context()
    plain = {
        part: templates.env.get_template(f"low-balance/{part}").render(context)
        for part in ("subject.txt", "body.txt", "body.html")
    }
    rendered = templates.render("low-balance", context)
    assert rendered.text == plain["body.txt"].strip() + "\n"
    assert rendered.html == inline_css(plain["body.html"]) + "\n"  # the HTML part, its CSS inlined
    assert rendered.subject == plain["subject.txt"].strip()


def test_a_template_that_keeps_overrunning_is_refused_at_once_until_the_set_is_reloaded(
    tmp_path: Path,
) -> None:
    templates = probe(tmp_path, NESTED_LOOPS, RenderBudget(timeout=0.2))
    for _ in range(3):
        assert stopped(templates)[1] >= 0.2  # each takes a whole budget

    problem, took = stopped(templates)
    assert problem == (
        "probe/body.txt:2: rendering took longer than 0.2s (render.timeout); a loop may never end; "
        "it did so 3 times in a row, so it is not rendered again for 30s (fix it: a reload starts afresh)"
    )
    assert took < 0.1
    reloaded = with_budget(templates, templates.budget)
    assert stopped(reloaded)[1] >= 0.2  # a new set renders it again


def test_a_few_slow_emails_among_good_ones_never_stop_a_template_from_rendering(tmp_path: Path) -> None:
    templates = probe(tmp_path, "{% if slow %}\n" + NESTED_LOOPS + "{% endif %}ok", RenderBudget(timeout=0.2))
    for _ in range(4):
        assert stopped(templates, {**sample_alert_context(), "slow": True})[1] >= 0.2
        assert templates.render("probe", {**sample_alert_context(), "slow": False}).text == "ok\n"


def test_a_tripped_template_is_tried_again_once_the_retry_time_has_passed() -> None:
    breaker = OverrunBreaker(trip_after=2, retry_after=0.2)
    breaker.overran("probe", "first")
    assert breaker.refusal("probe") is None  # once is not yet in a row
    breaker.overran("probe", "second")
    tripped = time.monotonic()
    assert breaker.refusal("probe") == ("second", 2)

    wait_until(lambda: breaker.refusal("probe") is None, "the retry time to pass")
    assert time.monotonic() - tripped >= 0.2
    assert breaker.refusal("probe") == ("second", 2)  # one caller tries; the others are still refused
    breaker.finished("probe")
    assert breaker.refusal("probe") is None


# --- size ---------------------------------------------------------------------------------------------


def test_a_template_writing_2_mb_is_stopped_once_past_1_mb_naming_the_file_and_line(tmp_path: Path) -> None:
    body = "Hello\n{% for i in range(20000) %}\n{{ 'x' * 100 }}\n{% endfor %}\n"
    tracemalloc.start()
    problem, _took = stopped(probe(tmp_path, body))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert problem == (
        "probe/body.txt:3: the email (subject, text and HTML together) produced more than 1 MB "
        "(render.max_size)"
    )
    assert peak < 4_000_000  # stopped at the limit, not after writing the 2 MB


def test_the_size_limit_counts_subject_text_and_html_together(tmp_path: Path) -> None:
    half = "{{ 'x' * 600000 }}"
    problem, _took = stopped(probe(tmp_path, half, **{"probe/body.html": half}))
    assert problem.startswith("probe/body.html:1: the email (subject, text and HTML together) produced")


REFUSED = "refused before it ran: a template value may be at most 1 MB (render.max_size)"
BOMBS = {
    "str-repeat": (
        "{{ 'x' * 10**9 }}",
        f"repeating a str 1,000,000,000 times would make 1,000,000,000 characters; {REFUSED}",
    ),
    "list-repeat": (
        "{{ [1] * 10**9 }}",
        f"repeating a list 1,000,000,000 times would make 5,000,000,000 characters; {REFUSED}",
    ),
    "repeat-first": (
        "{{ 10**9 * 'x' }}",
        f"repeating a str 1,000,000,000 times would make 1,000,000,000 characters; {REFUSED}",
    ),
    # Jinja's ** groups left to right: 2 ** 10 ** 9 would be (2 ** 10) ** 9, a small number.
    "power": (
        "{{ 2 ** (10 ** 9) }}",
        "2 ** 1000000000 would be a number of about 301,029,996 digits; refused before it ran: "
        "numbers in a template may have at most 4,300 digits",
    ),
    "percent-width": (
        '{{ "%0999999999d" % 1 }}',
        f"the format '%0999999999d' would make 999,999,999 characters; {REFUSED}",
    ),
    "percent-star": (
        '{{ "%*d" % (10**9, 1) }}',
        f"a format width taken from the arguments would make 1,000,000,000 characters; {REFUSED}",
    ),
    "ljust": (
        '{{ "x".ljust(10**9) }}',
        f"str.ljust(1,000,000,000) would make 1,000,000,000 characters; {REFUSED}",
    ),
    "center-filter": (
        '{{ "x"|center(10**9) }}',
        f"center(1,000,000,000) would make 1,000,000,000 characters; {REFUSED}",
    ),
    "format-filter": (
        '{{ "%999999999d"|format(1) }}',
        f"the format '%999999999d' would make 999,999,999 characters; {REFUSED}",
    ),
    "str-format": (
        '{{ "{:>999999999}".format(1) }}',
        f"the format '{{:>999999999}}' would make 999,999,999 characters; {REFUSED}",
    ),
    "indent-filter": (
        '{{ "a\\nb"|indent(10**9) }}',
        f"indent(1000000000) would make 2,000,000,003 characters; {REFUSED}",
    ),
    "replace-method": (
        "{{ ('x' * 1000).replace('', 'y' * 10000) }}",
        f"str.replace(...) would make 10,011,000 characters; {REFUSED}",
    ),
    "replace-filter": (
        "{{ ('x' * 1000)|replace('x', 'y' * 10000) }}",
        f"replace(...) would make 10,000,000 characters; {REFUSED}",
    ),
    "join-filter": (
        "{{ range(1000)|join('x' * 10000) }}",
        f"joining 1,000 items would make more than 1,000,000 characters; {REFUSED}",
    ),
    "expandtabs": (
        "{{ ('\\t' * 1000).expandtabs(100000) }}",
        f"str.expandtabs(...) would make 100,001,000 characters; {REFUSED}",
    ),
    "nested-repeat": (
        "{{ ['x' * 1000000] * 1000 }}",
        f"repeating a list 1,000 times would make 1,000,004,000 characters; {REFUSED}",
    ),
    "wordwrap": (
        "{{ ('a ' * 1000)|wordwrap(1, wrapstring='x' * 10000) }}",
        f"wordwrap(...) would make 9,991,000 characters; {REFUSED}",
    ),
    "batch": (
        "{{ [1]|batch(10**9, 0)|list }}",
        f"batch(1,000,000,000) would make 1,000,000,000 characters; {REFUSED}",
    ),
    "doubling": (
        "{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
        "joining text with ~ made 1,048,576 characters; stopped: a template value may be at most 1 MB "
        "(render.max_size)",
    ),
}


@pytest.mark.parametrize("body, message", BOMBS.values(), ids=BOMBS.keys())
def test_a_step_that_would_allocate_a_huge_value_is_refused_before_it_runs(
    tmp_path: Path, body: str, message: str
) -> None:
    templates = probe(tmp_path, f"Hello\n{body}\n")
    tracemalloc.start()
    problem, _took = stopped(templates)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()

    assert problem == f"probe/body.txt:2: {message}"
    assert peak < 10_000_000  # nothing large was made on the way


def test_a_huge_format_width_is_refused_in_an_html_part_too(tmp_path: Path) -> None:
    templates = probe(
        tmp_path, "plain", **{"probe/body.html": '<p>{{ ("{:>999999999}"|safe).format(1) }}</p>'}
    )
    problem, _took = stopped(templates)
    assert problem.startswith(
        "probe/body.html:1: the format '{:>999999999}' would make 999,999,999 characters"
    )


def test_a_format_read_once_is_still_checked_at_every_render(tmp_path: Path) -> None:
    # The formats' widths are read once per format text; a refused one is refused every time,
    # and a width taken from the arguments is checked against each render's own.
    wide = probe(tmp_path / "wide", '{{ "%0999999999d" | format(n) }}\n')
    for _ in range(2):
        assert stopped(wide, {"n": 1})[0].startswith("probe/body.txt:1: the format '%0999999999d'")
    starred = probe(tmp_path / "starred", '[{{ "%*d" | format(width, 7) }}]\n')
    assert starred.render("probe", {"width": 4}).text == "[   7]\n"
    problem, _took = stopped(starred, {"width": 10**9})
    assert problem.startswith("probe/body.txt:1: a format width taken from the arguments")
    assert starred.render("probe", {"width": 2}).text == "[ 7]\n"


def test_ordinary_arithmetic_formatting_and_joining_still_work(tmp_path: Path) -> None:
    body = (
        "{{ 'ab' * 3 }} {{ 3 * 'c' }} {{ [0] * 2 }} {{ 2 ** 10 }} {{ 7 % 3 }} {{ '%05.1f' % 2.25 }} "
        "{{ '{:>4}'.format(7) }} {{ 'x'.ljust(3, '.') }} {{ 'a-b'.replace('-', '+') }} "
        "{{ [1, 2]|join(', ') }} {{ 'a'|center(3) }}|{{ 'a b c'|wordwrap(3) }}|{{ '%s!'|format('hi') }} "
        "{{ 'x' ~ 1 }} {{ [1] + [2] }} {{ 1.5 + 2 }}"
    )
    text = probe(tmp_path, body).render("probe", sample_alert_context()).text
    assert text == "ababab ccc [0, 0] 1024 1 002.2    7 x.. a+b 1, 2  a |a b\nc|hi! x1 [1, 2] 3.5\n"


# --- check, reload and start-up -----------------------------------------------------------------------


def wedged_set(tmp_path: Path) -> tuple[Path, Path]:
    """Rules using template ``probe`` for alerts and restorations, whose body loops for ever; and a
    second template, ``slow``, that does too: the load must stop each once."""
    templates = tmp_path / "templates"
    for name in ("probe", "slow"):
        (templates / name).mkdir(parents=True)
        (templates / name / "subject.txt").write_text("Balance")
        (templates / name / "body.txt").write_text(NESTED_LOOPS)
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "probe.yaml").write_text(RULE + "  - id: b\n    exhausted: true\n    template: slow\n")
    return rules, templates


def test_a_load_reports_each_template_that_overruns_once_and_takes_about_a_budget_each(
    tmp_path: Path,
) -> None:
    rules, templates = wedged_set(tmp_path)
    started = time.monotonic()
    with pytest.raises(ProblemsError) as caught:
        load_set(rules, templates, budget=BUDGET)
    took = time.monotonic() - started

    overran = "rendering took longer than 0.5s (render.timeout); a loop may never end"
    assert [str(p) for p in caught.value.problems] == [
        f"{templates}/{name}/body.txt:2: {overran}" for name in ("probe", "slow")
    ]
    assert took < 2 * TIMEOUT + 2 * SLACK  # two templates, one budget each, however many samples
    assert WATCHDOG.injections > 0


# --- configuration ------------------------------------------------------------------------------------


def test_the_budget_is_two_seconds_and_one_megabyte_unless_configured(tmp_path: Path) -> None:
    assert load_settings(None, {}, ()).render.budget() == RenderBudget(timeout=2.0, max_size=1_000_000)
    config = tmp_path / "config.yaml"
    config.write_text("render:\n  timeout: 500ms\n  max_size: 512kB\n")
    assert load_settings(config, {}).render.budget() == RenderBudget(timeout=0.5, max_size=512_000)
    environ = {"BALANCEWATCH_RENDER__TIMEOUT": "1s", "BALANCEWATCH_RENDER__MAX_SIZE": "2097152"}
    assert load_settings(None, environ, ()).render.budget() == RenderBudget(timeout=1.0, max_size=2**21)


@pytest.mark.parametrize(
    "line, problem",
    [
        ("timeout: 0s", "render.timeout: '0s' must be longer than zero"),
        ("timeout: 2h", "render.timeout: 2h is too long for one email to render; at most 1m"),
        ("max_size: 0", "render.max_size: 0 must be larger than zero"),
        (
            "max_size: lots",
            "render.max_size: 'lots' is not a size; write e.g. 1MB, 512kB or a number of bytes",
        ),
        ("max_size: 1GB", "render.max_size: '1GB' is out of range; write 1 kB to 100 MB"),
        ("max_size: 100", "render.max_size: 100 is out of range; write 1 kB to 100 MB"),
    ],
)
def test_a_bad_budget_is_one_line_naming_the_file_line_and_key(
    tmp_path: Path, line: str, problem: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(f"render:\n  {line}\n")
    with pytest.raises(ProblemsError) as caught:
        load_settings(config, {})
    assert str(caught.value) == f"{config}:2: {problem}"
