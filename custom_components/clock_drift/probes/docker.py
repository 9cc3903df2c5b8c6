"""Docker probe: container clocks through long-lived exec streams, and the daemon's."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .model import Reading


class ContainerMethod(StrEnum):
    """How a container's clock was read."""

    NANOSECONDS = "nanoseconds"  # date +%s.%N through the exec stream
    SECOND_EDGE = (
        "second_edge"  # whole-second date: the second's edge found by bracketing
    )
    DAEMON = "daemon"  # no shell in the container: it shares the daemon's clock


@dataclass(frozen=True, slots=True, kw_only=True)
class ContainerReading(Reading):
    """A container's clock (``kind`` CONTAINER, ``name`` the container's name)."""

    container_id: str
    image: str
    method: ContainerMethod


class DockerClocks:
    """Reads the clocks of a Docker host's containers and of the daemon itself."""

    name: str
    """The endpoint, never with credentials."""

    def __init__(
        self,
        url: str,
        *,
        containers: Sequence[str] = (),
        label: str | None = None,
        concurrency: int = 8,
        timeout: float = 5.0,
    ) -> None:
        """Prepare a client for ``unix://PATH`` or ``tcp://HOST:PORT``.

        ``containers`` selects by name (empty: all running), ``label`` by label.
        """
        raise NotImplementedError

    async def read_host(self) -> Reading:
        """Return the daemon's clock (``/info`` SystemTime), kind DOCKER_HOST.

        Raises ProbeConnectionError, ProbeTimeoutError, ProbeResponseError.
        """
        raise NotImplementedError

    async def read_containers(self) -> list[Reading]:
        """Return a reading per selected running container, failed ones included.

        A container that fails gives a failed Reading; the daemon being unreachable
        raises ProbeConnectionError.
        """
        raise NotImplementedError

    async def exec(
        self, container: str, argv: Sequence[str], *, timeout: float = 10.0
    ) -> tuple[int, str]:
        """Run a fixed argv in a container (no shell); return exit code and output."""
        raise NotImplementedError

    async def close(self) -> None:
        """Close every exec session and the client."""
        raise NotImplementedError
