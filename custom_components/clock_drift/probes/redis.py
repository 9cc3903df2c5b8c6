"""Redis probe: the server's clock through TIME, bracketed by two local clock reads."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Final
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
import redis.exceptions

from .model import (
    ClockKind,
    ProbeAuthError,
    ProbeConnectionError,
    ProbeError,
    ProbeResponseError,
    ProbeTimeoutError,
    Reading,
    Sample,
    best_sample,
)

DEFAULT_PORT: Final = 6379
TIME_RESOLUTION: Final = 1e-6
"""TIME answers in whole microseconds."""
SCHEMES: Final = ("redis", "rediss", "unix")


def redis_name(url: str) -> str:
    """Return ``host:port/db`` (or ``unix:PATH/db``) for a Redis URL, no credentials."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError("a Redis URL starts with redis://, rediss:// or unix://")
    db = parse_qs(parts.query).get("db", [""])[0]
    if parts.scheme == "unix":
        return f"unix:{parts.path}/{db or 0}"
    path_db = parts.path.lstrip("/")
    host = parts.hostname or "localhost"
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{parts.port or DEFAULT_PORT}/{path_db or db or 0}"


def _secrets(url: str) -> list[str]:
    """Return a URL's credentials, raw and decoded, so that messages can omit them."""
    parts = urlsplit(url)
    found: set[str] = set()
    for value in (parts.password, parts.username):
        if value:
            found.update((value, unquote(value)))
    query = parse_qs(parts.query)
    found.update(query.get("password", []) + query.get("username", []))
    return sorted(found, key=len, reverse=True)


class RedisClock:
    """Reads one Redis server's clock; keeps its connection open between reads."""

    name: str
    """``host:port/db`` of the server, never with its credentials."""

    def __init__(self, url: str, *, samples: int = 3, timeout: float = 2.0) -> None:
        """Prepare a client for ``redis://`` or ``rediss://`` URL (password, db)."""
        try:
            self.name = redis_name(url)
        except ValueError as err:
            raise ProbeConnectionError(f"invalid Redis URL: {err}") from None
        self._secrets = _secrets(url)
        self._samples = max(samples, 1)
        self._timeout = timeout
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=0,
            # A probe reads again next cycle: no retries, which would turn a refused
            # password or a dead server into seconds of backoff inside one cycle.
            retry=Retry(NoBackoff(), 0),
            # No CLIENT SETINFO: its library version comes from a blocking read of the
            # package metadata on the event loop.
            driver_info=None,
        )

    def _scrub(self, text: str) -> str:
        """Return ``text`` with every credential of the URL masked."""
        for secret in self._secrets:
            text = re.sub(rf"(?<!\w){re.escape(secret)}(?!\w)", "***", text)
        return text

    def _error(self, err: Exception) -> ProbeError:
        """Map a redis-py error to a probe error whose message holds no secret."""
        detail = self._scrub(str(err) or type(err).__name__)
        if isinstance(
            err,
            (redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError),
        ) or (
            isinstance(err, redis.exceptions.ResponseError)
            and str(err).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
        ):
            reason = (
                "wrong user name or password" if self._secrets else "password required"
            )
            if isinstance(err, redis.exceptions.NoPermissionError):
                reason = "this user may not run TIME"
            return ProbeAuthError(f"{self.name} refused our credentials: {reason}")
        if isinstance(err, (redis.exceptions.TimeoutError, TimeoutError)):
            return ProbeTimeoutError(
                f"{self.name} did not answer within {self._timeout:g} s"
            )
        if isinstance(err, (redis.exceptions.ConnectionError, OSError)):
            return ProbeConnectionError(f"cannot connect to {self.name}: {detail}")
        return ProbeResponseError(f"{self.name} answered TIME with an error: {detail}")

    async def _sample(self) -> Sample:
        """Read TIME once between two local clock reads."""
        t0 = time.time()
        seconds, microseconds = await self._client.time()
        t1 = time.time()
        return Sample(
            t0, t1, seconds + microseconds / 1_000_000, resolution=TIME_RESOLUTION
        )

    async def read(self) -> Reading:
        """Return the best of ``samples`` TIME exchanges.

        Raises ProbeAuthError (wrong password), ProbeConnectionError, ProbeTimeoutError.
        """
        samples: list[Sample] = []
        try:
            async with asyncio.timeout(self._timeout * (self._samples + 1)):
                samples.extend([await self._sample() for _ in range(self._samples)])
        except (redis.exceptions.RedisError, OSError) as err:
            raise self._error(err) from None
        sample = best_sample(samples)
        return Reading(
            kind=ClockKind.REDIS,
            name=self.name,
            offset=sample.offset,
            uncertainty=sample.uncertainty,
            taken_at=sample.midpoint,
        )

    async def close(self) -> None:
        """Close the connection."""
        await self._client.aclose()
