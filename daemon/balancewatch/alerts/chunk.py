"""Deciding one chunk of balances for one rule, in the caller's transaction.

Loads what the chunk needs once (step states, usage figures, preferences, open top-ups),
decides each balance with :func:`~balancewatch.evaluate.decide.decide`, builds each
notification's template context, and writes the new step states and the outbox rows together.
The rows are queued with their context: the render stage (``render/stage.py``) writes their
messages once this transaction has committed, so a chunk holds its row locks for the decision
alone, not for rendering its emails.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property, partial

from sqlalchemy import Connection, select

from balancewatch import outbox
from balancewatch.alerts.context import alert_context, idem_key, topup_key
from balancewatch.alerts.events import alert_event
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, Recorder
from balancewatch.evaluate import candidates, services, usage
from balancewatch.evaluate.decide import Decision, Kind, StepState, Transition, decide
from balancewatch.evaluate.dynamic import Preferences, load_preferences, remind_for, steps_for
from balancewatch.evaluate.load import (
    Subject,
    inhibited,
    load_states,
    load_subjects,
    subaccount_owners,
    write_states,
)
from balancewatch.liveset import LiveSet
from balancewatch.render.context import Extras, recipients
from balancewatch.render.fanout import fan_out
from balancewatch.render.packed import CHAT, EMAIL, PackError, pack
from balancewatch.rules.compiled import CompiledRule, StepSet
from balancewatch.store import topup_requests as topups
from balancewatch.store.db import is_postgres
from balancewatch.store.tables import BALANCE_TABLE

log = logging.getLogger(__name__)


@dataclass
class CycleStats:
    """What a cycle looked at and decided."""

    full: bool = False
    candidates: int = 0
    decided: Counter[str] = field(default_factory=Counter)  # rule id -> notifications
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule id, kind) -> notifications
    render_errors: list[str] = field(default_factory=list)  # contexts not stored, messages not rendered
    skipped: int = 0  # balances left undecided after repeated conflicts
    inhibited: Counter[str] = field(default_factory=Counter)  # rule id -> notifications silenced
    topups: Counter[str] = field(default_factory=Counter)  # rule id -> top-up requests recorded
    interrupted: bool = False  # stopped between chunks; the watermark did not move

    @property
    def notifications(self) -> int:
        return sum(self.decided.values())


@dataclass(frozen=True)
class Deciding:
    """What deciding needs besides the data: the live set, settings, the clock, where to count."""

    live: LiveSet
    settings: Settings
    now: datetime
    metrics: Recorder = NOOP

    @property
    def domain(self) -> str:
        return outbox.message_domain(self.settings)


@dataclass
class _Chunk:
    """What deciding a chunk needs beside the balances themselves, loaded once per chunk."""

    states: dict[candidates.Key, dict[int, StepState]]
    silenced: set[candidates.Key]
    adu: dict[tuple[str, str, int], int]
    prefs: dict[candidates.Key, Preferences]
    figures: dict[candidates.Key, usage.Figures]
    subaccount_owners: dict[str, tuple[str, ...]]
    open_topups: set[candidates.Key]
    detail: _Detail | None = None


class _Detail:
    """Unit prices seen in the ledger and usage per subaccount, for a chunk's emails: one grouped
    query each, run the first time a message's context is built (a chunk that decides
    nothing reads neither)."""

    def __init__(self, conn: Connection, keys: list[candidates.Key], now: datetime, window_days: int) -> None:
        self.conn, self.keys, self.now, self.window_days = conn, keys, now, window_days

    @cached_property
    def prices(self) -> dict[candidates.Key, dict[str, services.LedgerPrice]]:
        return services.ledger_prices(self.conn, self.keys, self.now, self.window_days)

    @cached_property
    def subaccounts(self) -> dict[candidates.Key, tuple[services.SubaccountUsage, ...]]:
        return services.subaccount_usage(self.conn, self.keys, self.now, self.window_days)

    def credits(self, key: candidates.Key, since: datetime) -> tuple[list[services.Credit], int, int]:
        """The credits of one balance after ``since``: for its restored notice only."""
        return services.credits_since(self.conn, key[0], key[1], since, self.now)


def _load_chunk(
    conn: Connection, deciding: Deciding, rule: CompiledRule, step_set: StepSet, keys: list[candidates.Key]
) -> _Chunk:
    window = deciding.settings.usage.window_days
    windows = {window, *(u.window_days for u in step_set.usage)}
    # The stored summary, and for balances it has no row for yet (new since the last refresh)
    # the figures computed now as a refresh would: the email and the usage steps agree with it.
    by_window = usage.current(conn, keys, windows, deciding.now, deciding.settings.usage.min_history)
    needs_prefs = step_set.owner or rule.notify_preferences
    return _Chunk(
        states=load_states(conn, rule.id, keys),
        silenced=inhibited(conn, rule.inhibited_by, keys),
        adu=usage.adu_of(by_window),
        prefs=load_preferences(conn, keys) if needs_prefs else {},
        figures=by_window[window],
        subaccount_owners=subaccount_owners(conn, [k[0] for k in keys])
        if rule.notify_subaccount_owners
        else {},
        open_topups=topups.open_requests(conn, keys) if rule.topup is not None else set(),
        detail=_Detail(conn, keys, deciding.now, window),
    )


def decide_in(
    conn: Connection,
    deciding: Deciding,
    rule: CompiledRule,
    step_set: StepSet,
    keys: list[candidates.Key],
    stats: CycleStats,
) -> None:
    """Decide the balances ``keys`` of ``rule``'s ``step_set`` inside ``conn``'s transaction: write
    their new step states and outbox rows, record top-up requests, and add the counts to ``stats``.

    Raises IntegrityError when a notification was decided elsewhere first (the caller rolls back
    and decides again); a message whose context cannot be stored is logged and its balance left
    as it was.
    """
    subjects = load_subjects(conn, rule, step_set, keys, lock=is_postgres(conn.engine))
    chunk = _load_chunk(conn, deciding, rule, step_set, [s.key for s in subjects])
    state_rows: list[tuple[candidates.Key, StepState]] = []
    messages: list[outbox.NewMessage] = []
    for subject in subjects:
        decided = _decide_one(conn, deciding, rule, step_set, subject, chunk, stats)
        if decided is not None:
            messages.extend(decided[0])
            state_rows.extend((subject.key, st) for st in decided[1])
    write_states(conn, rule.id, state_rows)
    outbox.add(conn, messages, deciding.now, deciding.domain)


def _decide_one(
    conn: Connection,
    deciding: Deciding,
    rule: CompiledRule,
    step_set: StepSet,
    subject: Subject,
    chunk: _Chunk,
    stats: CycleStats,
) -> tuple[list[outbox.NewMessage], tuple[StepState, ...]] | None:
    """One balance's queued messages and changed step states; None when it has no step, or
    when a message's context cannot be stored (logged; its state stays as it was)."""
    prefs = chunk.prefs.get(subject.key)
    steps = steps_for(rule, step_set, subject, chunk.adu, prefs) if step_set.dynamic else step_set.steps
    if not steps:
        return None
    remind = remind_for(rule, step_set, prefs)
    transition = decide(
        subject.amount,
        steps,
        chunk.states.get(subject.key, {}),
        deciding.now,
        remind,
        restored=rule.restored,
    )
    if subject.key in chunk.silenced and transition.decisions:
        # The state moves as usual; only the email is left out.
        stats.inhibited[rule.id] += len(transition.decisions)
        transition = replace(transition, decisions=())
    if rule.topup is not None:
        transition = _request_topups(conn, deciding, rule, subject, transition, chunk, stats)
    extras = _extras(deciding, chunk, subject, prefs)
    try:
        # Every message of this balance is queued, or none is kept: a message
        # recorded without its state change would be decided again, under the same key.
        # The email states the interval this balance is reminded at (an owner may have none).
        told = rule if remind == rule.remind or not transition.decisions else replace(rule, remind=remind)
        queued = [m for d in transition.decisions for m in _queue(deciding, told, subject, d, extras)]
    except PackError as exc:
        # Leave this balance's state untouched so a later cycle decides it again: a
        # poll while its change is inside the overlap, else the next sweep.
        log.error(
            "rule %s, account %s: %s",
            rule.id,
            subject.account_id,
            exc,
            extra={"rule": rule.id, "account": subject.account_id},
        )
        stats.render_errors.append(str(exc))
        return None
    stats.decided[rule.id] += len(transition.decisions)
    stats.kinds.update((rule.id, d.kind.value) for d in transition.decisions)
    return queued, transition.states


