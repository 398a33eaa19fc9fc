"""A throw-away PostgreSQL server for tests (``postgres_server`` fixture).

Finds ``initdb``/``pg_ctl`` on PATH or in ``/usr/lib/postgresql/*/bin``, initialises a cluster in
a temporary directory, starts it on a free TCP port of 127.0.0.1 (unix socket in the same
temporary directory) and stops it at teardown. PostgreSQL refuses to run as root: when the tests
run as root, the server commands run as the ``postgres`` system user (``runuser -u postgres --``).

If the binaries are missing the fixture FAILS (it does not skip): ``.ci/run`` installs Debian's
``postgresql`` package.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _find_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; :meth:`new_database` gives a fresh SQLAlchemy URL."""

    port: int
    user: str

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg2

        name = f"t_{uuid.uuid4().hex[:12]}"
        con = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres")
        con.autocommit = True
        try:
            con.cursor().execute(f"CREATE DATABASE {name}")
        finally:
            con.close()
        return self.url(name)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    initdb, pg_ctl = _find_bin("initdb"), _find_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.fail(
            "PostgreSQL binaries (initdb, pg_ctl) not found on PATH or in "
            "/usr/lib/postgresql/*/bin: run `.ci/run` (it installs Debian's `postgresql` "
            "package) or `apt-get install postgresql`"
        )
    prefix: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="sigtune-pg-"))
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.fail("running as root needs `runuser` to start PostgreSQL as user postgres")
        prefix = [runuser, "-u", "postgres", "--"]
        shutil.chown(base, "postgres", "postgres")
    base.chmod(0o700)
    data, log = base / "data", base / "server.log"
    user = "postgres"
    env = {**os.environ, "LC_ALL": "C"}
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-A", "trust", "-U", user, "--no-sync", "-E", "UTF8"],
        check=True,
        capture_output=True,
        env=env,
    )
    port = _free_port()
    opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=60"
    started = subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(log), "-w", "-t", "60", "start"],
        capture_output=True,
        text=True,
        env=env,
    )
    if started.returncode != 0:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {started.stderr}\n{text}")
    try:
        yield PostgresServer(port=port, user=user)
    finally:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            env=env,
        )
        shutil.rmtree(base, ignore_errors=True)
