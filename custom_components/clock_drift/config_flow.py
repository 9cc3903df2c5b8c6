"""Config flow for Clock Drift Monitor: user, reconfigure, reauth and options steps."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping
from typing import Any, override
from urllib.parse import SplitResult, urlsplit

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigFlow,
    ConfigFlowResult,
    OptionsFlowWithReload,
)
from homeassistant.core import callback
from homeassistant.helpers.selector import (
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
import probatio

from .const import (
    CHRONYC,
    CONF_CELERY_BROKER_URL,
    CONF_CHRONY_CONTAINER,
    CONF_CHRONY_SOCKET,
    CONF_CONTAINERS,
    CONF_DOCKER_URL,
    CONF_NTP_SERVERS,
    CONF_REDIS_URL,
    CONF_SCAN_INTERVAL,
    CONF_STALE_AFTER,
    CONF_TOLERANCE,
    CONNECTION_FIELDS,
    DEFAULT_DOCKER_URL,
    DEFAULT_NTP_SERVERS,
    DEFAULT_SCAN_INTERVAL,
    DEFAULT_STALE_AFTER,
    DEFAULT_TOLERANCE,
    DOMAIN,
    LOGGER,
)
from .coordinator import split_list
from .probes import (
    ProbeAuthError,
    ProbeCommandError,
    ProbeConnectionError,
    ProbeError,
    ProbeResponseError,
    ProbeTimeoutError,
)
from .probes.chrony import ChronyClient
from .probes.docker import DockerClocks
from .probes.ntp import query_ntp_servers
from .probes.redis import RedisClock, redis_name

REDIS_SCHEMES = frozenset({"redis", "rediss"})
CREDENTIAL_FIELDS = (CONF_REDIS_URL, CONF_CELERY_BROKER_URL)
"""The fields whose URLs carry a password, asked again by reauth."""
DOCKER_SCHEMES = frozenset({"unix", "tcp", "http", "https"})

_TEXT = TextSelector(TextSelectorConfig(autocomplete="off"))
_URL = TextSelector(TextSelectorConfig(type=TextSelectorType.URL, autocomplete="off"))

CONNECTION_SCHEMA = probatio.Schema(
    {
        probatio.Optional(CONF_NTP_SERVERS): _TEXT,
        # Redis and broker URLs may carry a password: never logged, redacted in
        # diagnostics, and typed as text so the user can read what they pasted.
        probatio.Optional(CONF_REDIS_URL): _TEXT,
        probatio.Optional(CONF_CELERY_BROKER_URL): _TEXT,
        probatio.Optional(CONF_DOCKER_URL): _URL,
        probatio.Optional(CONF_CONTAINERS): _TEXT,
        probatio.Optional(CONF_CHRONY_SOCKET): _TEXT,
        probatio.Optional(CONF_CHRONY_CONTAINER): _TEXT,
    }
)


def _seconds(minimum: float, maximum: float, step: float) -> NumberSelector:
    """Return a selector for a number of seconds."""
    return NumberSelector(
        NumberSelectorConfig(
            min=minimum,
            max=maximum,
            step=step,
            mode=NumberSelectorMode.BOX,
            unit_of_measurement="s",
        )
    )


OPTIONS_SCHEMA = probatio.Schema(
    {
        probatio.Required(CONF_SCAN_INTERVAL): _seconds(5, 3600, 1),
        probatio.Required(CONF_TOLERANCE): _seconds(0.001, 86400, 0.001),
        probatio.Required(CONF_STALE_AFTER): _seconds(10, 604800, 1),
    }
)


def normalize(user_input: Mapping[str, Any]) -> dict[str, str]:
    """Return every connection field, stripped, empty when not given."""
    return {key: str(user_input.get(key) or "").strip() for key in CONNECTION_FIELDS}


def _split(url: str) -> SplitResult:
    """Return a URL's parts; a malformed one (``redis://[::1``) has none."""
    try:
        return urlsplit(url)
    except ValueError:
        return urlsplit("")


def _port(url: str) -> int | None:
    """Return a URL's port, None when it has none or an invalid one."""
    try:
        return _split(url).port
    except ValueError:
        return None


