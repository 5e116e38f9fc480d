"""The numbers a report shows beside its amounts: shares, bar lengths, averages, CSV cells."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from balancewatch.core.money import exponent, to_major


def percent(part: int, whole: int) -> Decimal | None:
    """``part`` of ``whole`` in percent to one decimal (half up); None when ``whole`` is not above 0."""
    if whole <= 0:
        return None
    return (Decimal(part) * 100 / whole).quantize(Decimal("0.1"), ROUND_HALF_UP)


def bar_percent(value: int, highest: int) -> int:
    """A bar's length, 0 to 100, for ``value`` against the ``highest`` bar; at least 1 when above 0."""
    if value <= 0 or highest <= 0:
        return 0
    return max(1, int((Decimal(value) * 100 / highest).to_integral_value(ROUND_HALF_UP)))


def divide(minor: int, by: int) -> int:
    """``minor`` / ``by`` in minor units, rounded half up (away from zero)."""
    return int((Decimal(minor) / by).to_integral_value(ROUND_HALF_UP)) if by else 0


def major_text(minor: int, currency: str) -> str:
    """An amount for a CSV cell: major units as a plain decimal (``-12.50``, ``1200`` JPY), as
    ``format(to_major(minor, currency), "f")`` writes it, in integer arithmetic (a CSV has a
    cell like this for every row, and a Decimal per cell was most of building one)."""
    digits = exponent(currency)
    if digits <= 0:
        return format(to_major(minor, currency), "f")
    whole, fraction = divmod(abs(minor), 10**digits)
    return f"{'-' if minor < 0 else ''}{whole}.{fraction:0{digits}d}"


def optional_int(value: int | None) -> str:
    """A count for a CSV cell: empty when there is none."""
    return "" if value is None else str(value)
