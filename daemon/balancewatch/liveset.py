"""The rule and template set the producers work from: checked whole before it is used.

``runtime.loadset.load_set`` builds one; it is immutable, so an evaluation holding one
never sees a half-loaded set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from balancewatch.render.templates import TemplateSet
from balancewatch.rules.compiled import CompiledRule
from balancewatch.rules.loader import SourceFile
from balancewatch.rules.reports import CompiledReport


@dataclass(frozen=True)
class Sample:
    """One invented but realistic context for a kind of message: ``check`` renders every template
    with the samples of the kinds it is used for; ``render`` and ``preview`` show them.

    ``name`` is unique within its kind and stable (``render --sample`` takes it); ``title`` says
    in a few words what it shows."""

    name: str
    title: str
    context: dict[str, Any]


# Makes the samples a template used for one kind of message must render with: each producer
# declares one per kind it sends (``<producer>/kinds.py``).
SampleMaker = Callable[[], list[Sample]]


@dataclass(frozen=True)
class LiveSet:
    """Rules and templates that passed every check together."""

    rules: tuple[CompiledRule, ...]
    templates: TemplateSet
    digest: str
    loaded_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    rule_sources: tuple[SourceFile, ...] = ()  # the rule files as read, for plan and status
    reports: tuple[CompiledReport, ...] = ()

    def report(self, report_id: str) -> CompiledReport | None:
        return next((r for r in self.reports if r.id == report_id), None)

    def rule(self, rule_id: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.id == rule_id), None)
