"""A saved Binance ``exchangeInfo`` answer read from disk, for runs that size orders without asking the exchange.

Parsing the document into :class:`~ultra_signals.core.instruments.SymbolFilters` lives in
:mod:`ultra_signals.core.instruments`, shared with the market-data source; only the file reading is
execution's own (``execution.exchange_info_file``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ultra_signals.core.instruments import ExchangeInfoError


def load_exchange_info_file(path: str | Path) -> dict[str, Any]:
    """A saved exchangeInfo answer: plain JSON, or a recording line ``<url> -> <time>: <json>``."""
    text = Path(path).read_text(encoding="utf-8")
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    if first.startswith("{"):
        data = json.loads(text)
    else:
        idx = first.find(": {")
        if idx < 0:
            raise ExchangeInfoError(f"{path}: neither JSON nor a '<url> -> <time>: <json>' recording line")
        data = json.loads(first[idx + 2 :])
    if not isinstance(data, dict) or "symbols" not in data:
        raise ExchangeInfoError(f"{path}: no 'symbols' list: not an exchangeInfo answer")
    return data