def _redis_identity(url: str) -> str:
    """Return ``host:port/db`` of a Redis URL, without its credentials."""
    parts = _split(url)
    database = parts.path.lstrip("/") or "0"
    return f"{parts.hostname}:{_port(url) or 6379}/{database}"


def site_unique_id(data: Mapping[str, str]) -> str:
    """Return the site's identity: its Docker endpoint, else its Redis, and so on.

    The first clock that names a place identifies the site, so two entries never
    watch the same Docker host (or the same Redis when there is no Docker host).
    Credentials never enter it.
    """
    if docker_url := data[CONF_DOCKER_URL]:
        parts = _split(docker_url)
        port = f":{port_number}" if (port_number := _port(docker_url)) else ""
        return f"docker:{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    if redis_url := data[CONF_REDIS_URL]:
        return f"redis:{_redis_identity(redis_url)}"
    if broker_url := data[CONF_CELERY_BROKER_URL]:
        return f"redis:{_redis_identity(broker_url)}"
    if chrony_socket := data[CONF_CHRONY_SOCKET]:
        return f"chrony:{chrony_socket}"
    return "ntp:" + ",".join(sorted(split_list(data[CONF_NTP_SERVERS])))


def site_title(data: Mapping[str, str]) -> str:
    """Return the entry's title: the host its identity names, credentials left out."""
    for field in (CONF_DOCKER_URL, CONF_REDIS_URL, CONF_CELERY_BROKER_URL):
        if url := data[field]:
            return f"Clock drift on {_split(url).hostname or 'this host'}"
    if data[CONF_CHRONY_SOCKET]:
        return "Clock drift on this host"
    return "Clock drift"


def _valid_url(url: str, schemes: frozenset[str]) -> bool:
    """Return whether a URL has one of the schemes, a place, and a valid port."""
    parts = _split(url)
    try:
        _ = parts.port
    except ValueError:
        return False
    if parts.scheme not in schemes:
        return False
    return bool(parts.hostname) or (parts.scheme == "unix" and bool(parts.path))


def _probe_error(err: ProbeError) -> str:
    """Return the form error for a probe error."""
    if isinstance(err, ProbeAuthError):
        return "invalid_auth"
    if isinstance(err, (ProbeConnectionError, ProbeTimeoutError)):
        return "cannot_connect"
    return "invalid_response"


async def _check_ntp(servers: list[str]) -> str | None:
    """Return why no NTP server answered, or None."""
    readings = await query_ntp_servers(servers)
    if any(reading.ok for reading in readings):
        return None
    return "cannot_connect"


async def _check_redis(url: str) -> str | None:
    """Return why the Redis server's clock cannot be read, or None."""
    if not _valid_url(url, REDIS_SCHEMES):
        return "invalid_url"
    redis = RedisClock(url)
    try:
        await redis.read()
    except ProbeError as err:
        return _probe_error(err)
    finally:
        await redis.close()
    return None


def _server(url: str) -> str:
    """Return ``host:port/db`` of a Redis URL (never its credentials), else ''."""
    try:
        return redis_name(url)
    except ValueError:
        return ""


def reauth_urls(
    saved: Mapping[str, str], user_input: Mapping[str, Any]
) -> dict[str, str]:
    """Return the credential URLs a reauth form asks for; empty keeps the saved one."""
    return {
        key: str(user_input.get(key) or "").strip() or saved[key]
        for key in CREDENTIAL_FIELDS
        if saved.get(key)
    }


async def validate_credentials(
    saved: Mapping[str, str], urls: Mapping[str, str]
) -> dict[str, str]:
    """Test the credential URLs; return the errors by field.

    A URL naming another server than the saved one is refused: reauth must not
    move the site (reconfigure does).
    """
    errors: dict[str, str] = {}
    checks: dict[str, Awaitable[str | None]] = {}
    for key, url in urls.items():
        if _valid_url(url, REDIS_SCHEMES) and _server(url) != _server(saved[key]):
            errors[key] = "different_server"
        else:
            checks[key] = _check_redis(url)
    results = await asyncio.gather(*checks.values())
    errors.update(
        {key: error for key, error in zip(checks, results, strict=True) if error}
    )
    return errors


