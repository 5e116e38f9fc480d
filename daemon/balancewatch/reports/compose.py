"""From one built report to an outbox message: the template context, recipients, the CSV file.

A report template sees the keys every report has — ``locale``, ``timezone``,
``now``, ``report``, ``period`` and (absent from an operators' report)
``account``, built by ``contents.context.base_context`` — and ``empty`` (true
when nothing happened in the period; the report is sent anyway only when it
says ``empty: send``), then what the contents built for it (``Built.context``,
which wins where both name the same key); see docs/reports.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import Any

from balancewatch import outbox
from balancewatch.config import Settings
from balancewatch.render.fanout import Event, fan_out, wants_chat
from balancewatch.render.templates import RenderError, TemplateSet, TemplateSuspendedError
from balancewatch.reports.base import Built, Period
from balancewatch.reports.claims import FAILED, OPERATORS, SENT, SKIPPED, ClaimOutcome, idem_key
from balancewatch.reports.contents import csv_attachment as csv_file
from balancewatch.reports.contents.context import base_context, locale_of
from balancewatch.reports.contents.options import Options
from balancewatch.rules.reports import CompiledReport

Attach = Callable[[Built], outbox.Attachment]
KIND = "report"  # outbox.kind
EMPTY, NO_RECIPIENT = "nothing happened in this period", "no recipient"


@dataclass(frozen=True)
class Prepared:
    """One report ready to record: its outcome, and the message when it is to be sent."""

    outcome: ClaimOutcome
    # The email (when it has an address) and a row for each channel the report names.
    messages: tuple[outbox.NewMessage, ...] = ()

    @property
    def message(self) -> outbox.NewMessage | None:
        """The email among ``messages``; None when the report goes to channels only, or nowhere."""
        return next((m for m in self.messages if m.channel == outbox.EMAIL), None)


def context(
    report: CompiledReport, period: Period, built: Built, now: datetime, settings: Settings
) -> dict[str, Any]:
    """The template context of ``built``: the keys every report has (``contents.context``), then
    what the contents built (which has them too, for the account's locale)."""
    locale = locale_of(built.account, Options.of(settings))
    base = base_context(report, built.account, period, now, locale)
    return {**base, "empty": built.empty, **built.context}


def recipients(report: CompiledReport, built: Built) -> tuple[str, ...]:
    """The owner (when the report names ``owner``), then the report's addresses; without repeats."""
    out = []
    if report.notify_owner and built.account is not None:
        out.append(built.account.owner_email.strip())
    out.extend(report.recipients)
    return tuple(dict.fromkeys(a for a in out if a))


def csv_attachment(report: CompiledReport, period: Period) -> Attach:
    """The CSV file of a built report: ``<report>-<account>-<period>.csv`` with the contents' rows."""

    def attach(built: Built) -> outbox.Attachment:
        name = csv_file.csv_filename(built, report.id, period.key)
        return outbox.Attachment(name, csv_file.CONTENT_TYPE, csv_file.csv_text(built))

    return attach


def prepare(
    report: CompiledReport,
    period: Period,
    built: Built,
    now: datetime,
    settings: Settings,
    templates: TemplateSet,
    attach: Attach | None = None,
) -> Prepared:
    """What to record for ``built``: skipped (empty, no recipient), failed (a template or CSV error,
    with the problem as the note), or sent with its message."""
    account_id = built.account.id if built.account is not None else OPERATORS
    if built.empty and not report.send_empty:
        return Prepared(ClaimOutcome(account_id, SKIPPED, note=EMPTY))
    to = recipients(report, built)
    if not to and not report.channels:
        return Prepared(ClaimOutcome(account_id, SKIPPED, note=NO_RECIPIENT))
    chat = wants_chat(report.channels, settings.channels)
    try:
        rendered = templates.render(report.template, context(report, period, built, now, settings), chat=chat)
    except TemplateSuspendedError:
        raise  # not this account's fault: the batch is tried again later, not failed
    except RenderError as exc:
        return Prepared(ClaimOutcome(account_id, FAILED, note=str(exc.problem)))
    attachments: tuple[outbox.Attachment, ...] = ()
    if attach is not None:
        try:
            attachments = (attach(built),)
        except Exception as exc:  # another stage's code: a failure is this report's, not the batch's
            return Prepared(ClaimOutcome(account_id, FAILED, note=f"writing the CSV file: {exc!r}"))
    key = idem_key(report.id, account_id, period.key)
    message = outbox.NewMessage(
        idem_key=key,
        kind=KIND,
        sender=settings.delivery.sender,
        recipients=to,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        rule_id=report.id,
        account_id=built.account.id if built.account is not None else None,
        attachments=attachments,
    )
    event = partial(ready_event, report, period, built, now)
    messages = fan_out(message, report.channels, settings.channels, event, lambda: rendered.chat)
    return Prepared(ClaimOutcome(account_id, SENT, key), tuple(messages))


def ready_event(report: CompiledReport, period: Period, built: Built, now: datetime) -> Event:
    """The ``report.ready`` event of one account's report (or the operators' one): which report,
    which period, whose, and whether anything happened in it."""
    account = built.account
    data = {
        "report": report.id,
        "contents": report.contents,
        "period": {
            "kind": period.kind,
            "key": period.key,
            "start": period.start.isoformat(),
            "end": period.end.isoformat(),
            "timezone": period.timezone,
        },
        "account": None if account is None else {"id": account.id, "name": account.name},
        "empty": built.empty,
        "rows": len(built.csv_rows),
    }
    return Event("report.ready", now, data)
