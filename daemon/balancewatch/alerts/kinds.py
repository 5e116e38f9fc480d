"""The kinds of message alerts send, each with the samples its templates must render."""

from __future__ import annotations

from collections.abc import Mapping

from balancewatch.alerts.context import RESTORED_VARIANTS, SAMPLE_VARIANTS, sample_alert_context
from balancewatch.liveset import Sample, SampleMaker

# What each variant shows; data only.
TITLES = {
    "crossed": "first alert: the balance crossed two steps",
    "exhausted": "the balance is used up",
    "reminder": "a reminder while the balance stays low",
    "runway": "runway: the balance lasts fewer days than the step",
    "usage": "a step that follows average daily usage",
    "owner": "a threshold the owner set",
    "no-history": "too short a history to average usage",
    "no-usage": "no usage in the window",
    "restored": "the balance is back above its step",
    "restored-no-history": "restored, without usage figures",
    "restored-several": "restored after several top-ups",
}

# The first alert for other accounts: (name, title, currency, locale, account name); data only.
ACCOUNT_VARIANTS = (
    ("in-jpy", "first alert in JPY (no decimals)", "JPY", "en_US", "Acme Messaging Ltd"),
    ("in-kwd", "first alert in KWD (three decimals)", "KWD", "en_US", "Acme Messaging Ltd"),
    ("in-inr-en-in", "first alert in INR, en_IN (lakh grouping)", "INR", "en_IN", "Acme India Pvt Ltd"),
    ("in-eur-de-de", "first alert in EUR, de_DE", "EUR", "de_DE", "Acme Deutschland GmbH"),
    ("in-inr-hi-in", "first alert in INR, hi_IN", "INR", "hi_IN", "Acme India Pvt Ltd"),
    (
        "long-name",
        "first alert for an account with a very long name",
        "USD",
        "en_US",
        "The Extraordinarily Long-Named International Messaging and Telecommunications Holding Company "
        "of Greater Metropolitan Springfield (Subsidiary No. 42) Limited",
    ),
)


def alert_samples() -> list[Sample]:
    """Every shape of alert: each variant in USD and en_US, then the first alert for accounts in
    other currencies and locales and with a very long name."""
    samples = [Sample(v, TITLES[v], sample_alert_context(v)) for v in SAMPLE_VARIANTS]
    for name, title, currency, locale, account in ACCOUNT_VARIANTS:
        context = sample_alert_context("crossed", currency=currency, locale=locale, name=account)
        samples.append(Sample(name, title, context))
    return samples


def restored_samples() -> list[Sample]:
    """Every shape of restored notice."""
    return [Sample(v, TITLES[v], sample_alert_context(v)) for v in RESTORED_VARIANTS]


SAMPLES: Mapping[str, SampleMaker] = {
    # A low-balance alert, a reminder, an exhausted balance, runway and usage steps...
    "alert": alert_samples,
    # The balance is back above a step that fired.
    "restored": restored_samples,
}
