"""balancewatch: watches prepaid balances and emails the right people at the right time."""

__version__ = "0.1.0"
