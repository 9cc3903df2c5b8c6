"""Redis probe: the server's clock through TIME, bracketed by two local clock reads."""

from __future__ import annotations

from .model import Reading


class RedisClock:
    """Reads one Redis server's clock; keeps its connection open between reads."""

    name: str
    """``host:port/db`` of the server, never with its credentials."""

    def __init__(self, url: str, *, samples: int = 3, timeout: float = 2.0) -> None:
        """Prepare a client for ``redis://`` or ``rediss://`` URL (password, db)."""
        raise NotImplementedError

    async def read(self) -> Reading:
        """Return the best of ``samples`` TIME exchanges.

        Raises ProbeAuthError (wrong password), ProbeConnectionError, ProbeTimeoutError.
        """
        raise NotImplementedError

    async def close(self) -> None:
        """Close the connection."""
        raise NotImplementedError
