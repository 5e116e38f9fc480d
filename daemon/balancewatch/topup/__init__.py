"""Automatic top-up: requests to the platform to recharge a balance, and what became of them."""
