"""The template designer's studio: every template rendered with realistic data, as a customer
would receive it, for ``balancewatch render`` and ``balancewatch preview``. Nothing here sends
or writes anything."""
