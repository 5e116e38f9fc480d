"""What a top-up hook is told and what its answer means (docs/topup.md has the contract).

Both hooks get the same JSON (``payload``). The answer is classified into one of four
verdicts (:class:`HookVerdict`); the module docstring of :mod:`balancewatch.topup.hook` lists
which answers of an HTTP hook or a command give which.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import Message
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote

from balancewatch.config import shown_url
from balancewatch.core.money import to_major

MAX_STORED = 2000  # kept in topup_request.hook_response
MAX_REASON = 300
RETRYABLE_HTTP = {408, 425, 429}
MISCONFIGURED_HTTP = {401, 403, 404, 405, 407, 415}
DECLINED_STATUSES = {"failed", "declined", "refused"}


class HookVerdict(StrEnum):
    """Which of the four answers in this module's docstring a call came to."""

    accepted = "accepted"
    succeeded = "succeeded"
    declined = "declined"
    retry = "retry"


@dataclass(frozen=True, slots=True)
class HookRequest:
    """One top-up request as the hook is told about it."""

    id: int
    idem_key: str
    rule_id: str
    account_id: str
    currency: str
    amount: int  # minor units
    created_at: datetime
    attempt: int


@dataclass(frozen=True, slots=True)
class Answer:
    """What a call came to. ``reason``: for ``declined``, what the platform said (the owner
    reads it); for ``retry``, what went wrong (the operator reads it). ``response`` is the
    answer's body or the command's output, truncated, to keep with the request.
    ``misconfigured``: the hook itself needs fixing (logged as an error)."""

    outcome: HookVerdict
    reason: str = ""
    response: str | None = None
    retry_after: timedelta | None = None
    misconfigured: bool = False


class Hook(Protocol):
    """Calls the platform for one request; never raises for a failed call, answers ``retry``."""

    @property
    def name(self) -> str: ...

    def call(self, request: HookRequest) -> Answer: ...


def payload(request: HookRequest) -> dict[str, Any]:
    """The JSON both hooks receive. ``amount`` is exact major units as a string ("200.00")."""
    return {
        "id": request.id,
        "idempotency_key": request.idem_key,
        "account": request.account_id,
        "currency": request.currency,
        "amount": format(to_major(request.amount, request.currency), "f"),
        "amount_minor": request.amount,
        "rule": request.rule_id,
        "requested_at": request.created_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "attempt": request.attempt,
    }


def header_key(idem_key: str) -> str:
    """The Idempotency-Key header value: the key itself when it is printable ASCII (it is for
    ids written in ASCII), else the key percent-encoded as UTF-8."""
    if idem_key.isascii() and idem_key.isprintable():
        return idem_key
    return quote(idem_key, safe="/:@-._~")


# --- the answer ---------------------------------------------------------------------------------------


def one_line(text: str, limit: int = MAX_REASON) -> str:
    """``text`` on one line, control characters dropped, at most ``limit`` characters."""
    flat = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def json_object(text: str) -> dict[str, Any] | None:
    """``text`` parsed as a JSON object, or None when it is not one."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def stated_reason(data: Mapping[str, Any] | None) -> str:
    """The reason a JSON answer gives: ``reason``, ``message``, ``error`` (or its ``message``), ``detail``."""
    if not data:
        return ""
    for key in ("reason", "message", "error", "detail"):
        value = data.get(key)
        if isinstance(value, Mapping):
            value = value.get("message")
        if isinstance(value, str) and value.strip():
            return one_line(value)
    return ""


def answer_of_body(text: str) -> Answer:
    """The outcome of an accepted call (HTTP 2xx, exit status 0) from its body.

    A JSON object whose ``status`` is ``failed`` (or ``declined``, ``refused``) is a
    refusal with its ``reason``; ``succeeded`` means charged already; anything
    else, or no JSON at all, means accepted.
    """
    data = json_object(text)
    status = str(data.get("status", "")).lower() if data else ""
    stored = text[:MAX_STORED] or None
    if status in DECLINED_STATUSES:
        return Answer(
            HookVerdict.declined, stated_reason(data) or "the payment platform refused the charge", stored
        )
    if status == "succeeded":
        return Answer(HookVerdict.succeeded, response=stored)
    return Answer(HookVerdict.accepted, response=stored)


def answer_of_http_error(status: int, phrase: str, text: str, headers: Message | None) -> Answer:
    """The outcome of a non-2xx HTTP answer; see the module docstring."""
    stored = text[:MAX_STORED] or None
    said = f"HTTP {status} {phrase}".strip()
    detail = stated_reason(json_object(text)) or _plain_reason(text)
    if 300 <= status < 400:
        target = shown_url(headers.get("Location", "")) if headers is not None else ""
        return Answer(
            HookVerdict.retry,
            f"{said}: the hook redirects{f' to {target}' if target else ''}; "
            "set topup.hook.url to the address that answers",
            stored,
            misconfigured=True,
        )
    if status in MISCONFIGURED_HTTP:
        hint = (
            "check topup.hook.headers (credentials)" if status in (401, 403, 407) else "check topup.hook.url"
        )
        return Answer(
            HookVerdict.retry, f"{said}{f': {detail}' if detail else ''}; {hint}", stored, misconfigured=True
        )
    if status in RETRYABLE_HTTP or status >= 500:
        after = _retry_after(headers.get("Retry-After") if headers is not None else None)
        return Answer(HookVerdict.retry, f"{said}{f': {detail}' if detail else ''}", stored, after)
    return Answer(HookVerdict.declined, detail or f"the payment platform refused the charge ({said})", stored)


def _plain_reason(text: str) -> str:
    """The first line of a short plain-text body; nothing for HTML or long bodies."""
    stripped = text.strip()
    if not stripped or stripped.startswith("<") or stripped.startswith("{"):
        return ""
    first = stripped.splitlines()[0]
    return one_line(first) if len(first) <= MAX_REASON else ""


def _retry_after(value: str | None) -> timedelta | None:
    if value and value.strip().isdigit():
        return timedelta(seconds=int(value.strip()))
    return None
