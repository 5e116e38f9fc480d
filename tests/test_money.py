"""Money: integers in the currency's minor unit inside, exact major units at the edges, never float."""

from __future__ import annotations

from decimal import Decimal

import pytest

from balancewatch.core import yamlfile
from balancewatch.core.money import (
    MAX_MINOR,
    Money,
    MoneyError,
    check_currency,
    check_locale,
    exponent,
    format_money,
    to_major,
    to_minor,
)


@pytest.mark.parametrize(("currency", "digits"), [("USD", 2), ("INR", 2), ("JPY", 0), ("BHD", 3), ("KWD", 3)])
def test_the_minor_unit_comes_from_babel(currency: str, digits: int) -> None:
    assert exponent(currency) == digits


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("12.50", "USD", 1250),
        ("12.5", "USD", 1250),
        ("-0.01", "USD", -1),
        ("1_000", "USD", 100_000),
        ("1500", "JPY", 1500),
        ("1.234", "BHD", 1234),
        ("1.500", "USD", 150),
        (Decimal("0.10"), "USD", 10),
        (250, "USD", 25_000),
        ("1e2", "USD", 10_000),
    ],
)
def test_major_units_become_exact_minor_units(amount: str | Decimal | int, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("minor", "currency", "major"),
    [(1250, "USD", "12.50"), (1500, "JPY", "1500"), (1234, "BHD", "1.234"), (-1, "USD", "-0.01")],
)
def test_minor_units_come_back_as_exact_decimals(minor: int, currency: str, major: str) -> None:
    value = to_major(minor, currency)
    assert type(value) is Decimal
    assert str(value) == major
    assert to_minor(value, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("1.001", "USD", "1.001 USD has more decimals than USD allows (2)"),
        ("10.5", "JPY", "10.5 JPY has more decimals than JPY allows (0)"),
        ("1.2345", "BHD", "1.2345 BHD has more decimals than BHD allows (3)"),
        ("1e-40", "USD", "1e-40 USD has more decimals than USD allows (2)"),
    ],
)
def test_an_amount_with_more_decimals_than_the_currency_is_an_error(
    amount: str, currency: str, message: str
) -> None:
    with pytest.raises(MoneyError) as caught:
        to_minor(amount, currency)
    assert str(caught.value) == message


def test_a_float_is_refused_even_when_it_looks_harmless() -> None:
    with pytest.raises(MoneyError) as caught:
        to_minor(0.1, "USD")  # type: ignore[arg-type]
    assert str(caught.value) == "0.1 is a float; money must be written exactly"


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("twelve", "'twelve' is not a number"),
        ("1,000", "'1,000' is not a number"),
        ("NaN", "'NaN' is not a finite amount"),
        ("Infinity", "'Infinity' is not a finite amount"),
    ],
)
def test_text_that_is_not_a_finite_number_is_an_error(amount: str, message: str) -> None:
    with pytest.raises(MoneyError) as caught:
        to_minor(amount, "USD")
    assert str(caught.value) == message


@pytest.mark.parametrize("amount", ["10000000000000.01", "-10000000000000.01", "1e400", "9" * 40])
def test_an_amount_beyond_the_largest_storable_is_an_error(amount: str) -> None:
    with pytest.raises(MoneyError) as caught:
        to_minor(amount, "USD")
    assert str(caught.value) == f"{amount} USD is too large; amounts are at most 10,000,000,000,000.00 USD"


def test_the_largest_amount_is_accepted() -> None:
    assert to_minor("10000000000000", "USD") == MAX_MINOR


def test_rupees_are_grouped_the_indian_way_in_en_in() -> None:
    assert format_money(1_234_567_850, "INR", "en_IN") == "₹1,23,45,678.50"


@pytest.mark.parametrize(
    ("minor", "currency", "locale", "text"),
    [
        (1_234_567_850, "INR", "en_US", "₹12,345,678.50"),
        (123_456, "JPY", "ja_JP", "￥123,456"),
        (1_234, "BHD", "en_US", "BHD1.234"),
        (-37, "USD", "en_US", "-$0.37"),
        (123_456_789, "EUR", "de_DE", "1.234.567,89\xa0€"),
    ],
)
def test_amounts_are_formatted_in_the_locale_with_the_currency_digits(
    minor: int, currency: str, locale: str, text: str
) -> None:
    assert format_money(minor, currency, locale) == text


def test_money_carries_its_currency_into_templates() -> None:
    balance = Money(8_412, "USD")
    assert (balance.major, str(balance), balance.format("en_IN")) == (Decimal("84.12"), "84.12 USD", "$84.12")


def test_yaml_decimals_are_read_as_decimal_from_the_text_as_written() -> None:
    located = yamlfile.load("a: 0.1\nb: 0.2\nc: 1_000.50\nd: 12\ne: .inf\n", "x.yaml")
    assert located.data["a"] + located.data["b"] == Decimal("0.3")
    assert located.data["c"] == Decimal("1000.50")
    assert type(located.data["a"]) is Decimal
    assert located.data["d"] == 12
    assert located.data["e"] == float("inf")  # not money: rejected wherever an amount is expected


@pytest.mark.parametrize("code", ["USD", "INR", "JPY", "BHD", "EUR"])
def test_known_iso_codes_are_accepted(code: str) -> None:
    assert check_currency(code) == code


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("usd", "'usd': write currency codes in capitals: USD"),
        ("DOLLAR", "'DOLLAR' is not an ISO 4217 currency code (e.g. USD, INR, EUR)"),
        ("", "'' is not an ISO 4217 currency code (e.g. USD, INR, EUR)"),
        (None, "None is not an ISO 4217 currency code (e.g. USD, INR, EUR)"),
    ],
)
def test_unknown_currency_codes_are_refused_with_a_hint(code: str, message: str) -> None:
    with pytest.raises(MoneyError) as caught:
        check_currency(code)
    assert str(caught.value) == message


def test_locales_may_use_a_hyphen_and_unknown_ones_are_refused() -> None:
    assert check_locale("en-IN") == "en_IN"
    with pytest.raises(MoneyError) as caught:
        check_locale("xx_YY")
    assert str(caught.value) == "'xx_YY' is not a locale Babel knows (e.g. en_US, en_IN, de_DE)"