def _request_topups(
    conn: Connection,
    deciding: Deciding,
    rule: CompiledRule,
    subject: Subject,
    transition: Transition,
    chunk: _Chunk,
    stats: CycleStats,
) -> Transition:
    """A top-up rule's alerts become top-up requests (none while one is open); other
    notifications (restored) stay."""
    amount = rule.topup_amount(subject.currency)
    kept = []
    for d in transition.decisions:
        if d.kind is not Kind.alert:
            kept.append(d)
            continue
        if amount is None or subject.key in chunk.open_topups:
            continue
        if topups.record(
            conn,
            topup_key(rule.id, subject, d),
            rule.id,
            subject.account_id,
            subject.currency,
            amount,
            deciding.now,
        ):
            chunk.open_topups.add(subject.key)
            stats.topups[rule.id] += 1
    return replace(transition, decisions=tuple(kept))


def _extras(deciding: Deciding, chunk: _Chunk, subject: Subject, prefs: Preferences | None) -> Extras:
    detail, key = chunk.detail, subject.key
    return Extras(
        usage=chunk.figures.get(subject.key),
        recommend_days=deciding.settings.usage.recommend_days,
        preference_recipients=prefs.recipients if prefs else (),
        subaccount_owners=chunk.subaccount_owners.get(subject.account_id, ()),
        subaccounts=(lambda: detail.subaccounts.get(key, ())) if detail else (),
        window_days=deciding.settings.usage.window_days,
        min_history=deciding.settings.usage.min_history,
        prices=deciding.settings.prices.get(subject.currency, {}),
        ledger_prices=(lambda: detail.prices.get(key, {})) if detail else {},
        credits=(lambda since: detail.credits(key, since)) if detail else None,
    )


