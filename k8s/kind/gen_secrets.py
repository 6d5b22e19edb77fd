"""Generate the kind cluster's Secrets with fresh random values (nothing secret is ever committed).

Prints Kubernetes Secret manifests (YAML stream) for the namespaces infra, airflow and crypto-tasks. kind-up.sh
writes them once to .tools/kind/secrets.yaml (git-ignored) and re-applies that same file on later runs, so
passwords stay stable for the databases they created.
"""

from __future__ import annotations

import argparse
import base64
import json
import secrets
import sys

import yaml

AIRFLOW_RELEASE = "airflow"


def token(n: int = 24) -> str:
    return secrets.token_urlsafe(n)


def secret(name: str, namespace: str, data: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app.kubernetes.io/part-of": "crypto-pipeline"}},
        "type": "Opaque",
        "stringData": data,
    }


def build(airflow_ns: str, task_ns: str) -> list[dict]:
    pg_super, pg_airflow, pg_warehouse = token(), token(), token()
    minio_user, minio_password = "cryptopipe", token()
    redis_password = token()
    fernet_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    pgbouncer = f"{AIRFLOW_RELEASE}-pgbouncer.{airflow_ns}:6543"
    init_sql = (
        f"CREATE ROLE airflow LOGIN PASSWORD '{pg_airflow}';\n"
        "CREATE DATABASE airflow OWNER airflow;\n"
        f"CREATE ROLE warehouse LOGIN PASSWORD '{pg_warehouse}';\n"
        "CREATE DATABASE warehouse OWNER warehouse;\n"
    )
    pgbouncer_ini = (
        "[databases]\n"
        f"{AIRFLOW_RELEASE}-metadata = host=postgres.infra.svc.cluster.local dbname=airflow port=5432 pool_size=10\n\n"
        "[pgbouncer]\npool_mode = transaction\nlisten_port = 6543\nlisten_addr = *\n"
        "auth_type = scram-sha-256\nauth_file = /etc/pgbouncer/users.txt\nstats_users = airflow\n"
        "ignore_startup_parameters = extra_float_digits\nmax_client_conn = 200\n"
    )
    minio_endpoint = "http://minio.infra.svc.cluster.local:9000"
    aws_conn = {
        "conn_type": "aws",
        "login": minio_user,
        "password": minio_password,
        "extra": {"endpoint_url": minio_endpoint, "region_name": "us-east-1"},
    }
    return [
        secret("minio-root", "infra", {"user": minio_user, "password": minio_password}),
        secret("postgres-superuser", "infra", {"password": pg_super}),
        secret("postgres-init", "infra", {"10-roles.sql": init_sql}),
        secret(
            "airflow-metadata",
            airflow_ns,
            {"connection": f"postgresql://airflow:{pg_airflow}@{pgbouncer}/{AIRFLOW_RELEASE}-metadata"},
        ),
        secret(
            "airflow-pgbouncer-config",
            airflow_ns,
            {"pgbouncer.ini": pgbouncer_ini, "users.txt": f'"airflow" "{pg_airflow}"\n'},
        ),
        secret(
            "airflow-pgbouncer-stats",
            airflow_ns,
            {"connection": f"postgresql://airflow:{pg_airflow}@127.0.0.1:6543/pgbouncer?sslmode=disable"},
        ),
        secret("airflow-fernet-key", airflow_ns, {"fernet-key": fernet_key}),
        secret("airflow-jwt-secret", airflow_ns, {"jwt-secret": token(32)}),
        secret("airflow-api-secret-key", airflow_ns, {"api-secret-key": token(32)}),
        secret("airflow-redis-password", airflow_ns, {"password": redis_password}),
        secret(
            "airflow-broker-url",
            airflow_ns,
            {"connection": f"redis://:{redis_password}@{AIRFLOW_RELEASE}-redis:6379/0"},
        ),
        secret("airflow-connections", airflow_ns, {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws_conn)}),
        secret(
            "cryptopipe-secrets",
            task_ns,
            {
                "CRYPTOPIPE_WAREHOUSE__URL": (
                    f"postgresql+psycopg://warehouse:{pg_warehouse}@postgres.infra.svc.cluster.local:5432/warehouse"
                ),
                "AWS_ACCESS_KEY_ID": minio_user,
                "AWS_SECRET_ACCESS_KEY": minio_password,
            },
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--airflow-namespace", default="airflow")
    parser.add_argument("--task-namespace", default="crypto-tasks")
    args = parser.parse_args()
    yaml.safe_dump_all(build(args.airflow_namespace, args.task_namespace), sys.stdout, sort_keys=False)


if __name__ == "__main__":
    main()
