"""Which templates there are, what each is used for, the samples of each use, and a render of
any (template, kind, sample) as the message a customer would receive.

The catalogue reads the configured rules only to learn what each template is
used for (``alert``, ``restored``, ``topup-failed``, ``report-<contents>``):
rule files with problems do not hide the templates, and a template no rule
uses is offered with every kind its subject renders for. A template with an
error is listed like the others; rendering it gives its problem (file:line)
instead of a message. The catalogue is a snapshot: load a new one to see edits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from functools import cache, partial
from pathlib import Path

from balancewatch.config import Settings
from balancewatch.core.memo import Memo
from balancewatch.core.problems import Problem, ProblemsError
from balancewatch.deliver.errors import TransportError
from balancewatch.deliver.message import EmailEnvelope, build
from balancewatch.liveset import Sample
from balancewatch.outbox import Claimed, message_domain, message_id
from balancewatch.render.context import email_context
from balancewatch.render.templates import (
    OverBudgetError,
    Rendered,
    RenderError,
    TemplateSet,
    read_template_files,
)
from balancewatch.rules.compiled import CompiledRule
from balancewatch.rules.loader import check_files, read_files, rule_files
from balancewatch.rules.reports import CompiledReport
from balancewatch.runtime.loadset import SAMPLES, template_uses

PREVIEW_NOW = datetime(2026, 4, 1, 12, 0, tzinfo=UTC)  # the Date header of previews: stable output
FALLBACK_RECIPIENT = "recipient@example.com"
RENDERS_KEPT = 256  # sample renders a catalogue keeps: more than the shipped templates have


@dataclass(frozen=True)
class Preview:
    """One message as a customer would receive it, or the problem that stops it.

    ``message`` is the email as the daemon would hand it to the mail server: the
    copy of the first recipient (each gets one naming only them in To; from the
    sample's account, or ``recipient@example.com``); ``size`` its size in bytes.
    ``problem`` is set (and the rest empty) when the template does not render."""

    template: str
    kind: str
    sample: str
    title: str
    rendered: Rendered | None = None
    message: EmailMessage | None = None
    size: int = 0
    problem: Problem | None = None


@dataclass(frozen=True)
class Catalogue:
    """The templates of one directory snapshot and what each is used for."""

    templates: TemplateSet
    uses: Mapping[str, tuple[str, ...]]  # template -> kinds, in order
    settings: Settings
    problems: tuple[Problem, ...] = ()  # the templates' syntax errors and missing parts
    rule_problems: tuple[Problem, ...] = field(default=())
    rules: tuple[CompiledRule, ...] = ()  # the configured rules that compile
    reports: tuple[CompiledReport, ...] = ()
    # A page and its two frames show one message: it is rendered once per catalogue.
    _rendered: Memo[tuple[str, str, str], Preview] = field(
        default_factory=lambda: Memo(RENDERS_KEPT), compare=False, repr=False
    )

    @classmethod
    def load(cls, settings: Settings, templates_dir: Path | None = None) -> Catalogue:
        """The catalogue of ``templates_dir`` (default: the configured one) with the uses the
        configured rules give each template. Raises ProblemsError only when the templates
        directory cannot be read."""
        directory = templates_dir or settings.templates_dir
        templates = TemplateSet(read_template_files(directory), directory, settings.render.budget())
        problems = tuple(templates.compile_problems())
        rules, reports, rule_problems = _configured(settings.rules_dir)
        rule_uses = template_uses(rules, reports)
        uses = {name: _kinds(name, rule_uses.get(name), templates) for name in sorted(templates.names)}
        return cls(templates, uses, settings, problems, tuple(rule_problems), tuple(rules), tuple(reports))

    @property
    def names(self) -> list[str]:
        """Every template, sorted."""
        return sorted(self.uses)

    def samples(self, kind: str) -> list[Sample]:
        """The samples of ``kind``; raises KeyError for a kind no producer declares."""
        return _samples_of(kind)

    def entries(self) -> list[tuple[str, str, Sample]]:
        """Every (template, kind, sample) in index order."""
        return [
            (name, kind, s) for name in self.names for kind in self.uses[name] for s in self.samples(kind)
        ]

    def find(self, template: str, sample: str | None = None, kind: str | None = None) -> tuple[str, Sample]:
        """The kind and sample ``render --sample`` names (default: the template's first use and
        its first sample). Raises LookupError saying what there is."""
        if template not in self.uses:
            raise LookupError(
                f"no template {template!r} in {self.templates.directory}; have: {', '.join(self.names)}"
            )
        kinds = self.uses[template] if kind is None else (kind,)
        if kind is not None and kind not in SAMPLES:
            raise LookupError(f"no kind {kind!r}; kinds: {', '.join(sorted(SAMPLES))}")
        if kind is not None and kind not in self.uses[template]:
            uses = ", ".join(self.uses[template])
            raise LookupError(f"template {template!r} is not used for {kind!r}; it is used for: {uses}")
        for each in kinds:
            for s in self.samples(each):
                if sample is None or s.name == sample:
                    return each, s
        have = ", ".join(s.name for each in kinds for s in self.samples(each))
        raise LookupError(f"no sample {sample!r} for template {template!r}; samples: {have}")

    def render(self, template: str, kind: str, sample: Sample) -> Preview:
        """``template`` rendered with ``sample`` (of ``kind``) as the message it would make; the
        same Preview object each time while the catalogue keeps it (treat it as read only)."""
        return self._rendered.get(
            (template, kind, sample.name),
            partial(self.preview, template, kind, sample.name, sample.title, sample.context),
        )

    def preview(
        self,
        template: str,
        kind: str,
        name: str,
        title: str,
        context: Mapping[str, object],
        recipients: Sequence[str] = (),
    ) -> Preview:
        """``template`` rendered with ``context`` as the message it would make for ``recipients``
        (default: the context's account owner)."""
        # The samples carry the default footer; a preview shows the configured one.
        context = {**context, "email": email_context(self.settings.email)}
        try:
            rendered = self.templates.render(template, context, chat=True)
        except RenderError as exc:
            return Preview(template, kind, name, title, problem=exc.problem)
        return self.message(
            template, kind, name, title, rendered, tuple(recipients) or (_owner(context) or "",)
        )

    def message(
        self, template: str, kind: str, name: str, title: str, rendered: Rendered, recipients: Sequence[str]
    ) -> Preview:
        """The preview of a message already rendered, as it would go to ``recipients``."""
        to = tuple(r for r in recipients if r) or (FALLBACK_RECIPIENT,)
        try:
            envelope = _envelope(self.settings, f"preview/{template}/{kind}/{name}", rendered, to)
        except TransportError as exc:
            return Preview(template, kind, name, title, rendered, problem=Problem("", 0, "", str(exc)))
        # Each recipient gets a copy naming only them: the preview is the first one's.
        first = envelope.recipients[0] if envelope.recipients else None
        message = envelope.for_recipient(first) if first else envelope.message
        size = len(envelope.as_bytes(first) if first else message.as_bytes())
        return Preview(template, kind, name, title, rendered, message, size)


def _envelope(settings: Settings, key: str, rendered: Rendered, to: tuple[str, ...]) -> EmailEnvelope:
    row = Claimed(
        id=0,
        idem_key=key,
        message_id=message_id(key, message_domain(settings)),
        sender=settings.delivery.sender,
        recipients=to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        attempts=0,
        created_at=PREVIEW_NOW,
    )
    return build(row, PREVIEW_NOW, settings.delivery.reply_to)


def _owner(context: Mapping[str, object]) -> str | None:
    account = context.get("account")
    if isinstance(account, Mapping):
        owner = account.get("owner_email")
        return owner if isinstance(owner, str) and owner else None
    return None


def _configured(rules_dir: Path) -> tuple[list[CompiledRule], list[CompiledReport], list[Problem]]:
    """The rules and reports of ``rules_dir`` that compile, and the problems of the rest."""
    try:
        files = read_files(rule_files(rules_dir))
    except ProblemsError as exc:
        return [], [], list(exc.problems)
    return check_files(files)


def _kinds(name: str, used_for: set[str] | None, templates: TemplateSet) -> tuple[str, ...]:
    """The kinds ``name`` is used for; for a template no rule uses, every kind whose first sample
    its subject renders (all of them when none does, so its problem shows)."""
    if used_for:
        return tuple(sorted(used_for))
    fitting = []
    for kind in SAMPLES:
        try:
            templates.render(name, _samples_of(kind)[0].context)
        except OverBudgetError:
            break  # every other kind could take the whole budget again
        except RenderError:
            continue
        fitting.append(kind)
    return tuple(fitting or SAMPLES)


@cache
def _samples_of(kind: str) -> list[Sample]:
    # Samples are built from code alone: the same for every catalogue in the process.
    return SAMPLES[kind]()
