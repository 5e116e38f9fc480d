"""Checks across rules, after each compiled on its own: ids unique across every file,
``inhibited_by`` naming rules that exist and never looping, and the order rules are decided in.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from balancewatch.core.problems import Problem
from balancewatch.rules.compiled import CompiledRule


@dataclass(frozen=True)
class Parsed:
    """A compiled rule (or report) and where its id is written, for duplicate reports."""

    rule: Any  # CompiledRule or CompiledReport
    id_line: int
    id_field: str


KEYED = {"rule": "alert state is", "report": "reports sent are"}


def duplicates(parsed: Sequence[Parsed], what: str = "rule") -> list[Problem]:
    seen: dict[str, Parsed] = {}
    out = []
    for p in parsed:
        first = seen.setdefault(p.rule.id, p)
        if first is not p:
            out.append(
                Problem(
                    p.rule.source,
                    p.id_line,
                    p.id_field,
                    f"duplicate {what} id {p.rule.id!r}: "
                    f"also defined at {first.rule.source}:{first.id_line}; "
                    f"ids must be unique across all rule files ({KEYED[what]} keyed on them)",
                )
            )
    return out


def inhibitions(parsed: Sequence[Parsed]) -> list[Problem]:
    """Every ``inhibited_by`` names a rule that exists, and no rules silence each other in a loop."""
    known = {p.rule.id for p in parsed}
    out = []
    for p in parsed:
        field = p.id_field.rsplit(".", 1)[0] + ".inhibited_by"
        for other in p.rule.inhibited_by:
            if other not in known:
                hint = difflib.get_close_matches(other, known, n=1)
                out.append(
                    Problem(
                        p.rule.source,
                        p.id_line,
                        field,
                        f"no rule {other!r}"
                        + (f" (did you mean {hint[0]!r}?)" if hint else "")
                        + "; name the id of a rule in the rules directory",
                    )
                )
    loop = _inhibition_loop([p.rule for p in parsed])
    if loop:
        first = next(p for p in parsed if p.rule.id == loop[0])
        out.append(
            Problem(
                first.rule.source,
                first.id_line,
                first.id_field.rsplit(".", 1)[0] + ".inhibited_by",
                "rules silence each other in a loop (" + " -> ".join([*loop, loop[0]]) + "); break the loop",
            )
        )
    return out


def _inhibition_loop(rules: Sequence[CompiledRule]) -> list[str]:
    """One loop of rules silencing each other, as ids in order, or [] when there is none."""
    edges = {r.id: r.inhibited_by for r in rules}
    done: set[str] = set()

    def walk(path: list[str]) -> list[str]:
        for nxt in edges.get(path[-1], ()):
            if nxt in path:
                return path[path.index(nxt) :]
            if nxt not in done:
                found = walk([*path, nxt])
                if found:
                    return found
        done.add(path[-1])
        return []

    for start in edges:
        found = [] if start in done else walk([start])
        if found:
            return found
    return []


def inhibitors_first(rules: Sequence[CompiledRule]) -> list[CompiledRule]:
    """``rules`` in file order, except that a rule comes after the rules that can silence it,
    so in one cycle an inhibitor has fired before the rules it inhibits are decided."""
    by_id = {r.id: r for r in rules}
    placed: dict[str, CompiledRule] = {}

    def place(rule: CompiledRule, seen: frozenset[str]) -> None:
        if rule.id in placed or rule.id in seen:
            return  # placed already, or a loop (reported by inhibitions)
        for other in rule.inhibited_by:
            if other in by_id:
                place(by_id[other], seen | {rule.id})
        placed[rule.id] = rule

    for rule in rules:
        place(rule, frozenset())
    placed_ids = set(placed)
    return [*placed.values(), *(r for r in rules if r.id not in placed_ids)]


def unknown_channels(rules: Sequence[Any], channels: Sequence[str]) -> list[Problem]:
    """A problem at each ``channel:NAME`` of ``rules`` (alert rules and reports) that names no
    channel of the config (``channels``), with the closest name when one is close."""
    known = ", ".join(sorted(channels)) or "none: add a channels: section to config.yaml"
    out = []
    for rule in rules:
        lines = rule.channel_lines or (rule.line,) * len(rule.channels)
        for name, line in zip(rule.channels, lines, strict=False):
            if name in channels:
                continue
            close = difflib.get_close_matches(name, list(channels), n=1)
            hint = f"did you mean channel:{close[0]}? " if close else ""
            message = f"channel {name!r} is not in the config; {hint}(channels: {known})"
            out.append(Problem(rule.source, line, "notify", message))
    return out
