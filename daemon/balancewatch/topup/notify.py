"""The email telling an owner that an automatic recharge failed: its context, its message.

The context (kind ``topup-failed``) has what every balance email has —
``account``, ``currency``, ``balance``, ``rule``, ``usage``, ``locale``,
``timezone``, ``now`` — and ``topup``:

- ``id``, ``amount`` (Money), ``requested_at``, ``attempts``;
- ``reason``: what the platform said, or why balancewatch stopped trying;
- ``cause``: ``declined`` (the platform refused), ``gave-up`` (no usable answer
  within ``topup.retry.give_up_after``), ``no-credit`` (accepted, but no top-up
  arrived within ``topup.await_credit``) or ``reported`` (an operator ran
  ``balancewatch topup fail``).

``sample_contexts`` builds the same shapes from invented data for ``check``.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from sqlalchemy import Connection, select

from balancewatch import outbox
from balancewatch.config import EmailSettings, Settings
from balancewatch.core.money import Money
from balancewatch.evaluate import usage
from balancewatch.evaluate.dynamic import load_preferences
from balancewatch.evaluate.load import Subject, subaccount_owners
from balancewatch.render.context import SAMPLE_NOW, Extras, balance_context, recipients, sample_usage
from balancewatch.render.fanout import Event, amount, fan_out, wants_chat
from balancewatch.render.filters import plain_spaces
from balancewatch.render.templates import RenderError, TemplateSet
from balancewatch.rules.compiled import CompiledRule
from balancewatch.store.tables import ACCOUNT_TABLE, BALANCE_TABLE
from balancewatch.store.topup_requests import FAILED, Request

log = logging.getLogger(__name__)

KIND = "topup-failed"
DEFAULT_TEMPLATE = "topup-failed"
CAUSES = ("declined", "gave-up", "reported")


def email_key(request_id: int) -> str:
    """The outbox key of a request's failure email: decided once, ever."""
    return f"topup-failed/{request_id}"


def failure_context(
    request: Request,
    subject: Subject,
    rule: CompiledRule | None,
    reason: str,
    cause: str,
    now: datetime,
    *,
    extras: Extras,
    default_locale: str,
    default_timezone: str,
    email: EmailSettings | None = None,
) -> dict[str, Any]:
    """Everything a ``topup-failed`` template may use (see the module docstring): the keys every
    balance email has, from ``extras.usage`` and the usage settings in ``extras`` (``email`` from
    the ``email:`` settings given, else their defaults), and ``topup``."""
    context = balance_context(
        subject,
        now,
        request.rule_id,
        rule.description if rule else "",
        extras,
        default_locale=default_locale,
        default_timezone=default_timezone,
        email=email,
    )
    context["topup"] = {
        "id": request.id,
        "amount": Money(request.amount, context["currency"]),
        "requested_at": request.created_at,
        "attempts": request.attempts,
        "reason": reason,
        "cause": cause,
    }
    return context


def load_subject(conn: Connection, account_id: str, currency: str) -> Subject | None:
    """The account with its balance in ``currency`` now (0 when it has none); None if it is gone."""
    account, balance = ACCOUNT_TABLE.c, BALANCE_TABLE.c
    held = (balance.account_id == account.id) & (balance.currency == currency)
    row = conn.execute(
        select(
            account.id,
            account.name,
            account.owner_email,
            account.locale,
            account.timezone,
            account.billing,
            account.parent_id,
            account.labels,
            balance.amount,
        )
        .select_from(ACCOUNT_TABLE.outerjoin(BALANCE_TABLE, held))
        .where(account.id == account_id)
    ).first()
    if row is None:
        return None
    return Subject(
        row.id,
        currency,
        int(row.amount or 0),
        row.name,
        row.owner_email,
        row.locale,
        row.timezone,
        row.billing,
        row.parent_id,
        dict(row.labels or {}),
    )


