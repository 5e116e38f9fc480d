"""One evaluation cycle: candidates -> decisions -> rendered messages -> outbox.

Each chunk of balances is decided in one transaction: the new step states
and the outbox rows commit together or not at all. If another instance
decided the same thing first, the unique idempotency key refuses the insert;
the chunk is rolled back and decided again from the state now committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import cached_property

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session

from balancewatch import outbox
from balancewatch.alerts.context import alert_context, idem_key, topup_key
from balancewatch.config import Settings
from balancewatch.core.metrics import NOOP, PollKind, Recorder
from balancewatch.evaluate import candidates, services, usage
from balancewatch.evaluate.decide import Decision, Kind, Outcome, StepState, decide
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
from balancewatch.render.templates import RenderError
from balancewatch.rules.compiled import CompiledRule, StepSet
from balancewatch.store import topup_requests as topups
from balancewatch.store.db import get_meta, is_postgres, set_meta

log = logging.getLogger(__name__)

CHUNK = 500
ATTEMPTS = 3
WATERMARK = "poll_watermark"
USAGE_REFRESHED = "usage_refreshed"


@dataclass
class CycleStats:
    """What a cycle looked at and decided."""

    full: bool = False
    candidates: int = 0
    decided: Counter[str] = field(default_factory=Counter)  # rule id -> notifications
    kinds: Counter[tuple[str, str]] = field(default_factory=Counter)  # (rule id, kind) -> notifications
    render_errors: list[str] = field(default_factory=list)
    skipped: int = 0  # balances left undecided after repeated conflicts
    inhibited: Counter[str] = field(default_factory=Counter)  # rule id -> notifications silenced
    topups: Counter[str] = field(default_factory=Counter)  # rule id -> top-up requests recorded
    interrupted: bool = False  # stopped between chunks; the watermark did not move

    @property
    def notifications(self) -> int:
        return sum(self.decided.values())


@dataclass(frozen=True)
class Env:
    """What deciding needs besides the data: the live set, settings, the clock, where to count."""

    live: LiveSet
    settings: Settings
    now: datetime
    metrics: Recorder = NOOP

    @property
    def domain(self) -> str:
        return outbox.message_domain(self.settings)


def poll(
    engine: Engine,
    live: LiveSet,
    settings: Settings,
    now: datetime,
    *,
    full: bool = False,
    stopping: threading.Event | None = None,
    metrics: Recorder = NOOP,
    progressed: Callable[[], None] | None = None,
) -> CycleStats:
    """Evaluate balances changed since the last poll (minus the overlap), or all of them.

    The first poll ever is a full sweep. The watermark moves to ``now`` only
    after every chunk has committed; a cycle interrupted by ``stopping`` leaves
    it where it was, so the next cycle looks at the same changes again.
    ``metrics`` gets what was looked at and decided as each chunk commits, and the
    cycle's duration (``poll_finished``: not ok when it raised or was interrupted).
    ``progressed`` is called as each query and chunk ends: a long sweep that moves on is
    not stuck (the systemd watchdog).
    """
    started = time.monotonic()
    kind: PollKind = "sweep" if full else "poll"
    ok = False
    try:
        since = _start(engine, live, settings, now, full)
        kind = "poll" if since is not None else "sweep"
        stats = evaluate(engine, Env(live, settings, now, metrics), since, stopping, progressed)
        if stats.interrupted:
            return stats
        with engine.begin() as conn:
            # An upsert: instances starting together on a fresh database may both find no watermark.
            set_meta(conn, WATERMARK, now.isoformat(), now)
        ok = True
        return stats
    finally:
        metrics.poll_finished(kind, time.monotonic() - started, ok)


def _start(engine: Engine, live: LiveSet, settings: Settings, now: datetime, full: bool) -> datetime | None:
    """Where a cycle starts: the watermark minus the overlap, or None for a full sweep (asked for,
    the first poll ever, or the usage summary refreshed now)."""
    with Session(engine) as session:
        stored = get_meta(session, WATERMARK)
        refreshed = get_meta(session, USAGE_REFRESHED)
    windows = usage_windows(live, settings)
    if _usage_due(refreshed, windows, now, settings):
        # Thresholds that follow usage may have moved for balances that did not:
        # a fresh summary is always followed by a full sweep.
        with engine.begin() as conn:
            usage.refresh(conn, now, windows, settings.usage.min_history)
            set_meta(
                conn, USAGE_REFRESHED, json.dumps({"at": now.isoformat(), "windows": sorted(windows)}), now
            )
        full = True
    return None if full or stored is None else datetime.fromisoformat(stored) - settings.poll_overlap


def usage_windows(live: LiveSet, settings: Settings) -> set[int]:
    """The ADU windows the rules and emails need, in days."""
    return {settings.usage.window_days} | {
        u.window_days for rule in live.rules for step_set in rule.step_sets for u in step_set.usage
    }


def _usage_due(stored: str | None, windows: set[int], now: datetime, settings: Settings) -> bool:
    if stored is None:
        return True
    last = json.loads(stored)
    return (
        set(last.get("windows", [])) != windows
        or now - datetime.fromisoformat(last["at"]) >= settings.usage.refresh
        or now < datetime.fromisoformat(last["at"])
    )


def evaluate(
    engine: Engine,
    env: Env,
    since: datetime | None,
    stopping: threading.Event | None = None,
    progressed: Callable[[], None] | None = None,
) -> CycleStats:
    """Run every enabled rule of ``env.live`` over the balances changed after ``since``.

    Stops between chunks (each one committed) once ``stopping`` is set; calls ``progressed``
    after each query for candidates and each chunk decided.
    """
    moved_on = progressed or (lambda: None)
    stats = CycleStats(full=since is None)
    for rule in env.live.rules:
        if not rule.enabled:
            continue
        for step_set in rule.step_sets:
            with engine.connect().execution_options(readonly=True) as conn:
                keys = candidates.find(conn, rule, step_set, env.now, since)
            stats.candidates += len(keys)
            env.metrics.balances_evaluated(len(keys))
            moved_on()
            for chunk in candidates.chunks(keys, CHUNK):
                if stopping is not None and stopping.is_set():
                    stats.interrupted = True
                    return stats
                _decide_chunk(engine, env, rule, step_set, chunk, stats)
                moved_on()
    return stats


def _decide_chunk(
    engine: Engine,
    env: Env,
    rule: CompiledRule,
    step_set: StepSet,
    keys: list[candidates.Key],
    stats: CycleStats,
) -> None:
    for attempt in range(1, ATTEMPTS + 1):
        local = CycleStats()
        try:
            with engine.begin() as conn:
                _decide_in(conn, env, rule, step_set, keys, local)
        except IntegrityError as exc:
            if attempt == ATTEMPTS:
                _isolate(engine, env, rule, step_set, keys, stats, exc)
                return
            log.info(
                "rule %s: chunk decided elsewhere (%s); deciding again",
                rule.id,
                type(exc).__name__,
                extra={"rule": rule.id},
            )
            continue
        except OperationalError as exc:
            if attempt == ATTEMPTS:
                raise
            log.info(
                "rule %s: database busy (%s); deciding the chunk again",
                rule.id,
                type(exc).__name__,
                extra={"rule": rule.id},
            )
            continue
        stats.decided.update(local.decided)
        stats.kinds.update(local.kinds)
        stats.inhibited.update(local.inhibited)
        stats.topups.update(local.topups)
        stats.render_errors.extend(local.render_errors)
        _count(env.metrics, local)
        return


def _count(metrics: Recorder, committed: CycleStats) -> None:
    """Count what a chunk committed (a chunk rolled back and decided again is counted once)."""
    for (rule_id, kind), n in committed.kinds.items():
        metrics.notification_decided(rule_id, kind, n)
    created = sum(committed.topups.values())
    if created:
        metrics.topup_request("created", created)


def _isolate(
    engine: Engine,
    env: Env,
    rule: CompiledRule,
    step_set: StepSet,
    keys: list[candidates.Key],
    stats: CycleStats,
    exc: IntegrityError,
) -> None:
    # Only hand-edited state gets here (a notification decided before, its state
    # since deleted): decide balance by balance and skip just the ones that clash,
    # rather than stall the rest of the chunk and every rule after it.
    if len(keys) > 1:
        for key in keys:
            _decide_chunk(engine, env, rule, step_set, [key], stats)
        return
    log.error(
        "rule %s, account %s %s: skipped; a notification it would send was decided before but its "
        "alert state is missing (was alert_state edited by hand?): %s",
        rule.id,
        keys[0][0],
        keys[0][1],
        exc.orig,
        extra={"rule": rule.id, "account": keys[0][0]},
    )
    stats.skipped += 1


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
    query each, run the first time an email of the chunk is rendered (a chunk that decides
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
    conn: Connection, env: Env, rule: CompiledRule, step_set: StepSet, keys: list[candidates.Key]
) -> _Chunk:
    window = env.settings.usage.window_days
    windows = {window, *(u.window_days for u in step_set.usage)}
    # The stored summary, and for balances it has no row for yet (new since the last refresh)
    # the figures computed now as a refresh would: the email and the usage steps agree with it.
    by_window = usage.current(conn, keys, windows, env.now, env.settings.usage.min_history)
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
        detail=_Detail(conn, keys, env.now, window),
    )


def _decide_in(
    conn: Connection,
    env: Env,
    rule: CompiledRule,
    step_set: StepSet,
    keys: list[candidates.Key],
    stats: CycleStats,
) -> None:
    subjects = load_subjects(conn, rule, step_set, keys, lock=is_postgres(conn.engine))
    chunk = _load_chunk(conn, env, rule, step_set, [s.key for s in subjects])
    state_rows: list[tuple[candidates.Key, StepState]] = []
    messages: list[outbox.NewMessage] = []
    for subject in subjects:
        prefs = chunk.prefs.get(subject.key)
        steps = steps_for(rule, step_set, subject, chunk.adu, prefs) if step_set.dynamic else step_set.steps
        if not steps:
            continue
        remind = remind_for(rule, step_set, prefs)
        outcome = decide(
            subject.amount,
            steps,
            chunk.states.get(subject.key, {}),
            env.now,
            remind,
            restored=rule.restored,
        )
        if subject.key in chunk.silenced and outcome.decisions:
            # The state moves as usual; only the email is left out.
            stats.inhibited[rule.id] += len(outcome.decisions)
            outcome = replace(outcome, decisions=())
        if rule.topup is not None:
            outcome = _request_topups(conn, env, rule, subject, outcome, chunk, stats)
        extras = _extras(env, chunk, subject, prefs)
        try:
            # Every message of this balance renders, or none is kept: a message
            # recorded without its state change would be decided again, under the same key.
            # The email states the interval this balance is reminded at (an owner may have none).
            told = rule if remind == rule.remind or not outcome.decisions else replace(rule, remind=remind)
            rendered = [_render(env, told, subject, d, extras) for d in outcome.decisions]
        except RenderError as exc:
            # Leave this balance's state untouched so a later cycle decides it again: a
            # poll while its change is inside the overlap, else the next sweep.
            log.error(
                "rule %s, account %s: %s",
                rule.id,
                subject.account_id,
                exc.problem,
                extra={"rule": rule.id, "account": subject.account_id},
            )
            stats.render_errors.append(str(exc.problem))
            continue
        messages.extend(rendered)
        state_rows.extend((subject.key, st) for st in outcome.states)
        stats.decided[rule.id] += len(outcome.decisions)
        stats.kinds.update((rule.id, d.kind.value) for d in outcome.decisions)
    write_states(conn, rule.id, state_rows)
    outbox.add(conn, messages, env.now, env.domain)


def _request_topups(
    conn: Connection,
    env: Env,
    rule: CompiledRule,
    subject: Subject,
    outcome: Outcome,
    chunk: _Chunk,
    stats: CycleStats,
) -> Outcome:
    """A top-up rule's alerts become top-up requests (none while one is open); other
    notifications (restored) stay."""
    amount = rule.topup_amount(subject.currency)
    kept = []
    for d in outcome.decisions:
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
            env.now,
        ):
            chunk.open_topups.add(subject.key)
            stats.topups[rule.id] += 1
    return replace(outcome, decisions=tuple(kept))


def _extras(env: Env, chunk: _Chunk, subject: Subject, prefs: Preferences | None) -> Extras:
    detail, key = chunk.detail, subject.key
    return Extras(
        usage=chunk.figures.get(subject.key),
        recommend_days=env.settings.usage.recommend_days,
        preference_recipients=prefs.recipients if prefs else (),
        subaccount_owners=chunk.subaccount_owners.get(subject.account_id, ()),
        subaccounts=(lambda: detail.subaccounts.get(key, ())) if detail else (),
        window_days=env.settings.usage.window_days,
        min_history=env.settings.usage.min_history,
        prices=env.settings.prices.get(subject.currency, {}),
        ledger_prices=(lambda: detail.prices.get(key, {})) if detail else {},
        credits=(lambda since: detail.credits(key, since)) if detail else None,
    )


def _render(
    env: Env, rule: CompiledRule, subject: Subject, decision: Decision, extras: Extras
) -> outbox.NewMessage:
    defaults = env.settings.defaults
    context = alert_context(
        rule,
        subject,
        decision,
        env.now,
        default_locale=defaults.locale,
        default_timezone=defaults.timezone,
        extras=extras,
    )
    template = rule.restored_template if decision.kind is Kind.restored else rule.template
    rendered = env.live.templates.render(template or rule.template, context)
    return outbox.NewMessage(
        idem_key=idem_key(rule.id, subject, decision),
        kind=decision.kind.value,
        sender=env.settings.delivery.sender,
        recipients=recipients(rule, subject, extras),
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        rule_id=rule.id,
        account_id=subject.account_id,
        currency=subject.currency,
        step=decision.step.amount,
    )
