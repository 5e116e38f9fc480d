"""Render budget benchmark: what the time and size budget costs one email, against rendering without it,
and what inlining the HTML part's CSS costs.

Not a test: it prints microseconds per message both ways and their ratio, and
the inlining's cost, and exits 0. The figures and the command are recorded in
docs/performance.md.

    python tests/bench/bench_render.py                       # 20,000 messages
    python tests/bench/bench_render.py --messages 20000 --rounds 40

The message is the shipped ``low-balance`` alert (subject, text and HTML)
rendered with ``messages.sample_alert_context()``, as the daemon renders one
for every alert it decides.

- *Without the budget* (the floor): the same three files rendered with
  Jinja's ``Template.render`` in a plain ``ImmutableSandboxedEnvironment`` set
  up as balancewatch's was before the budget (same loader contents, filters,
  autoescaping, undefined and whitespace settings), collected into the same
  ``Rendered``.
- *With the budget*: ``TemplateSet.render``, what every caller uses: the
  watchdog's registration, streamed output counted against the size limit,
  the checked operators and filters.

Both include inlining the HTML part's CSS (``render.inline.inline_css``), as
every render does. The inlining is also timed alone, on the HTML part as the
template renders it, with the HTML part's size before and after.

Both run in this one process, alternating in ``--rounds`` short rounds (each
renders ``messages / rounds`` emails each way, after a warm-up): on a busy
machine the load then weighs on both sides alike. Times are the rendering
thread's CPU time (``time.thread_time``), which waiting for a busy CPU does
not inflate. The figures are the medians of the rounds, and the ratio the
median of the rounds' ratios. The watchdog's registration alone
(``WATCHDOG.run`` of a function that does nothing) is timed too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import DictLoader, StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from balancewatch.alerts.context import sample_alert_context
from balancewatch.core import shipped
from balancewatch.render.budget import WATCHDOG
from balancewatch.render.filters import FILTERS
from balancewatch.render.i18n import install
from balancewatch.render.inline import inline_css
from balancewatch.render.templates import Rendered, TemplateSet, load_templates, one_line

try:
    from tests.bench import common
except ModuleNotFoundError:  # run as a script: its own directory comes first on sys.path
    import common  # type: ignore[no-redef]

TEMPLATE = "low-balance"
PARTS = ("subject.txt", "body.txt", "body.html")


@dataclass(frozen=True)
class Figures:
    messages: int
    rounds: int
    without_us: float  # per message, median of the rounds
    with_us: float
    ratio: float
    registration_us: float  # WATCHDOG.run of a no-op, per call
    inline_us: float  # inline_css of the HTML part alone, per message
    html_chars: int  # the HTML part as the template renders it
    inlined_chars: int  # the same, its CSS inlined


def plain_renderer(templates: TemplateSet, inline: bool = True) -> Callable[[dict[str, Any]], Rendered]:
    """The floor: the template's three files in an environment as balancewatch built it before
    the budget, the HTML part's CSS inlined as TemplateSet.render does (unless not ``inline``)."""
    env = ImmutableSandboxedEnvironment(
        loader=DictLoader(templates.files),
        autoescape=lambda name: bool(name and name.endswith((".html", ".htm"))),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        auto_reload=False,
        extensions=["jinja2.ext.i18n"],
    )
    env.filters.update(FILTERS)
    install(env, templates.catalogs)  # the templates mark their words for translation
    subject, text, html = (f"{TEMPLATE}/{part}" for part in PARTS)

    def render(context: dict[str, Any]) -> Rendered:
        # As TemplateSet.render did: each part fetched from the environment's cache, then rendered.
        body = env.get_template(html).render(context)
        return Rendered(
            subject=one_line(env.get_template(subject).render(context)),
            text=env.get_template(text).render(context).strip() + "\n",
            html=inline_css(body) + "\n" if inline else body,
        )

    return render


