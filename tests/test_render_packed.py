"""A template context stored as text and read back (render/packed.py): what the render stage
renders from must render exactly as the context the decision built."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from balancewatch.alerts.context import RESTORED_VARIANTS, SAMPLE_VARIANTS, sample_alert_context
from balancewatch.core import shipped
from balancewatch.core.money import Money
from balancewatch.render.packed import CHAT, EMAIL, PackError, pack, unpack
from balancewatch.render.templates import load_templates

SHAPES = [(v, "USD", "en_US") for v in SAMPLE_VARIANTS + RESTORED_VARIANTS]
SHAPES += [("usage", "EUR", "de_DE"), ("runway", "INR", "en_IN"), ("crossed", "JPY", "ja_JP")]


@pytest.mark.parametrize(("variant", "currency", "locale"), SHAPES)
def test_every_alert_shape_renders_the_same_from_its_stored_context(
    variant: str, currency: str, locale: str
) -> None:
    templates = load_templates(shipped.templates_dir())
    context = sample_alert_context(variant, currency=currency, locale=locale)
    template = "balance-restored" if variant.startswith("restored") else "low-balance"

    stored, part = unpack(pack(context, CHAT))

    assert part == CHAT
    assert templates.render(template, stored, chat=True) == templates.render(template, context, chat=True)


def test_values_come_back_as_their_own_types() -> None:
    zone = ZoneInfo("Asia/Kolkata")
    values = {
        "money": Money(-1_234_567, "BHD"),
        "utc": datetime(2026, 3, 14, 9, 30, tzinfo=UTC),
        "zoned": datetime(2026, 3, 14, 9, 30, 5, 120, tzinfo=zone),
        "naive": datetime(2026, 3, 14, 9, 30),
        "day": date(2026, 2, 28),
        "decimal": Decimal("0.0075"),
        "days": Decimal("30.00"),
        "span": timedelta(days=1, seconds=5, microseconds=7),
        "list": [1, "two", None, True, 2.5],
        "tuple": (Money(1, "USD"),),
        "nested": {"deep": [{"at": date(2026, 1, 1)}]},
    }

    back, part = unpack(pack(values))

    assert part == EMAIL
    assert back == {**values, "tuple": [Money(1, "USD")]}
    assert [type(back[k]) for k in ("money", "decimal", "day", "span")] == [Money, Decimal, date, timedelta]
    assert back["zoned"].utcoffset() == timedelta(hours=5, minutes=30)
    assert str(back["days"]) == "30.00"  # the digits a Decimal shows, kept
    assert back["utc"].tzinfo == UTC


def test_platform_data_shaped_like_a_tag_stays_data() -> None:
    labels = {"$bw": "gold", "tier": "x"}
    context = {
        "labels": labels,
        "one_key": {"$bw": "text"},
        "unknown_tag": {"$bw": ["colour", "red"]},
        "bad_tag": {"$bw": ["money", "lots", "USD"]},
    }

    back, _part = unpack(pack(context))

    assert back == context


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not readable"),
        ('{"v": 99, "part": "email", "context": {}}', "version 99; this release reads 1"),
        ('{"v": 1, "part": "fax", "context": {}}', "no context or part"),
        ('{"v": 1, "part": "email", "context": []}', "no context or part"),
        ("[1, 2]", "version None"),
        ("[" * 100_000 + "]" * 100_000, "not readable"),
    ],
)
def test_text_that_is_not_a_packed_context_is_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(PackError) as refused:
        unpack(text)

    assert message in str(refused.value)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("value", [object(), {1, 2}, float("nan"), b"bytes"])
def test_a_value_no_context_holds_cannot_be_stored(value: object) -> None:
    with pytest.raises(PackError, match="the template context cannot be stored"):
        pack({"value": value})
