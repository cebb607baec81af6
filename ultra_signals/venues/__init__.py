"""Venue clients: one module per exchange, below every room that talks to an exchange (sources, execution, apps)."""
