"""A throwaway Airflow 3 environment for in-process ``dag.test()`` runs (temp AIRFLOW_HOME, SQLite).

What ``dag.test()`` needs (Airflow 3.3): a metadata DB with the schema (created in-process with
``airflow.utils.db.initdb()``, ~2 s, once per pytest session), and the DAG *in a file under the DAGs
folder* (``dag.test()`` serializes it through the dags-folder bundle: an in-memory-only DAG fails with
"the dag is not serialized"). Connections come from ``AIRFLOW_CONN_<ID>`` environment variables.
``dag.test()`` runs each task in-process and, for a deferred task, runs its trigger in-process too.

Airflow reads AIRFLOW_HOME, the DAGs folder and the DB URL when it is first imported. Another test
module may have imported Airflow first with other settings: :func:`prepare_airflow` then re-reads
the settings and rebuilds the ORM engine (``settings.configure_vars()`` + ``settings.reconfigure_orm()``),
so the order of imports does not matter.

Use in a conftest::

    from tests.support.airflow_env import airflow_env  # noqa: F401  (session fixture)

    def test_x(airflow_env, monkeypatch):
        airflow_env.use_dags_folder(Path("dags"))          # or airflow_env.install_dag(file)
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", k8s.airflow_connection_json())
        dag = airflow_env.load_dag(Path("dags/my_dag.py"), "my_dag")
        run = dag.test(logical_date=...)
        assert airflow_env.task_states(run) == {...}
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.envvars import restore, snapshot


def airflow_env_vars(home: Path, dags_folder: Path) -> dict[str, str]:
    """Environment of a self-contained Airflow: nothing under ~/airflow, no examples, SQLite."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__DAG_PROCESSOR_CHILD_PROCESS_LOG_DIRECTORY": str(home / "logs" / "dag_processor"),
    }


@dataclass
class AirflowTestEnv:
    """A prepared Airflow home; ``dags_folder`` is where ``dag.test()`` finds DAG files."""

    home: Path
    dags_folder: Path
    env: dict[str, str]
    _loaded: dict[str, Any] = field(default_factory=dict)

    def use_dags_folder(self, folder: Path) -> None:
        """Point Airflow (env and already-imported settings) at another DAGs folder."""
        self.dags_folder = folder.resolve()
        os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(self.dags_folder)
        if "airflow.settings" in sys.modules:
            from airflow import settings

            settings.DAGS_FOLDER = str(self.dags_folder)

    def install_dag(self, source: Path, name: str | None = None) -> Path:
        """Copy a DAG file (or helper module) into the current DAGs folder; return its new path."""
        target = self.dags_folder / (name or source.name)
        shutil.copyfile(source, target)
        return target

    def load_dag(self, path: Path, dag_id: str) -> Any:
        """Import a DAG file under a fresh module name and return the DAG with ``dag_id``."""
        module_name = f"_airflow_env_dag_{path.stem}_{uuid.uuid4().hex[:8]}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import DAG file {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        from airflow.sdk import DAG

        dags = {obj.dag_id: obj for obj in vars(module).values() if isinstance(obj, DAG)}
        if dag_id not in dags:
            raise LookupError(f"{path} defines no DAG {dag_id!r} (found: {sorted(dags)})")
        return dags[dag_id]

    @staticmethod
    def task_states(dag_run: Any) -> dict[str, str | None]:
        """``{task_id: state}`` of a DagRun returned by ``dag.test()``."""
        from airflow.utils.session import create_session

        with create_session() as session:
            return {
                ti.task_id: (str(getattr(ti.state, "value", ti.state)) if ti.state is not None else None)
                for ti in dag_run.get_task_instances(session=session)
            }


def prepare_airflow(home: Path, dags_folder: Path) -> AirflowTestEnv:
    """Set the environment, (re)configure an already-imported Airflow, create the DB schema."""
    home.mkdir(parents=True, exist_ok=True)
    dags_folder.mkdir(parents=True, exist_ok=True)
    (home / "plugins").mkdir(exist_ok=True)
    env = airflow_env_vars(home, dags_folder.resolve())
    os.environ.update(env)
    if "airflow.settings" in sys.modules:
        from airflow import settings

        settings.configure_vars()
        settings.reconfigure_orm()
    from airflow.utils import db

    db.initdb()
    return AirflowTestEnv(home=home, dags_folder=dags_folder.resolve(), env=env)


@pytest.fixture(scope="session")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowTestEnv]:
    """Session fixture: a migrated SQLite Airflow home; the environment is restored afterwards."""
    saved = snapshot(airflow_env_vars(Path("/"), Path("/")))
    root = tmp_path_factory.mktemp("airflow")
    prepared = prepare_airflow(root / "home", root / "dags")
    try:
        yield prepared
    finally:
        restore(saved)
        if "airflow.settings" in sys.modules:
            from airflow import settings

            settings.dispose_orm(do_log=False)  # its DB is about to be deleted with the temp dir
