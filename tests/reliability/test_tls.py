"""Redis over TLS (``rediss://``) against a real TLS Redis: probe, listener, worker."""

from __future__ import annotations

from collections.abc import Iterator
import datetime as dt
import ipaddress
from pathlib import Path
import shutil
import socket
import ssl
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from homeassistant.core import HomeAssistant
import pytest

from custom_components.clock_drift.const import (
    CONF_CELERY_BROKER_URL,
    CONF_REDIS_URL,
)
from custom_components.clock_drift.probes import ProbeConnectionError
from custom_components.clock_drift.probes.redis import RedisClock
from tests.conftest import SetupEntry, wait_for_workers
from tests.harness import StartCeleryWorker
from tests.harness.servers import LOOPBACK, ServerProcess, free_port

PASSWORD = "tls-secret-pw"
WORKER = "tls-worker@pi"


def _write_pki(directory: Path) -> tuple[Path, Path, Path]:
    """Write a self-signed CA and a server certificate for 127.0.0.1 signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, "clock-drift test CA")]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOOPBACK)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "server.key",
    )
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


class TlsRedisServer(ServerProcess):
    """Debian's redis-server (built with TLS) serving only TLS on a loopback port."""

    label = "redis-tls"

    def __init__(self) -> None:
        """Prepare a TLS-only Redis with a fresh CA and certificate."""
        super().__init__()
        self.port = free_port()
        self.ca_path, self.cert_path, self.key_path = _write_pki(self.directory)

    def url(self, *, ca: Path | None = None) -> str:
        """Return the ``rediss://`` URL that verifies the server against ``ca``."""
        ca_path = quote(str(ca or self.ca_path), safe="/")
        return (
            f"rediss://:{PASSWORD}@{LOOPBACK}:{self.port}/0"
            f"?ssl_cert_reqs=required&ssl_ca_certs={ca_path}"
        )

    def command(self) -> list[str]:
        """Return redis-server's argv: TLS only, no plain port, no persistence."""
        binary = shutil.which("redis-server")
        assert binary is not None, "install the Debian package redis-server"
        return [
            binary,
            "--port", "0",
            "--tls-port", str(self.port),
            "--bind", LOOPBACK,
            "--tls-cert-file", str(self.cert_path),
            "--tls-key-file", str(self.key_path),
            "--tls-ca-cert-file", str(self.ca_path),
            "--tls-auth-clients", "no",
            "--requirepass", PASSWORD,
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
        ]  # fmt: skip

    def ready(self) -> bool:
        """Return whether the server completes a verified TLS handshake and PINGs."""
        context = ssl.create_default_context(cafile=str(self.ca_path))
        try:
            with (
                socket.create_connection((LOOPBACK, self.port), timeout=0.5) as raw,
                context.wrap_socket(raw, server_hostname=LOOPBACK) as conn,
            ):
                conn.sendall(b"AUTH " + PASSWORD.encode() + b"\r\nPING\r\n")
                reply = b""
                while b"PONG" not in reply:
                    if not (chunk := conn.recv(1024)):
                        return False
                    reply += chunk
        except OSError:
            return False
        return True


@pytest.fixture
def tls_redis(real_sockets: None) -> Iterator[TlsRedisServer]:
    """Return a running TLS-only Redis on a free loopback port."""
    with TlsRedisServer() as server:
        yield server


async def test_probe_reads_tls_redis(tls_redis: TlsRedisServer) -> None:
    """Test the Redis probe reading TIME over a verified TLS connection."""
    clock = RedisClock(tls_redis.url())
    try:
        reading = await clock.read()
    finally:
        await clock.close()
    assert reading.ok
    assert reading.offset is not None
    assert reading.uncertainty is not None
    assert abs(reading.offset) <= reading.uncertainty + 0.01


async def test_untrusted_certificate_is_refused(
    tls_redis: TlsRedisServer, tmp_path: Path
) -> None:
    """Test a server whose certificate another CA signed: refused, no secret shown."""
    other_ca, _, _ = _write_pki(tmp_path)
    clock = RedisClock(tls_redis.url(ca=other_ca))
    try:
        with pytest.raises(ProbeConnectionError) as caught:
            await clock.read()
    finally:
        await clock.close()
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert PASSWORD not in str(caught.value)


async def test_plain_redis_url_on_a_tls_port_fails(tls_redis: TlsRedisServer) -> None:
    """Test that ``redis://`` on the TLS port does not read anything."""
    clock = RedisClock(f"redis://:{PASSWORD}@{LOOPBACK}:{tls_redis.port}/0", timeout=1)
    try:
        with pytest.raises(ProbeConnectionError):
            await clock.read()
    finally:
        await clock.close()


async def test_entry_over_tls_with_a_real_worker(
    hass: HomeAssistant,
    setup_entry: SetupEntry,
    tls_redis: TlsRedisServer,
    start_celery_worker: StartCeleryWorker,
) -> None:
    """Test an entry whose Redis and broker are TLS: TIME and a real worker's beats."""
    url = tls_redis.url()
    start_celery_worker(url, hostname=WORKER)
    entry = await setup_entry({CONF_REDIS_URL: url, CONF_CELERY_BROKER_URL: url})
    await wait_for_workers(hass, entry, WORKER)
    data = entry.runtime_data.coordinator.data
    assert data.redis is not None
    assert data.redis.ok, data.redis.error
    assert abs(data.workers[WORKER].offset) < 0.1
    listener = entry.runtime_data.listener
    assert listener is not None
    assert listener.connected
    state = hass.states.get("sensor.tls_worker_pi_offset")
    assert state is not None
    assert abs(float(state.state)) < 0.1