def per_message_us(render: Callable[[dict[str, Any]], Rendered], context: dict[str, Any], n: int) -> float:
    """CPU microseconds of this thread per call of ``render(context)``, over ``n`` calls."""
    t = time.thread_time()
    for _ in range(n):
        render(context)
    return (time.thread_time() - t) / n * 1e6


def registration_us(n: int) -> float:
    """CPU microseconds per ``WATCHDOG.run`` of a function that does nothing."""
    t = time.thread_time()
    for _ in range(n):
        WATCHDOG.run(_nothing, 2.0)
    return (time.thread_time() - t) / n * 1e6


def _nothing() -> None:
    return None


def inline_us(html: str, n: int) -> float:
    """CPU microseconds of this thread per ``inline_css(html)``, over ``n`` calls."""
    t = time.thread_time()
    for _ in range(n):
        inline_css(html)
    return (time.thread_time() - t) / n * 1e6


def measure(messages: int, rounds: int) -> Figures:
    templates = load_templates(shipped.templates_dir())
    context = sample_alert_context()
    plain = plain_renderer(templates)

    def budgeted(ctx: dict[str, Any]) -> Rendered:
        return templates.render(TEMPLATE, ctx)

    assert budgeted(context) == plain(context), "both ways must render the same email"
    raw_html = plain_renderer(templates, inline=False)(context).html or ""
    per_round = max(1, messages // rounds)
    warm = min(per_round, 200)
    per_message_us(plain, context, warm)
    per_message_us(budgeted, context, warm)
    without, with_ = [], []
    for i in range(rounds):  # alternate which goes first: drift on a busy machine hits both
        if i % 2 == 0:
            without.append(per_message_us(plain, context, per_round))
            with_.append(per_message_us(budgeted, context, per_round))
        else:
            with_.append(per_message_us(budgeted, context, per_round))
            without.append(per_message_us(plain, context, per_round))
    return Figures(
        messages=per_round * rounds,
        rounds=rounds,
        without_us=statistics.median(without),
        with_us=statistics.median(with_),
        ratio=statistics.median(b / a for a, b in zip(without, with_, strict=True)),
        registration_us=statistics.median(registration_us(max(per_round, 1000)) for _ in range(3)),
        inline_us=statistics.median(inline_us(raw_html, max(per_round, 100)) for _ in range(3)),
        html_chars=len(raw_html),
        inlined_chars=len(inline_css(raw_html)),
    )


def report(f: Figures, command: str) -> str:
    return "\n".join(
        [
            f"render budget benchmark: {f.messages:,} {TEMPLATE} alert emails (subject, text, HTML), "
            f"{f.rounds} alternating rounds, medians",
            f"command: {command}",
            "",
            f"  without the budget (plain sandbox, Template.render)  {f.without_us:8.1f} µs/message (CPU)",
            f"  with the budget (TemplateSet.render)                 {f.with_us:8.1f} µs/message (CPU)",
            f"  ratio (median of the rounds' ratios)                 {f.ratio:8.3f}x  "
            f"({f.with_us - f.without_us:+.1f} µs/message between the medians)",
            f"  the watchdog's registration alone                    {f.registration_us:8.2f} µs/render",
            "",
            "CSS inlining (included in both figures above):",
            f"  inline_css of the HTML part alone                    {f.inline_us:8.1f} µs/message (CPU)",
            f"  its share of a render with the budget                {f.inline_us / f.with_us:8.1%}",
            f"  the HTML part before and after inlining              "
            f"{f.html_chars:,} -> {f.inlined_chars:,} characters",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--messages", type=int, default=20_000, help="emails rendered each way (default 20,000)")
    p.add_argument("--rounds", type=int, default=40, help="alternating rounds; medians are reported")
    p.add_argument("--json", type=Path, default=None, help="also write the raw figures here")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    figures = measure(args.messages, max(1, args.rounds))
    common.publish(report(figures, common.command_line(__file__, argv)), figures, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
