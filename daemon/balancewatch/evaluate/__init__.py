"""Rules + balances + alert state -> decisions. SQL finds the few balances that
need a look; a pure function decides what each one means."""
