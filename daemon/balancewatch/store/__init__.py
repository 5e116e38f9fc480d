"""Storage: the SQLModel tables and the writes balancewatch itself makes to them."""
