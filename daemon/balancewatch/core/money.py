"""Money: integer minor units inside, major units at the edges.

Amounts are stored and compared as integers in the currency's minor unit
(cents for USD, yen for JPY, fils for BHD). YAML, the CLI and emails speak
major units; conversion goes through :class:`decimal.Decimal` and never
through ``float``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from babel import Locale, UnknownLocaleError
from babel.numbers import format_currency, get_currency_precision, is_currency

# Far above any real balance, far below what a 64-bit column holds (with room for re-arm bands).
MAX_MINOR = 10**15
# The minor-unit digits assumed for a code that is not ISO 4217: Babel's default precision.
UNKNOWN_CURRENCY_DIGITS = 2


class MoneyError(ValueError):
    """An amount or currency that cannot be represented exactly."""


def check_currency(code: str) -> str:
    """Return ``code`` if it is an ISO 4217 currency Babel knows, else raise MoneyError."""
    if isinstance(code, str) and is_currency(code):
        return code
    if isinstance(code, str) and code.strip().upper() != code and is_currency(code.strip().upper()):
        raise MoneyError(f"{code!r}: write currency codes in capitals: {code.strip().upper()}")
    raise MoneyError(f"{code!r} is not an ISO 4217 currency code (e.g. USD, INR, EUR)")


# Bounded: the codes come from rows the billing platform writes, not only from configuration.
@lru_cache(maxsize=1024)
def exponent(currency: str) -> int:
    """Number of minor-unit digits: 2 for USD, 0 for JPY, 3 for BHD.

    Total: a code that is not ISO 4217 (a billing platform may write one) has 2,
    as Babel formats it. Checking a code is :func:`check_currency`'s job.
    """
    if isinstance(currency, str) and is_currency(currency):
        return get_currency_precision(currency)
    return UNKNOWN_CURRENCY_DIGITS


def to_minor(amount: Decimal | int | str, currency: str) -> int:
    """Convert a major-unit amount to integer minor units.

    Raises MoneyError when the currency is not ISO 4217, the amount is not a number, has more decimals
    than the currency allows (``10.5`` JPY, ``1.001`` USD), or is larger than
    MAX_MINOR minor units.
    """
    check_currency(currency)  # amounts are typed for real currencies only
    if isinstance(amount, float):
        raise MoneyError(f"{amount!r} is a float; money must be written exactly")
    try:
        value = Decimal(str(amount).strip().replace("_", ""))
    except InvalidOperation:
        raise MoneyError(f"{amount!r} is not a number") from None
    if not value.is_finite():
        raise MoneyError(f"{amount!r} is not a finite amount")
    digits = exponent(currency)
    if value.adjusted() > 18:
        raise _too_large(amount, currency)
    scaled = value.scaleb(digits)
    if scaled != scaled.to_integral_value() or (value and value.adjusted() < -digits):
        raise MoneyError(f"{amount} {currency} has more decimals than {currency} allows ({digits})")
    minor = int(scaled)
    if abs(minor) > MAX_MINOR:
        raise _too_large(amount, currency)
    return minor


def _too_large(amount: object, currency: str) -> MoneyError:
    most = to_major(MAX_MINOR, currency)
    return MoneyError(f"{amount} {currency} is too large; amounts are at most {most:,} {currency}")


def to_major(minor: int, currency: str) -> Decimal:
    """Convert integer minor units back to an exact major-unit Decimal."""
    return Decimal(minor).scaleb(-exponent(currency))


@lru_cache(maxsize=4096)
def canonical_locale(name: str) -> str | None:
    """Babel's identifier for ``name`` in any common spelling, or None when Babel does not know it.

    Hyphens or underscores, any case, a POSIX encoding or modifier: ``en-IN``,
    ``en_in``, ``EN-in`` and ``en_IN.UTF-8`` are all ``en_IN``; ``de`` stays ``de``.
    Never raises (the name may come from a row the billing platform wrote).
    """
    if not isinstance(name, str):
        return None
    text = name.strip().split("@", 1)[0].split(".", 1)[0]
    if not text:
        return None
    try:
        return str(Locale.parse(text.replace("-", "_"), sep="_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def check_locale(name: str) -> str:
    """Babel's identifier for ``name`` (``en-IN``: ``en_IN``); raises MoneyError if Babel does not know it."""
    found = canonical_locale(name)
    if found is None:
        raise MoneyError(f"{name!r} is not a locale Babel knows (e.g. en_US, en_IN, de_DE)")
    return found


@lru_cache(maxsize=16_384)
def format_money(minor: int, currency: str, locale: str) -> str:
    """Format minor units in ``locale``: 1234567850 INR in en_IN is ``₹1,23,45,678.50``.

    Total, so that no bad value written by the billing platform can stop an email
    or a command after it committed: a code that is not ISO 4217 is shown with
    itself as the symbol and 2 decimals (``XYZ12.50``), and a locale Babel does
    not know gives the plain ``12.50 XYZ``.
    """
    known = canonical_locale(locale)
    major = to_major(minor, currency)
    if known is None:
        return f"{major} {currency}"
    try:
        return format_currency(major, currency, locale=known)
    except Exception:  # Babel on a code no ISO table has: any failure means "format it plainly"
        return f"{major} {currency}"


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in one currency, carried into templates."""

    minor: int
    currency: str

    @property
    def major(self) -> Decimal:
        return to_major(self.minor, self.currency)

    def format(self, locale: str) -> str:
        return format_money(self.minor, self.currency, locale)

    def __str__(self) -> str:
        return f"{self.major} {self.currency}"
