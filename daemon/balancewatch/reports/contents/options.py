"""The settings a report's numbers depend on."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from balancewatch.config import EmailSettings, Settings


@dataclass(frozen=True, slots=True)
class Options:
    """The settings a report depends on (``defaults.locale``, ``usage.*``, and ``email``, what
    recipients see about who sends it; None: its defaults)."""

    default_locale: str = "en_US"
    window_days: int = 30
    min_history: timedelta = timedelta(days=3)
    recommend_days: Decimal = Decimal(1)
    email: EmailSettings | None = None

    @classmethod
    def of(cls, settings: Settings) -> Options:
        """The options ``settings`` give."""
        return cls(
            settings.defaults.locale,
            settings.usage.window_days,
            settings.usage.min_history,
            settings.usage.recommend_days,
            settings.email,
        )
