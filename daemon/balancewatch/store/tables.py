"""The tables. Billing systems write ``account``, ``balance`` and ``ledger_entry``;
the platform's app writes ``owner_preference``; balancewatch alone writes the rest.

Money columns are integers in the currency's minor unit. Times are UTC:
``timestamptz`` on PostgreSQL, ``YYYY-MM-DD HH:MM:SS[.ffffff]`` text on SQLite.
A billing system that changes ``balance.amount`` directly must also set
``balance.updated_at`` to the current UTC time, or the change waits for the
next full sweep. See docs/schema.md.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Index,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from balancewatch.store.columns import ROW_ID as ROW_ID
from balancewatch.store.columns import UTCDateTime as UTCDateTime
from balancewatch.store.columns import core_table
from balancewatch.store.columns import utcnow as utcnow
from balancewatch.store.usage_tables import USAGE_MARK_TABLE as USAGE_MARK_TABLE
from balancewatch.store.usage_tables import USAGE_MEMBER_TABLE as USAGE_MEMBER_TABLE
from balancewatch.store.usage_tables import USAGE_SUMMARY_TABLE as USAGE_SUMMARY_TABLE
from balancewatch.store.usage_tables import UsageSummary as UsageSummary


class Account(SQLModel, table=True):
    """A customer account of the platform."""

    __tablename__ = "account"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=200)
    owner_email: str = Field(max_length=320)
    billing: str = Field(default="prepaid", max_length=16)  # prepaid | postpaid
    timezone: str | None = Field(default=None, max_length=64)  # None: the configured default
    locale: str | None = Field(default=None, max_length=32)
    labels: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    parent_id: str | None = Field(default=None, foreign_key="account.id", index=True, max_length=64)
    enabled: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Balance(SQLModel, table=True):
    """What an account holds in one currency, in minor units."""

    __tablename__ = "balance"
    __table_args__ = (
        Index("ix_balance_updated_at", "updated_at"),
        # Covers the sweep's fire query (currency, amount <= step, then the key).
        Index("ix_balance_currency_amount_account", "currency", "amount", "account_id"),
    )

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=64)
    currency: str = Field(primary_key=True, max_length=3)
    amount: int = Field(default=0, sa_type=BigInteger)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class LedgerEntry(SQLModel, table=True):
    """One credit (+) or debit (−) on an account, in minor units."""

    __tablename__ = "ledger_entry"
    __table_args__ = (
        Index("ix_ledger_account_time", "account_id", "currency", "occurred_at"),
        # Entries entering and leaving the usage window by time (``evaluate.usage_delta``).
        Index("ix_ledger_occurred_at", "occurred_at"),
        UniqueConstraint("account_id", "reference", name="uq_ledger_reference"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    account_id: str = Field(foreign_key="account.id", max_length=64)
    currency: str = Field(max_length=3)
    amount: int = Field(sa_type=BigInteger)
    kind: str = Field(max_length=16)  # usage | top-up | refund | adjustment
    service: str | None = Field(default=None, max_length=32)
    quantity: int | None = Field(default=None, sa_type=BigInteger)
    occurred_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    reference: str | None = Field(default=None, max_length=128)
    # The balance of the paying account right after this entry, when posted through balancewatch.
    balance_after: int | None = Field(default=None, sa_type=BigInteger)


class OwnerPreference(SQLModel, table=True):
    """An owner's own alert settings per currency. Disabling keeps every value.

    Up to three thresholds, in minor units, in ``threshold_1`` .. ``threshold_3``
    (any order; null for unused); ``recipients`` are extra addresses; ``remind``
    true asks for a daily reminder while the balance stays below.
    """

    __tablename__ = "owner_preference"

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=64)
    currency: str = Field(primary_key=True, max_length=3)
    threshold_1: int | None = Field(default=None, sa_type=BigInteger)
    threshold_2: int | None = Field(default=None, sa_type=BigInteger)
    threshold_3: int | None = Field(default=None, sa_type=BigInteger)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    remind: bool = False
    enabled: bool = True
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)

    @property
    def thresholds(self) -> list[int]:
        """The thresholds set, highest first."""
        values = (self.threshold_1, self.threshold_2, self.threshold_3)
        return sorted((v for v in values if v is not None), reverse=True)


class TopupRequest(SQLModel, table=True):
    """An automatic top-up asked of the platform: one per episode, kept across restarts.

    ``status``: ``pending`` (the hook has not been told yet, or is retried),
    ``requested`` (the hook accepted it; waiting for the credit), ``succeeded``
    (a top-up arrived in the ledger), ``failed`` (the hook or the platform said so).
    """

    __tablename__ = "topup_request"
    __table_args__ = (Index("ix_topup_open", "account_id", "currency", "status"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    idem_key: str = Field(max_length=255, unique=True)
    rule_id: str = Field(max_length=64)
    account_id: str = Field(max_length=64)
    currency: str = Field(max_length=3)
    amount: int = Field(sa_type=BigInteger)
    status: str = Field(default="pending", max_length=12)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)
    hook_response: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class AlertState(SQLModel, table=True):
    """The lifecycle of one threshold step of one rule for one balance.

    Keyed on the step's amount, so a changed threshold starts fresh state and
    the old row is simply no longer consulted.
    """

    __tablename__ = "alert_state"
    __table_args__ = (
        Index("ix_alert_state_reminder", "next_reminder_at"),
        # The primary key plus status: the "is this step fired?" probe never reads the row.
        Index("ix_alert_state_probe", "rule_id", "account_id", "currency", "step", "status"),
    )

    rule_id: str = Field(primary_key=True, max_length=64)
    account_id: str = Field(primary_key=True, max_length=64)
    currency: str = Field(primary_key=True, max_length=3)
    step: int = Field(primary_key=True, sa_type=BigInteger)
    status: str = Field(default="armed", max_length=8)  # armed | fired
    episode: int = 0
    reminders_sent: int = 0
    fired_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    next_reminder_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    rearmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Outbox(SQLModel, table=True):
    """Every notification decided: what was (or will be) sent to whom, and how it went."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_due", "status", "next_attempt_at"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    idem_key: str = Field(max_length=255, unique=True)
    message_id: str = Field(max_length=255)
    kind: str = Field(max_length=16)  # alert | reminder | test
    # Which channel delivers it: a transport registered for it in deliver/ (``email`` for now).
    channel: str = Field(
        default="email", sa_column=Column(String(16), nullable=False, server_default="email")
    )
    rule_id: str | None = Field(default=None, max_length=64)
    account_id: str | None = Field(default=None, max_length=64, index=True)
    currency: str | None = Field(default=None, max_length=3)
    step: int | None = Field(default=None, sa_type=BigInteger)
    sender: str = Field(default="", max_length=400)
    recipients: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    subject: str = Field(default="", sa_type=Text)
    text: str = Field(default="", sa_type=Text)
    html: str | None = Field(default=None, sa_type=Text)
    # [{filename, content_type, content}]: text files such as a report's CSV
    attachments: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]")
    )
    # For a row decided and not rendered yet (``queued``): the template to render and its context
    # (render/packed.py). The template's name stays once the message is written; the context goes.
    template: str | None = Field(default=None, max_length=255)
    context: str | None = Field(default=None, sa_type=Text)
    status: str = Field(default="pending", max_length=8)  # queued | pending | sending | sent | parked
    # How each recipient fared, by address as in ``recipients``: {"status": "sent" | "parked" |
    # "pending", "at", "error", "attempts"}. A recipient missing here has not been tried yet.
    deliveries: dict[str, dict[str, Any]] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False, server_default="{}")
    )
    attempts: int = 0
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claimed_by: str | None = Field(default=None, max_length=128)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Meta(SQLModel, table=True):
    """Small named values balancewatch keeps: the schema version, the poll watermark."""

    __tablename__ = "balancewatch_meta"

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(default="", sa_column=Column(String(400), nullable=False))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class InstanceStatus(SQLModel, table=True):
    """What each daemon instance runs and how its last reload went (``balancewatch status``)."""

    __tablename__ = "instance_status"

    instance: str = Field(primary_key=True, max_length=128)
    started_at: datetime = Field(sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime)
    live_digest: str = Field(default="", max_length=64)
    live_rules: int = 0
    live_loaded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # The rule files of the set in effect, name -> text: what `plan` compares an edit with.
    rule_files: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    reload_attempted_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    reload_ok: bool | None = None
    reload_reason: str = Field(default="", max_length=400)
    reload_error: str | None = Field(default=None, sa_type=Text)
    reloads: int = 0
    # Set when the instance shut down: whatever it still holds may be taken over at once.
    stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # Which process this is, so another one on the same machine can tell that it died
    # (procinfo.identity(); empty where that cannot be known).
    process: str | None = Field(default=None, max_length=200)
    # The balancewatch version the instance runs, and when its last poll of balances ended.
    version: str | None = Field(default=None, max_length=40)
    last_poll_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReportRun(SQLModel, table=True):
    """One report for one account and period, claimed before it is built: sent once, ever.

    ``account_id`` is ``*`` for an operators' report. ``status``: ``claimed``
    (an instance is building it until ``lease_until``; once that has passed,
    another may take it over), ``sent`` (its outbox row, ``idem_key``, was
    written with this status), ``skipped`` (nothing to report, or no
    recipient; ``note`` says which), ``failed`` (``note`` has the error;
    ``balancewatch report run`` tries it again).
    """

    __tablename__ = "report_run"
    __table_args__ = (
        UniqueConstraint("report_id", "account_id", "period_key", name="uq_report_run"),
        Index("ix_report_run_open", "report_id", "period_key", "status"),
        # Who holds claims now (checked every heartbeat): only the rows being built, a few.
        Index(
            "ix_report_run_claimed",
            "claimed_by",
            postgresql_where=text("status = 'claimed'"),
            sqlite_where=text("status = 'claimed'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=ROW_ID)
    report_id: str = Field(max_length=64)
    account_id: str = Field(max_length=64)
    period_key: str = Field(max_length=32)
    timezone: str = Field(max_length=64)
    fire_at: datetime = Field(sa_type=UTCDateTime)  # the scheduled time, or when it was asked for
    status: str = Field(default="claimed", max_length=8)  # claimed | sent | skipped | failed
    claimed_by: str = Field(default="", max_length=128)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 1
    idem_key: str | None = Field(default=None, max_length=255)
    note: str | None = Field(default=None, sa_type=Text)
    claimed_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ReportCursor(SQLModel, table=True):
    """How far the schedule of one report in one timezone has been followed.

    Every fire time up to ``processed_until`` has been sent, coalesced into a
    later one, or reported as missed; ``pending_fire`` is a fire time begun
    and not yet finished (finished after a restart, however late).
    """

    __tablename__ = "report_cursor"

    report_id: str = Field(primary_key=True, max_length=64)
    timezone: str = Field(primary_key=True, max_length=64)
    processed_until: datetime = Field(sa_type=UTCDateTime)
    pending_fire: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


SCHEMA_VERSION = 8


# One typed Core table per model, used by name in SQL built with SQLAlchemy Core:
# ``OUTBOX_TABLE.c.status``, never a letter alias.
ACCOUNT_TABLE = core_table(Account)
BALANCE_TABLE = core_table(Balance)
LEDGER_TABLE = core_table(LedgerEntry)
OWNER_PREFERENCE_TABLE = core_table(OwnerPreference)
TOPUP_REQUEST_TABLE = core_table(TopupRequest)
ALERT_STATE_TABLE = core_table(AlertState)
OUTBOX_TABLE = core_table(Outbox)
META_TABLE = core_table(Meta)
INSTANCE_STATUS_TABLE = core_table(InstanceStatus)
REPORT_RUN_TABLE = core_table(ReportRun)
REPORT_CURSOR_TABLE = core_table(ReportCursor)
