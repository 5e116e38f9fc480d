"""The ``balancewatch`` command line: one module per group of commands."""

from balancewatch.cli.main import main

__all__ = ["main"]