def failure_message(
    conn: Connection,
    templates: TemplateSet,
    rule: CompiledRule | None,
    settings: Settings,
    request: Request,
    reason: str,
    cause: str,
    now: datetime,
) -> list[outbox.NewMessage]:
    """The failure email of ``request``, rendered with the rule's ``topup.template``
    (``topup-failed`` when the rule is gone), to whom the rule notifies (the owner
    when the rule is gone), and a row for each channel the rule names (a ``topup.failed``
    event). Empty when the account is gone or nobody is to be told.

    A template that fails to render with these data is logged, and a plain
    message stands in for it: the owner is told either way.
    """
    subject = load_subject(conn, request.account_id, request.currency)
    if subject is None:
        log.error(
            "top-up request %d failed, but account %s is gone: no email", request.id, request.account_id
        )
        return []
    to = _recipients(conn, rule, subject)
    channels = rule.channels if rule is not None else ()
    if not to and not channels:
        log.warning(
            "top-up request %d failed; rule %s notifies nobody: no email", request.id, request.rule_id
        )
        return []
    extras = _usage_extras(conn, settings, request, now)
    context = failure_context(
        request,
        subject,
        rule,
        reason,
        cause,
        now,
        extras=extras,
        default_locale=settings.defaults.locale,
        default_timezone=settings.defaults.timezone,
        email=settings.email,
    )
    template = (rule.topup_template if rule else None) or DEFAULT_TEMPLATE
    parts, chat = _rendered(templates, template, context, request, settings, channels)
    email = outbox.NewMessage(
        idem_key=email_key(request.id),
        kind=KIND,
        sender=settings.delivery.sender,
        recipients=to,
        subject=parts[0],
        text=parts[1],
        html=parts[2],
        rule_id=request.rule_id,
        account_id=request.account_id,
        currency=request.currency,
    )
    event = partial(failure_event, request, subject, reason, cause, extras, now)
    return fan_out(email, channels, settings.channels, event, lambda: chat)


def _rendered(
    templates: TemplateSet,
    template: str,
    context: dict[str, Any],
    request: Request,
    settings: Settings,
    channels: tuple[str, ...],
) -> tuple[tuple[str, str, str | None], str | None]:
    """The email's subject, text and HTML, and the chat text when a chat channel is named; a
    plain message when the template fails (logged)."""
    try:
        rendered = templates.render(template, context, chat=wants_chat(channels, settings.channels))
    except RenderError as exc:
        log.error("top-up request %d: %s; sending a plain failure email instead", request.id, exc.problem)
        return _plain(context, settings.defaults.locale), None
    return (rendered.subject, rendered.text, rendered.html), rendered.chat


def failure_event(
    request: Request, subject: Subject, reason: str, cause: str, extras: Extras, now: datetime
) -> Event:
    """The ``topup.failed`` event of ``request``: the balance, the recharge asked for, why it failed."""
    currency = request.currency
    adu = extras.usage.adu if extras.usage is not None else None
    data = {
        "account": {"id": subject.account_id, "name": subject.name, "parent_id": subject.parent_id},
        "currency": currency,
        "balance": amount(subject.amount, currency),
        "requested": amount(request.amount, currency),
        "rule": request.rule_id,
        "request_id": request.id,
        "cause": cause,
        "reason": reason,
        "average_daily_usage": amount(adu, currency),
    }
    return Event("topup.failed", now, data)


def _usage_extras(conn: Connection, settings: Settings, request: Request, now: datetime) -> Extras:
    """The usage figures of the request's balance with the settings they are shown with."""
    u = settings.usage
    key = (request.account_id, request.currency)
    # The summary the alert emails quote, so the owner reads one average; computed now
    # as a refresh would when the daemon has none for this balance yet.
    figures = usage.current(conn, [key], [u.window_days], now, u.min_history)[u.window_days].get(key)
    return Extras(
        usage=figures, recommend_days=u.recommend_days, window_days=u.window_days, min_history=u.min_history
    )


def _recipients(conn: Connection, rule: CompiledRule | None, subject: Subject) -> tuple[str, ...]:
    if rule is None:
        return (subject.owner_email.strip(),) if subject.owner_email.strip() else ()
    prefs = load_preferences(conn, [subject.key]).get(subject.key) if rule.notify_preferences else None
    owners = (
        subaccount_owners(conn, [subject.account_id]).get(subject.account_id, ())
        if rule.notify_subaccount_owners
        else ()
    )
    extras = Extras(preference_recipients=prefs.recipients if prefs else (), subaccount_owners=owners)
    return recipients(rule, subject, extras)


