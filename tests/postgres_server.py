"""A throwaway PostgreSQL server on 127.0.0.1 for the destination tests.

CI runs on a fresh Debian machine with no PostgreSQL, through the README's test command alone,
so the tests bring their own server: Debian's packages (installed when missing and we are
root), a cluster in a temporary folder, a free port on 127.0.0.1, gone when the session ends.
"""

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import List, Optional

BIN_DIRS = "/usr/lib/postgresql/*/bin"
"""Where Debian's packages put the server binaries, one folder per major version."""

SERVER_USER = "postgres"
"""The unprivileged user Debian's package creates: initdb and postgres refuse to run as root."""

DATABASE = "marketo_test"


class PostgresUnavailable(Exception):
    """No PostgreSQL server here, and none can be installed."""


def server_binaries() -> Path:
    """The newest installed server's bin folder, installing Debian's package first if needed."""
    found = _installed_bin_dir()
    if found is None:
        _install_from_debian()
        found = _installed_bin_dir()
    if found is None:
        raise PostgresUnavailable(f"the package installed no server under {BIN_DIRS}")
    return found


def _installed_bin_dir() -> Optional[Path]:
    candidates = [Path(d) for d in glob.glob(BIN_DIRS) if (Path(d) / "initdb").exists()]
    # Sorted by major version as a number: "9.6" must not come after "15".
    return max(candidates, key=lambda d: [int(p) for p in d.parent.name.split(".")], default=None)


def _install_from_debian() -> None:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise PostgresUnavailable(
            f"no PostgreSQL server under {BIN_DIRS}, and installing one needs root and apt-get "
            "(run: apt-get install postgresql)"
        )
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (["apt-get", "update", "-q"],
                    ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]):
        done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise PostgresUnavailable(f"{' '.join(command)} failed: {done.stderr[-2000:]}")


class PostgresServer:
    """One cluster: `start()` makes and starts it, `stop()` stops it and deletes its folder."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        # As root, under /tmp: the server's user must reach the folder, and TMPDIR may be private.
        self.root = Path(tempfile.mkdtemp(prefix="marketo-postgres-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user = "marketo"
        self.password = secrets.token_urlsafe(16)
        # As root, the server runs as the package's user, who must own the folder it writes.
        self.run_as: List[str] = ["runuser", "-u", SERVER_USER, "--"] if os.geteuid() == 0 else []

    @property
    def credentials(self) -> str:
        """A connection string for dlt's postgres destination."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> "PostgresServer":
        if self.run_as:
            shutil.chown(self.root, SERVER_USER)
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.run_as:
            shutil.chown(password_file, SERVER_USER)
        self._run("initdb", "-D", str(self.data), "-U", self.user, f"--pwfile={password_file}",
                  "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
        password_file.unlink()
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(self._settings())
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        self._create_database()
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            # Immediate: no shutdown checkpoint, the folder is deleted next anyway.
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def log_tail(self) -> str:
        log = self.root / "server.log"
        return log.read_text(errors="replace")[-2000:] if log.exists() else ""

    def _settings(self) -> str:
        # Only 127.0.0.1, the socket in our folder (not /var/run/postgresql, which may not
        # exist), and no flushing to disk: a test cluster need not survive a power cut.
        return "\n".join([
            "",
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.root}'",
            "fsync = off",
            "synchronous_commit = off",
            "full_page_writes = off",
            "",
        ])

    def _create_database(self) -> None:
        import psycopg2  # dlt's postgres extra; imported here so that collecting the tests never needs it

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user,
                                      password=self.password, dbname="postgres")
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            connection.close()

    def _run(self, program: str, *args: str) -> None:
        command = [*self.run_as, str(self.bin_dir / program), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.root)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stderr}\n{self.log_tail()}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
