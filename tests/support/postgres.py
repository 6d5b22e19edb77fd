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
COMMAND_TIMEOUT_S = 120  # initdb, pg_ctl start -w (its own 60 s wait) and stop: none should take longer


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
            # user=/group= switch after fork in C; a preexec_fn runs Python in the child, which can deadlock when
            # the parent has threads (the Kubernetes API double, xdist). A CI run once hung near the end of the suite
            # with no output; this is one suspect, not a proven cause (pytest-timeout now bounds any such hang).
            pw = pwd.getpwnam("postgres")
            kwargs.update(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])
        try:
            return subprocess.run(  # type: ignore[call-overload, no-any-return]
                args, check=True, capture_output=True, cwd=self.workdir, timeout=COMMAND_TIMEOUT_S, **kwargs
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"{' '.join(args)} did not finish in {COMMAND_TIMEOUT_S} s: {exc.stderr!r}") from exc

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
