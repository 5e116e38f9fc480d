"""Values the billing platform writes, made safe to format with.

The platform writes ``account.locale``, ``account.timezone`` and the currency
of ``balance`` and ``ledger_entry`` rows; nothing checks them on the way in.
Everything that formats money or dates for an account turns the raw column
values into trusted ones here:

- a locale in any common spelling (``en-IN``, ``en_in``, ``en_IN.UTF-8``) is
  Babel's identifier (``en_IN``); a time zone is its IANA name, whitespace and
  letter case forgiven (`` asia/kolkata`` is ``Asia/Kolkata``);
- NULL means "the configured default", silently;
- anything else (a locale Babel does not know, an unknown zone, an empty
  string) is replaced by the configured default, and a warning says so, once
  per account, field and value in a process, not at every cycle;
- a currency that is not ISO 4217 is kept (its alerts still go out, formatted
  as the code with 2 decimals), with a warning once per account and code.

Each warning also counts in :data:`FALLBACKS` (by field), which the daemon
exports as ``balancewatch_platform_data_fallbacks_total``.

An alert is never held back by these values: a bad one costs a warning, not an email.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from babel.numbers import is_currency

from balancewatch.core.money import UNKNOWN_CURRENCY_DIGITS, canonical_locale

log = logging.getLogger(__name__)

LOCALE, TIMEZONE, CURRENCY = "locale", "timezone", "currency"
WARNED_LIMIT = 10_000


class WarnedOnce:
    """A thread-safe, bounded record of what was warned about: ``first(key)`` is True once per key.

    At most ``limit`` keys are kept, least recently seen forgotten first: a
    forgotten key is warned about again, which costs a log line, never memory.
    """

    def __init__(self, limit: int = WARNED_LIMIT) -> None:
        self._limit = limit
        self._seen: OrderedDict[Hashable, None] = OrderedDict()
        self._lock = threading.Lock()

    def first(self, key: Hashable) -> bool:
        """True the first time ``key`` is seen (or the first time since it was forgotten)."""
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            while len(self._seen) > self._limit:
                self._seen.popitem(last=False)
            return True

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()


WARNED = WarnedOnce()


class FallbackCounts:
    """Thread-safe counts of the values warned about, by field (locale, timezone, currency)."""

    def __init__(self) -> None:
        self._counts = dict.fromkeys((LOCALE, TIMEZONE, CURRENCY), 0)
        self._lock = threading.Lock()

    def add(self, field: str) -> None:
        with self._lock:
            self._counts[field] += 1

    def snapshot(self) -> dict[str, int]:
        """Every field with its count so far (0 for fields never warned about)."""
        with self._lock:
            return dict(self._counts)


FALLBACKS = FallbackCounts()


def account_locale(raw: str | None, default: str, account_id: str) -> str:
    """The locale to format for ``account_id`` in: Babel's identifier for ``raw``, else ``default``.

    ``raw`` is ``account.locale`` as stored; NULL falls back silently, a value
    Babel does not know (or an empty one) with one warning per account and value.
    """
    hint = "is not a locale Babel knows (e.g. en_US, en_IN, de_DE)"
    return _trusted(raw, default, account_id, LOCALE, canonical_locale, hint)


def account_timezone(raw: str | None, default: str, account_id: str) -> str:
    """The IANA zone to show ``account_id`` dates in: ``raw`` as a zone name, else ``default``.

    ``raw`` is ``account.timezone`` as stored; NULL falls back silently, a name
    zoneinfo does not know (or an empty one) with one warning per account and value.
    """
    hint = "is not an IANA time zone (e.g. UTC, Asia/Kolkata)"
    return _trusted(raw, default, account_id, TIMEZONE, canonical_zone, hint)


def _trusted(
    raw: str | None,
    default: str,
    account_id: str,
    field: str,
    canonical: Callable[[str], str | None],
    hint: str,
) -> str:
    if raw is None:
        return default
    found = canonical(raw)
    if found is not None:
        return found
    _fall_back(account_id, field, raw, "is empty" if not raw.strip() else hint, default)
    return default


def account_currency(code: str, account_id: str) -> str:
    """``code`` itself, warned about once per account when it is not ISO 4217.

    Money in such a code is still formatted (the code as its symbol, 2 decimals;
    see :func:`balancewatch.core.money.format_money`), so its alerts still go out.
    """
    if not _is_iso(code) and WARNED.first((account_id, CURRENCY, code)):
        FALLBACKS.add(CURRENCY)
        log.warning(
            "account %s: currency %r of its balance or ledger is not an ISO 4217 code; its amounts are "
            "shown as the code with %d decimals. Fix the currency in the balance and ledger_entry rows "
            "the billing platform writes for this account (said once per process)",
            account_id,
            code,
            UNKNOWN_CURRENCY_DIGITS,
        )
    return code


@lru_cache(maxsize=4096)
def canonical_zone(name: str) -> str | None:
    """The IANA name of zone ``name`` (surrounding whitespace and letter case forgiven), or None."""
    if not isinstance(name, str):
        return None
    text = name.strip()
    if _loads(text):
        return text
    return _zone_names().get(text.lower())


def _loads(name: str) -> bool:
    if not name:
        return False
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name the filesystem refuses
        return False
    return True


@cache
def _zone_names() -> dict[str, str]:
    # Read once, and only when a name did not load as written.
    return {name.lower(): name for name in available_timezones()}


@lru_cache(maxsize=1024)
def _is_iso(code: str) -> bool:
    return isinstance(code, str) and is_currency(code)


def _fall_back(account_id: str, field: str, raw: str, reason: str, default: str) -> None:
    if WARNED.first((account_id, field, raw)):
        FALLBACKS.add(field)
        log.warning(
            "account %s: %s %r %s; using the default %s instead. Fix account.%s in the account row the "
            "billing platform writes (said once per process)",
            account_id,
            field,
            raw,
            reason,
            default,
            field,
        )
