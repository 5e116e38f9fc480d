"""JSON Schema for editors: what each custom type of a rule file accepts, as the validators in
rules/fields.py and rules/models.py do.

``balancewatch schema`` publishes these through the models' ``WithJsonSchema`` and
``json_schema_extra`` hooks; what a schema cannot check is listed in rules/schema.py.
A field with a default_factory states its default in json_schema_extra: pydantic leaves it out.
The schemas below are data: long literals on purpose.
"""

from __future__ import annotations

from typing import Any

MAX_BAND_PERCENT = 1000

_NUMBER = r"\+?([0-9][0-9_,]*(\.[0-9_]*)?|\.[0-9][0-9_]*)([eE][+-]?[0-9]+)?"
AMOUNT_TEXT = rf"^\s*{_NUMBER}\s*$"
PERCENT_TEXT = rf"^\s*{_NUMBER}\s*%\s*$"
CURRENCY_CODE = r"^[A-Z]{3}$"
_DURATION_PART = r"[0-9]+(\.[0-9]+)? *([mM][sS]|[sSmMhHdDwW])"
DURATION_TEXT = rf"^ *(({_DURATION_PART} *)+|[0-9]+(\.[0-9]+)? *)$"
_RECIPIENT = (
    r"(owner|preferences|subaccount-owners|channel:[a-z0-9][a-z0-9_-]{0,15}|[^\s@,;]+@[^\s@,;]+\.[^\s@,;]+)"
)
RECIPIENTS_TEXT = rf"^[\s,]*{_RECIPIENT}(\s*,[\s,]*{_RECIPIENT})*[\s,]*$"
_TEXT_OR_NUMBER = {"type": ["string", "integer"]}

AMOUNT_SCHEMA: dict[str, Any] = {
    "description": "An amount in major units (dollars, rupees), zero or more: 100, 12.50. "
    "Quote it to group digits: '1,000'.",
    "anyOf": [
        {"type": "number", "minimum": 0},
        {"type": "string", "pattern": AMOUNT_TEXT, "patternErrorMessage": "write a number such as 100"},
    ],
}
CURRENCY_SCHEMA: dict[str, Any] = {
    "description": "An ISO 4217 currency code in capitals: USD, INR, EUR, JPY "
    "(balancewatch check verifies that the currency exists).",
    "type": "string",
    "pattern": CURRENCY_CODE,
    "patternErrorMessage": "write a currency code in capitals, e.g. USD",
    "examples": ["USD", "INR", "EUR"],
}
USAGE_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"const": "average-daily-usage", "description": "One day of average usage (over 30 days)."},
        {
            "type": "object",
            "description": "times x the average daily usage over days: {average-daily-usage: {days: 30, "
            "times: 2}}.",
            "properties": {
                "average-daily-usage": {
                    "anyOf": [
                        {"type": "null"},
                        {
                            "type": "object",
                            "properties": {
                                "days": {"type": "integer", "minimum": 1, "maximum": 365},
                                "times": AMOUNT_SCHEMA,
                            },
                            "additionalProperties": False,
                        },
                    ]
                }
            },
            "required": ["average-daily-usage"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "description": "Less than N days of usage left: {runway: 3d} or {runway: {days: 3, window: 30}}.",
            "properties": {"runway": {}},
            "required": ["runway"],
            "additionalProperties": False,
        },
    ],
}
LADDER_ITEM_SCHEMA: dict[str, Any] = {"anyOf": [AMOUNT_SCHEMA, USAGE_SCHEMA]}
LADDER_SCHEMA: dict[str, Any] = {
    "description": "Thresholds in major units, each once: [250, 100, 10]; an item may follow usage: "
    "[average-daily-usage, 100, 10].",
    "type": "array",
    "items": LADDER_ITEM_SCHEMA,
    "minItems": 1,
    "uniqueItems": True,
}
BELOW_SCHEMA: dict[str, Any] = {
    "anyOf": [
        LADDER_SCHEMA,
        USAGE_SCHEMA,
        {"const": "owner", "description": "The owner's own thresholds (owner preferences)."},
        {
            "description": "Thresholds per currency: {USD: [250, 100, 10], INR: [20000, 8000, 800]}.",
            "type": "object",
            "propertyNames": {"pattern": CURRENCY_CODE},
            "additionalProperties": LADDER_SCHEMA,
            "minProperties": 1,
        },
    ],
}
REMIND_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "type": "string",
            "pattern": DURATION_TEXT,
            "patternErrorMessage": "write a duration such as 30m, 24h, 1d or 1h30m",
        },
        {"type": "number", "minimum": 60, "description": "seconds"},
    ],
    "examples": ["24h", "12h", "1d"],
}
PERCENT_NUMBER_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": MAX_BAND_PERCENT},
        {"type": "string", "pattern": AMOUNT_TEXT, "patternErrorMessage": "write a number such as 10"},
    ],
}
PERCENT_SCHEMA: dict[str, Any] = {
    "description": "A percentage of the step: 10%.",
    "type": "string",
    "pattern": PERCENT_TEXT,
    "patternErrorMessage": "write a percentage such as 10% or an amount such as 5",
}
RECIPIENTS_SCHEMA: dict[str, Any] = {
    "anyOf": [
        {
            "description": "owner, addresses and channels, comma-separated: "
            "'owner, ops@example.com, channel:ops-chat'.",
            "type": "string",
            "pattern": RECIPIENTS_TEXT,
        },
        {
            "type": "array",
            "minItems": 1,
            "items": {
                "description": "owner (the account owner's address), an email address, or a channel "
                "of the config (channel:NAME).",
                "type": "string",
                "pattern": RECIPIENTS_TEXT,
                "examples": ["owner", "ops@example.com", "channel:ops-chat"],
            },
        },
    ],
    "examples": [["owner"], ["owner", "ops@example.com"], ["owner", "channel:ops-chat"]],
}
TEXTS_SCHEMA: dict[str, Any] = {
    "anyOf": [_TEXT_OR_NUMBER, {"type": "array", "items": _TEXT_OR_NUMBER}],
}

# What validation checks across fields, for editors: a condition, and a ladder's currency.
RULE_SCHEMA_EXTRA: dict[str, Any] = {
    "anyOf": [
        {"required": ["below"]},
        {"required": ["exhausted"], "properties": {"exhausted": {"const": True}}},
    ],
    "if": {"required": ["below"], "properties": {"below": {"type": "array"}}},
    "then": {"required": ["accounts"], "properties": {"accounts": {"required": ["currency"]}}},
}


def rearm_schema(schema: dict[str, Any]) -> None:
    """Band is also written as "10%" or 5; keep its mapping form (a reference) as the third way."""
    ref = schema.pop("$ref")
    schema["anyOf"] = [PERCENT_SCHEMA, AMOUNT_SCHEMA, {"$ref": ref}]


def may_be_empty(schema: dict[str, Any]) -> None:
    """``alerts:`` with nothing after it is read as no rules."""
    listed = {key: schema.pop(key) for key in ("type", "items")}
    schema["anyOf"] = [listed, {"type": "null"}]
