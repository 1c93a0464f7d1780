"""walletctl: look at and repair a running wallet deployment (see main.py)."""
