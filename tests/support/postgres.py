"""A real PostgreSQL server for tests: initdb + pg_ctl in a temp dir, on 127.0.0.1 and a free port.

``initdb``/``postgres`` refuse to run as root, so when the tests run as root the server runs as the ``postgres``
user (Debian's package creates it). Usage: the ``postgres_server`` fixture in tests/conftest.py yields a
``PostgresServer``; ``server.new_database()`` returns a SQLAlchemy URL of a fresh database; ``stop()``/``start()``
simulate an outage on the same port and data.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port, port_open, wait_for

PASSWORD = "cryptopipe-test"  # a throwaway credential for a loopback test server


def find_pg_bin() -> Path | None:
    """Debian keeps the server binaries in /usr/lib/postgresql/<ver>/bin, not always on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), reverse=True)
    on_path = shutil.which("pg_ctl")
    for candidate in [*candidates, on_path]:
        if (
            candidate
            and Path(candidate).with_name("initdb").exists()
            and Path(candidate).with_name("postgres").exists()
        ):
            return Path(candidate).parent
    return None


@dataclass
class PostgresServer:
    workdir: Path
    bin_dir: Path
    port: int = field(default_factory=free_port)
    user: str = "cryptopipe"

    def _run(self, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        kwargs: dict[str, object] = {}
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")

            def demote() -> None:
                os.setgid(pw.pw_gid)
                os.setuid(pw.pw_uid)

            kwargs["preexec_fn"] = demote
        return subprocess.run(args, check=True, capture_output=True, cwd=self.workdir, **kwargs)  # type: ignore[call-overload]

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    def init(self) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        pwfile = self.workdir / "pw"
        pwfile.write_text(PASSWORD)
        if os.geteuid() == 0:
            os.chown(pwfile, pwd.getpwnam("postgres").pw_uid, -1)
        self._run([
            str(self.bin_dir / "initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
            "-A", "scram-sha-256", "-E", "UTF8", "--no-sync", "--locale=C.UTF-8",
        ])  # fmt: skip

    def start(self, timeout: float = 30) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -c unix_socket_directories={self.workdir} -c fsync=off"
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-o", options, "-l",
                   str(self.workdir / "postgres.log"), "-w", "-t", str(int(timeout)), "start"])  # fmt: skip
        wait_for(lambda: port_open(self.port), timeout, "PostgreSQL")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), "-m", "fast", "-w", "stop"])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{self.user}:{PASSWORD}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        dsn = f"host=127.0.0.1 port={self.port} user={self.user} password={PASSWORD} dbname=postgres"
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres() -> PostgresServer:
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL server binaries not found (apt-get install -y postgresql-15)")
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="cryptopipe-pg-")), bin_dir)
    server.init()
    server.start()
    return server