async def _check_docker(data: Mapping[str, str]) -> dict[str, str]:
    """Return the errors of the Docker fields (endpoint, containers, chrony's)."""
    if not _valid_url(data[CONF_DOCKER_URL], DOCKER_SCHEMES):
        return {CONF_DOCKER_URL: "invalid_url"}
    names = split_list(data[CONF_CONTAINERS])
    docker = DockerClocks(data[CONF_DOCKER_URL], containers=names)
    errors: dict[str, str] = {}
    try:
        await docker.read_host()
        readings = await docker.read_containers()
        if not set(names) <= {reading.name for reading in readings if reading.ok}:
            errors[CONF_CONTAINERS] = "container_not_found"
        if container := data[CONF_CHRONY_CONTAINER]:
            try:
                await ChronyClient.in_container(docker, container).tracking()
            except ProbeResponseError:
                # Docker refused the exec (no such container, or it is stopped).
                errors[CONF_CHRONY_CONTAINER] = "container_not_found"
            except ProbeError as err:
                errors[CONF_CHRONY_CONTAINER] = _chrony_error(err)
    except ProbeAuthError:
        errors[CONF_DOCKER_URL] = "permission_denied"
    except ProbeError as err:
        errors[CONF_DOCKER_URL] = _probe_error(err)
    finally:
        await docker.close()
    return errors


def _chrony_error(err: ProbeError) -> str:
    """Return the form error for a chronyc failure."""
    if isinstance(err, ProbeAuthError):
        return "not_authorised"
    if isinstance(err, ProbeCommandError):
        return "chronyc_failed"
    return _probe_error(err)


async def _check_chrony(chrony: ChronyClient) -> str | None:
    """Return why chrony's tracking report cannot be read, or None."""
    try:
        await chrony.tracking()
    except ProbeError as err:
        return _chrony_error(err)
    return None


async def validate_input(data: Mapping[str, str]) -> dict[str, str]:
    """Test every source given, concurrently; return the errors by field."""
    if not any(
        data[key]
        for key in (
            CONF_NTP_SERVERS,
            CONF_REDIS_URL,
            CONF_CELERY_BROKER_URL,
            CONF_DOCKER_URL,
            CONF_CHRONY_SOCKET,
        )
    ):
        return {"base": "no_clocks"}
    errors: dict[str, str] = {}
    if data[CONF_CHRONY_CONTAINER] and data[CONF_CHRONY_SOCKET]:
        errors[CONF_CHRONY_CONTAINER] = "chrony_twice"
    elif data[CONF_CHRONY_CONTAINER] and not data[CONF_DOCKER_URL]:
        errors[CONF_CHRONY_CONTAINER] = "docker_required"
    if data[CONF_CONTAINERS] and not data[CONF_DOCKER_URL]:
        errors[CONF_CONTAINERS] = "docker_required"

    async def field_error(key: str, check: Any) -> dict[str, str]:
        """Run one check and key its error by field."""
        error = await check
        return {key: error} if error else {}

    checks: list[Any] = []
    if servers := split_list(data[CONF_NTP_SERVERS]):
        checks.append(field_error(CONF_NTP_SERVERS, _check_ntp(servers)))
    if data[CONF_REDIS_URL]:
        checks.append(field_error(CONF_REDIS_URL, _check_redis(data[CONF_REDIS_URL])))
    if data[CONF_CELERY_BROKER_URL]:
        checks.append(
            field_error(
                CONF_CELERY_BROKER_URL, _check_redis(data[CONF_CELERY_BROKER_URL])
            )
        )
    if data[CONF_CHRONY_SOCKET]:
        checks.append(
            field_error(
                CONF_CHRONY_SOCKET,
                _check_chrony(
                    ChronyClient.local(data[CONF_CHRONY_SOCKET], chronyc=CHRONYC)
                ),
            )
        )
    if data[CONF_DOCKER_URL]:
        checks.append(_check_docker(data))
    for result in await asyncio.gather(*checks):
        errors = {**result, **errors}
    return errors