def _plain(context: dict[str, Any], default_locale: str) -> tuple[str, str, None]:
    locale = context.get("locale") or default_locale
    topup, account = context["topup"], context["account"]
    amount, balance = (plain_spaces(m.format(locale)) for m in (topup["amount"], context["balance"]))
    subject = f"{account['name']}: automatic recharge of {amount} failed"
    text = (
        f"Hello {account['name']},\n\n"
        f"The automatic recharge of {amount} for your {context['currency']} balance failed: "
        f"{topup['reason']}.\n"
        f"Your balance is {balance}. Please add credit yourself, or update your payment method.\n\n"
        f"Account:  {account['id']}\nRequest:  {topup['id']}\n"
    )
    return subject, text, None


def record_failure(
    conn: Connection,
    templates: TemplateSet,
    rule: CompiledRule | None,
    settings: Settings,
    request: Request,
    reason: str,
    cause: str,
    now: datetime,
    domain: str,
) -> outbox.NewMessage | None:
    """Put the failure email of ``request`` (already closed as failed, in this transaction)
    in the outbox, unless its key is there already; return the message recorded."""
    assert request.status == FAILED
    key = email_key(request.id)
    keys = [key, *(outbox.channel_key(key, name) for name in (rule.channels if rule else ()))]
    if any(conn.execute(outbox.select_by_key(k)).first() is not None for k in keys):
        return None
    messages = failure_message(conn, templates, rule, settings, request, reason, cause, now)
    outbox.add(conn, messages, now, domain)
    return next((m for m in messages if m.channel == outbox.EMAIL), messages[0] if messages else None)


# --- samples for `check` ------------------------------------------------------------------------------

# (cause, reason, balance, currency, locale, usage history, usage in the window) of each sample;
# a data-only literal.
_SAMPLES: tuple[tuple[str, str, int, str, str, bool, bool], ...] = (
    ("declined", "Your card was declined (insufficient funds).", 1_850, "USD", "en_US", True, True),
    (
        "gave-up",
        "the payment platform did not accept the request after 9 attempts (last: HTTP 503)",
        4_000,
        "USD",
        "en_US",
        False,
        True,
    ),
    ("reported", "charge reversed by the bank", -37, "USD", "en_US", True, False),
    (
        "no-credit",
        "the payment platform accepted the request but no top-up arrived within 1d",
        900,
        "USD",
        "en_US",
        True,
        True,
    ),
    ("declined", "Card expired", 450_000, "INR", "en_IN", True, True),
)


def sample_contexts() -> list[dict[str, Any]]:
    """Realistic ``topup-failed`` contexts: a declined card with usage known, a platform that
    never answered (too short a history for an estimate), an operator's report with the balance
    used up and no usage, one accepted but never credited, and one in en_IN rupees."""
    return [_sample_context(*sample) for sample in _SAMPLES]


def _sample_context(
    cause: str, reason: str, amount: int, currency: str, locale: str, history: bool, used: bool
) -> dict[str, Any]:
    now = SAMPLE_NOW
    request = Request(
        id=17,
        idem_key=f"topup/auto-recharge/acme-42/{currency}/5000/2",
        rule_id="auto-recharge",
        account_id="acme-42",
        currency=currency,
        amount=20_000 if currency == "USD" else 1_500_000,
        status=FAILED,
        attempts=9 if cause == "gave-up" else 1,
        next_attempt_at=now,
        last_error=reason,
        hook_response=None,
        created_at=now - timedelta(hours=6),
        updated_at=now,
    )
    subject = Subject(
        "acme-42",
        currency,
        amount,
        "Acme Messaging Ltd",
        "billing@acme.example",
        locale,
        "Asia/Kolkata" if currency == "INR" else "America/New_York",
        "prepaid",
        None,
        {"tier": "gold"},
    )
    figures = sample_usage(now, history=history, used=used)
    if currency != "USD":
        figures = usage.Figures(
            "acme-42", currency, 30, 4_500_000, Decimal(30), figures.first_at, 150_000, usage.OK
        )
    return failure_context(
        request,
        subject,
        None,
        reason,
        cause,
        now,
        extras=Extras(usage=figures),
        default_locale="en_US",
        default_timezone="UTC",
    )
