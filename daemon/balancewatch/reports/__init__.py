"""Scheduled reports: which periods are due, what each account's report contains, sending it once."""