class ClockDriftConfigFlow(ConfigFlow, domain=DOMAIN):
    """Set up a site whose clocks are watched."""

    VERSION = 1

    @staticmethod
    @callback
    @override
    def async_get_options_flow(config_entry: ConfigEntry) -> ClockDriftOptionsFlow:
        """Return the options flow."""
        return ClockDriftOptionsFlow()

    async def _async_validate(self, check: Awaitable[dict[str, str]]) -> dict[str, str]:
        """Run a validation, mapping any unexpected failure to ``base: unknown``."""
        try:
            return await check
        except Exception:  # noqa: BLE001
            LOGGER.exception("Unexpected exception while testing the clocks")
            return {"base": "unknown"}

    @override
    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the clocks to watch and test each of them."""
        errors: dict[str, str] = {}
        suggested: Mapping[str, Any] = {
            CONF_NTP_SERVERS: DEFAULT_NTP_SERVERS,
            CONF_DOCKER_URL: DEFAULT_DOCKER_URL,
        }
        if user_input is not None:
            data = normalize(user_input)
            suggested = data
            await self.async_set_unique_id(site_unique_id(data))
            self._abort_if_unique_id_configured()
            if not (errors := await self._async_validate(validate_input(data))):
                return self.async_create_entry(
                    title=site_title(data),
                    data=data,
                    options={
                        CONF_SCAN_INTERVAL: DEFAULT_SCAN_INTERVAL,
                        CONF_TOLERANCE: DEFAULT_TOLERANCE,
                        CONF_STALE_AFTER: DEFAULT_STALE_AFTER,
                    },
                )
        return self.async_show_form(
            step_id="user",
            data_schema=self.add_suggested_values_to_schema(
                CONNECTION_SCHEMA, suggested
            ),
            errors=errors,
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the connection fields of a site, testing them again."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        suggested: Mapping[str, Any] = entry.data
        if user_input is not None:
            data = normalize(user_input)
            suggested = data
            if not (errors := await self._async_validate(validate_input(data))):
                # The site keeps its identity (and its entities' unique ids).
                return self.async_update_reload_and_abort(entry, data=data)
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                CONNECTION_SCHEMA, suggested
            ),
            errors=errors,
        )

    async def async_step_reauth(
        self, entry_data: Mapping[str, Any]
    ) -> ConfigFlowResult:
        """Ask again for the URLs after a server refused their password."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Test the new URLs on the same servers, then save them and reload."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            urls = reauth_urls(entry.data, user_input)
            if not (
                errors := await self._async_validate(
                    validate_credentials(entry.data, urls)
                )
            ):
                return self.async_update_reload_and_abort(entry, data_updates=urls)
        fields = [key for key in CREDENTIAL_FIELDS if entry.data.get(key)]
        # The fields start empty: a saved URL holds the old password, never shown.
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=probatio.Schema(
                {probatio.Optional(key): _TEXT for key in fields}
            ),
            errors=errors,
            description_placeholders={
                "servers": ", ".join(
                    dict.fromkeys(_server(entry.data[key]) for key in fields)
                )
            },
        )


class ClockDriftOptionsFlow(OptionsFlowWithReload):
    """Tune how often clocks are read and how much drift is tolerated."""

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Show the options; saving them reloads the entry."""
        if user_input is not None:
            return self.async_create_entry(
                data={
                    CONF_SCAN_INTERVAL: int(user_input[CONF_SCAN_INTERVAL]),
                    CONF_TOLERANCE: float(user_input[CONF_TOLERANCE]),
                    CONF_STALE_AFTER: int(user_input[CONF_STALE_AFTER]),
                }
            )
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                OPTIONS_SCHEMA,
                {
                    CONF_SCAN_INTERVAL: DEFAULT_SCAN_INTERVAL,
                    CONF_TOLERANCE: DEFAULT_TOLERANCE,
                    CONF_STALE_AFTER: DEFAULT_STALE_AFTER,
                    **self.config_entry.options,
                },
            ),
        )
