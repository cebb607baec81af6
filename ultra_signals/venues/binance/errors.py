"""Errors of the venue client: what the caller must do differs, so each case is its own type."""

from __future__ import annotations

# Codes Binance documents (error-code page of USDⓈ-M; general 10xx codes shared with spot).
UNKNOWN_EXECUTION = (-1000, -1001, -1006, -1007)  # "execution status unknown": query before any retry
INVALID_TIMESTAMP = -1021
INVALID_SIGNATURE = -1022
LISTEN_KEY_MISSING = -1125
UNKNOWN_ORDER = -2011
ORDER_DOES_NOT_EXIST = -2013
BAD_API_KEY = -2015
MARGIN_INSUFFICIENT = -2019
REDUCE_ONLY_REJECTED = -2022
NO_NEED_TO_CHANGE_MARGIN_TYPE = -4046
NO_NEED_TO_CHANGE_POSITION_SIDE = -4059
DUPLICATE_CLIENT_ID = -4116
ALGO_ORDER_REQUIRED = -4120


class VenueError(RuntimeError):
    """Binance refused the request (its code and message), or could not be reached for good.

    Messages carry method, path, HTTP status, Binance's code and message: never the query string, the
    signature, the API key or the secret.
    """

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


class UnknownOutcome(VenueError):
    """A write (order, cancel) whose result is unknown: timeout, dropped connection, 5xx, -1001/-1006/-1007.

    The request may have been executed.  Never send it again blindly: query by client id first.
    """


class RateLimited(VenueError):
    """429 with a ``Retry-After`` longer than we are willing to wait; nothing was executed."""


class IpBanned(VenueError):
    """418: this IP is banned until ``until_ms``.  Trading must halt; every further call fails fast."""

    def __init__(self, message: str, until_ms: int) -> None:
        super().__init__(message, -1003, 418)
        self.until_ms = until_ms
