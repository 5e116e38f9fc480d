"""The kinds of message alerts send, each with the sample contexts its templates must render."""

from __future__ import annotations

from collections.abc import Mapping

from balancewatch.alerts.context import RESTORED_VARIANTS, SAMPLE_VARIANTS, sample_alert_context
from balancewatch.liveset import SampleMaker

SAMPLES: Mapping[str, SampleMaker] = {
    # A low-balance alert, a reminder, an exhausted balance, runway and usage steps...
    "alert": lambda: [sample_alert_context(variant) for variant in SAMPLE_VARIANTS],
    # The balance is back above a step that fired.
    "restored": lambda: [sample_alert_context(variant) for variant in RESTORED_VARIANTS],
}
