"""Brokers: one interface, a paper (what-if) implementation and Binance USDT-M futures."""
