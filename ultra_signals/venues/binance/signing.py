"""HMAC-SHA256 signing of USDⓈ-M ``SIGNED`` (TRADE / USER_DATA) requests.

The signature covers the exact query string sent (``totalParams``), with ``timestamp`` and ``recvWindow``
appended; the server refuses a timestamp more than 1 s ahead of its clock or older than ``recvWindow``
(-1021) and a bad signature (-1022).  The secret never leaves this function.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from pydantic import SecretStr


def signed_query(params: Mapping[str, Any], secret: SecretStr, timestamp_ms: int, recv_window_ms: int) -> str:
    """``a=1&…&timestamp=…&recvWindow=…&signature=<hex>``, in the order the server will hash it."""
    q = urlencode({**params, "timestamp": timestamp_ms, "recvWindow": recv_window_ms})
    sig = hmac.new(secret.get_secret_value().encode(), q.encode(), hashlib.sha256).hexdigest()
    return f"{q}&signature={sig}"
