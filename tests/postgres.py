"""A real PostgreSQL server for tests and benchmarks, from Debian's postgresql package.

``running_postgres()`` starts one in a temporary folder on a free loopback port (trust authentication, fsync
off) and stops it at the end. The pytest fixtures: ``postgres_server`` (one server per test session) and
``postgres_url`` (a fresh, empty database of it per test). Without the binaries the fixtures skip, except
under CI (the variable ``CI`` set), where they fail so that the PostgreSQL tests cannot silently not run.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

BIN_GLOB = "/usr/lib/postgresql/*/bin"
OS_USER = "postgres"  # initdb refuses to run as root; the server runs as this user when we are root
START_TIMEOUT_S = 60
INSTALL_HINT = "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: run scripts/install.sh --test"
# a test server: durability off (nothing to lose), and nothing but loopback
TEST_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                 "listen_addresses": "127.0.0.1"}


def postgres_bin() -> Path | None:
    """The bin folder of the newest installed PostgreSQL, or None."""
    folders = [Path(path) for path in sorted(Path("/").glob(BIN_GLOB.lstrip("/")))]
    folders = [folder for folder in folders if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file()]
    if not folders:
        return None

    def version(folder: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", folder.parent.name)) or (0,)

    return max(folders, key=version)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PostgresServer:
    bin: Path
    root: Path
    port: int
    user: str = "postgres"
    data: Path | None = None
    options: str = ""
    _databases: itertools.count = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self._databases = itertools.count(1)

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new empty database; returns its URL."""
        name = name or f"test_{os.getpid()}_{next(self._databases)}"
        self._client("createdb", name)
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (fast: open connections are cut), as an outage would; ``start`` brings it back."""
        _pg_ctl(self.bin, self.data, "-m", "fast", "-w", "stop")

    def start(self) -> None:
        _pg_ctl(self.bin, self.data, "-l", str(self.root / "server.log"), "-o", self.options, "-w",
                "-t", str(START_TIMEOUT_S), "start")

    def drop_database(self, name: str) -> None:
        self._client("dropdb", "--if-exists", "--force", name)

    def _client(self, program: str, *args: str) -> None:
        subprocess.run([str(self.bin / program), "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, *args],
                       check=True, capture_output=True, text=True)


def _pg_ctl(bin_dir: Path, data: Path, *args: str) -> None:
    subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), *args]), check=True,
                   capture_output=True, text=True)


def _as_server_user(command: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", OS_USER, "--", *command]


@contextlib.contextmanager
def running_postgres(settings: dict[str, str] | None = None) -> Iterator[PostgresServer]:
    """A fresh PostgreSQL server for as long as the block runs. ``settings`` are extra ``-c`` options."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise FileNotFoundError(INSTALL_HINT)
    root = Path(tempfile.mkdtemp(prefix="voice-agent-pg-"))
    data, log_file = root / "data", root / "server.log"
    (root / "socket").mkdir()
    if os.geteuid() == 0:
        for path in (root, root / "socket"):
            shutil.chown(path, OS_USER, OS_USER)
    started = False
    try:
        subprocess.run(_as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                        "-E", "UTF8", "--locale=C", "--no-sync"]),
                       check=True, capture_output=True, text=True)
        options = {**TEST_SETTINGS, **(settings or {})}
        server = None
        for _attempt in range(3):  # the free port may be taken between choosing and binding it
            port = _free_port()
            flags = " ".join([f"-p {port}", f"-k {root / 'socket'}", *(f"-c {k}={v}" for k, v in options.items())])
            result = subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log_file),
                                                     "-o", flags, "-w", "-t", str(START_TIMEOUT_S), "start"]),
                                    capture_output=True, text=True)
            if result.returncode == 0:
                server = PostgresServer(bin_dir, root, port, data=data, options=flags)
                break
        if server is None:
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{log[-2000:]}")
        started = True
        yield server
    finally:
        if started:
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, text=True)
        shutil.rmtree(root, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set, so the PostgreSQL tests may not be skipped)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole test session (it takes a few seconds to start)."""
    if postgres_bin() is None:
        _unavailable(INSTALL_HINT)
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server: ``postgresql+asyncpg://postgres@127.0.0.1:PORT/DB``."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])
