"""Previews built from a real account in the configured database, read only.

For an alert template: the first alert each rule that uses it would send about
each of the account's balances, with the account's real name, locale, zone,
usage figures, preferences and subaccounts (``alerts.chunk.would_send``; a
balance above every step is shown just below the highest one). For a report
template: the report the account would get for the last complete period, built
from its ledger (``reports.runner.would_send``). Restored and top-up failure
notices are shown with samples only. Nothing is claimed, decided or written:
alerts are read through a connection that refuses writes.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine

from balancewatch.alerts.chunk import Deciding, would_send
from balancewatch.core.money import format_money
from balancewatch.core.problems import Problem
from balancewatch.liveset import LiveSet
from balancewatch.render.templates import Rendered
from balancewatch.reports import runner
from balancewatch.tools.plan import read_only
from balancewatch.tools.studio.catalogue import Catalogue, Preview


class AccountPreviewError(Exception):
    """The account cannot be previewed with this template; the message says why, in one line."""


def account_previews(
    catalogue: Catalogue, engine: Engine, template: str, account_id: str, now: datetime
) -> list[Preview]:
    """Every message ``template`` would make for ``account_id`` now. Raises AccountPreviewError
    when there is none (no rule or report uses the template for that account)."""
    live = LiveSet(catalogue.rules, catalogue.templates, "preview", reports=catalogue.reports)
    out = _alerts(catalogue, engine, live, template, account_id, now)
    out += _reports(catalogue, engine, live, template, account_id, now)
    if not out:
        raise AccountPreviewError(
            f"no rule or report sends template {template!r} to account {account_id!r} now: no such account, "
            "no balance a rule using it selects, or no report using it goes to the account"
        )
    return out


def _alerts(
    catalogue: Catalogue, engine: Engine, live: LiveSet, template: str, account_id: str, now: datetime
) -> list[Preview]:
    rules = [r for r in catalogue.rules if r.template == template and r.enabled]
    if not rules:
        return []
    deciding = Deciding(live, catalogue.settings, now)
    out: list[tuple[bool, Preview]] = []  # (placed, preview): what the balance gets now comes first
    with read_only(engine) as conn:
        for rule in rules:
            for would in would_send(conn, deciding, rule, account_id):
                subject = would.subject
                locale = subject.locale_or(catalogue.settings.defaults.locale)
                amount = format_money(subject.amount, subject.currency, locale)
                placed = " (placed just below its highest step)" if would.placed else ""
                title = f"rule {rule.id}: the {subject.currency} balance at {amount}{placed}"
                name = f"{rule.id}-{subject.currency.lower()}"
                preview = catalogue.preview(template, "alert", name, title, would.context, would.recipients)
                out.append((would.placed, preview))
    return [preview for _placed, preview in sorted(out, key=lambda pair: pair[0])]


def _reports(
    catalogue: Catalogue, engine: Engine, live: LiveSet, template: str, account_id: str, now: datetime
) -> list[Preview]:
    out = []
    for report in (r for r in catalogue.reports if r.template == template and r.enabled):
        try:
            prepared = runner.would_send(engine, live, catalogue.settings, report, now, account_id)
        except runner.RunError:
            continue  # the account does not get this report
        for p in prepared:
            kind, name = f"report-{report.contents}", report.id
            title = f"report {report.id}: {p.outcome.status}" + (
                f" ({p.outcome.note})" if p.outcome.note else ""
            )
            if p.message is None:
                out.append(Preview(template, kind, name, title, problem=_note_problem(p.outcome.note)))
                continue
            rendered = Rendered(p.message.subject, p.message.text, p.message.html)
            out.append(catalogue.message(template, kind, name, title, rendered, p.message.recipients))
    return out


def _note_problem(note: str | None) -> Problem:
    # A template's problem comes as "path:line: message"; an outcome such as "nothing happened
    # in this period" is a sentence of its own.
    return Problem("report", 0, "", note or "the report was not built")
