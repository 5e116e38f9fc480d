"""Delivery: outbox rows out through a transport (SMTP, or ``.eml`` files)."""