def _queue(
    deciding: Deciding, rule: CompiledRule, subject: Subject, decision: Decision, extras: Extras
) -> list[outbox.NewMessage]:
    """The rows of one decision, queued with their template context: its email, and one per
    channel the rule names. Raises PackError for a context that cannot be stored."""
    defaults = deciding.settings.defaults
    context = alert_context(
        rule,
        subject,
        decision,
        deciding.now,
        default_locale=defaults.locale,
        default_timezone=defaults.timezone,
        extras=extras,
        email=deciding.settings.email,
    )
    template = rule.restored_template if decision.kind is Kind.restored else rule.template
    email = outbox.NewMessage(
        idem_key=idem_key(rule.id, subject, decision),
        kind=decision.kind.value,
        sender=deciding.settings.delivery.sender,
        recipients=recipients(rule, subject, extras),
        subject="",
        text="",
        html=None,
        rule_id=rule.id,
        account_id=subject.account_id,
        currency=subject.currency,
        step=decision.step.amount,
        template=template or rule.template,
        context=pack(context, EMAIL),
    )
    event = partial(alert_event, rule, subject, decision, extras, deciding.now)
    configured = deciding.settings.channels
    return fan_out(email, rule.channels, configured, event, chat_context=lambda: pack(context, CHAT))


@dataclass(frozen=True)
class Preview:
    """An alert ``rule`` would send about one balance, with its template context; see ``would_send``."""

    rule: CompiledRule
    subject: Subject
    decision: Decision
    context: dict[str, object]
    recipients: tuple[str, ...]
    placed: bool  # the balance was above every step: shown as just below the highest one


def would_send(conn: Connection, deciding: Deciding, rule: CompiledRule, account_id: str) -> list[Preview]:
    """The first alert ``rule`` would send about each of ``account_id``'s balances, read only.

    Decided as if no step had fired yet (the stored step states are not read
    and nothing is written), with the account's real figures: usage, owner
    preferences, subaccounts, unit prices. A balance above every step is shown
    as it would be just below the highest step (``placed``). A balance the rule
    does not select, or one without a step, gives nothing.
    """
    out: list[Preview] = []
    for step_set in rule.step_sets:
        # The balances this step set watches: its own currency, or the rule's.
        query = select(BALANCE_TABLE.c.currency).where(
            BALANCE_TABLE.c.account_id == account_id, *candidates.currency_filter(step_set, rule.selector)
        )
        keys = [(account_id, currency) for (currency,) in conn.execute(query)]
        subjects = load_subjects(conn, rule, step_set, keys, lock=False)
        chunk = _load_chunk(conn, deciding, rule, step_set, [s.key for s in subjects])
        for subject in subjects:
            preview = _first_alert(deciding, rule, step_set, subject, chunk)
            if preview is not None:
                out.append(preview)
    return out


def _first_alert(
    deciding: Deciding, rule: CompiledRule, step_set: StepSet, subject: Subject, chunk: _Chunk
) -> Preview | None:
    prefs = chunk.prefs.get(subject.key)
    steps = steps_for(rule, step_set, subject, chunk.adu, prefs) if step_set.dynamic else step_set.steps
    if not steps:
        return None
    remind = remind_for(rule, step_set, prefs)
    placed = False
    decisions = decide(subject.amount, steps, {}, deciding.now, remind).decisions
    if not decisions:
        subject = replace(subject, amount=max(s.amount for s in steps) - 1)
        decisions = decide(subject.amount, steps, {}, deciding.now, remind).decisions
        placed = True
    alerts = [d for d in decisions if d.kind is Kind.alert]
    if not alerts:
        return None
    extras = _extras(deciding, chunk, subject, prefs)
    defaults = deciding.settings.defaults
    context = alert_context(
        rule,
        subject,
        alerts[0],
        deciding.now,
        default_locale=defaults.locale,
        default_timezone=defaults.timezone,
        extras=extras,
        email=deciding.settings.email,
    )
    return Preview(rule, subject, alerts[0], context, recipients(rule, subject, extras), placed)
