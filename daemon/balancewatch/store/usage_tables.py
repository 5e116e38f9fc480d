"""The tables of average daily usage, written by balancewatch alone (``evaluate.usage``,
``evaluate.usage_delta``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, BigInteger, Column
from sqlmodel import Field, SQLModel

from balancewatch.store.columns import UTCDateTime, core_table


class UsageSummary(SQLModel, table=True):
    """Average daily usage per paying account, currency and window, refreshed by the daemon.

    ``adu`` is null when there is not enough history (``status`` says why):
    ``ok``, ``short-history`` (fewer days than the minimum since the first
    entry) or ``no-usage`` (no usage in the window).
    """

    __tablename__ = "usage_summary"

    account_id: str = Field(primary_key=True, max_length=64)
    currency: str = Field(primary_key=True, max_length=3)
    window_days: int = Field(primary_key=True)
    usage_total: int = Field(default=0, sa_type=BigInteger)
    first_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    days_counted: float = 0.0  # a span of time, not money
    adu: int | None = Field(default=None, sa_type=BigInteger)
    status: str = Field(default="ok", max_length=16)
    computed_at: datetime = Field(sa_type=UTCDateTime)


class UsageMember(SQLModel, table=True):
    """Usage of one account itself (not its family) in a window ending at the last refresh.

    ``used`` is the sum of its usage debits (minor units, positive), ``entries`` how many.
    Kept up to date from new ledger entries (``evaluate.usage_delta``) so a refresh need
    not read the whole window again; rebuilt from it by each full refresh.
    """

    __tablename__ = "usage_member"

    account_id: str = Field(primary_key=True, max_length=64)
    currency: str = Field(primary_key=True, max_length=3)
    window_days: int = Field(primary_key=True)
    used: int = Field(default=0, sa_type=BigInteger)
    entries: int = Field(default=0, sa_type=BigInteger)


class UsageMark(SQLModel, table=True):
    """How far ``usage_member`` and ``usage_summary`` have read the ledger: one row.

    ``last_entry_id``: every entry up to it was counted, except the ``gaps`` (ids not
    visible then, perhaps in a transaction not yet committed), each with when it was
    first missed. ``shape`` holds the windows and minimum history the figures are for.
    """

    __tablename__ = "usage_mark"

    name: str = Field(primary_key=True, max_length=16)
    marked_at: datetime = Field(sa_type=UTCDateTime)
    full_at: datetime = Field(sa_type=UTCDateTime)
    last_entry_id: int = Field(default=0, sa_type=BigInteger)
    shape: str = Field(default="", max_length=200)
    gaps: list[list[object]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


USAGE_SUMMARY_TABLE = core_table(UsageSummary)
USAGE_MEMBER_TABLE = core_table(UsageMember)
USAGE_MARK_TABLE = core_table(UsageMark)
