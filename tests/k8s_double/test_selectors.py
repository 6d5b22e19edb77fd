"""Label and field selectors, parsed and matched as the Kubernetes API server does."""

from __future__ import annotations

import pytest

from tests.support.k8s_double import SelectorError, field_selector_matcher, label_selector_matcher

LABELS = {"dag_id": "crypto", "task_id": "ingest", "already_checked": "True", "app.kubernetes.io/part-of": "cp"}


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("", True),
        ("dag_id=crypto", True),
        ("dag_id==crypto", True),
        ("dag_id=other", False),
        ("dag_id!=other", True),
        ("dag_id!=crypto", False),
        ("missing!=x", True),  # != matches objects without the key
        ("already_checked!=True", False),
        ("!airflow-worker", True),
        ("!dag_id", False),
        ("task_id", True),
        ("missing", False),
        ("app.kubernetes.io/part-of=cp", True),
        ("dag_id=crypto,task_id=ingest,!airflow-worker", True),
        ("dag_id=crypto,task_id=validate", False),
        ("task_id in (ingest,validate)", True),
        ("task_id notin (ingest,validate)", False),
        ("dag_id=crypto, task_id in (archive), !x", False),
    ],
)
def test_label_selector(selector: str, expected: bool) -> None:
    assert label_selector_matcher(selector)(LABELS) is expected


def test_operator_find_pod_selector() -> None:
    """The selector KubernetesPodOperator.find_pod sends (checked pods and workers excluded)."""
    selector = "dag_id=crypto,kubernetes_pod_operator=True,task_id=ingest,already_checked!=True,!airflow-worker"
    match = label_selector_matcher(selector)
    fresh = {"dag_id": "crypto", "task_id": "ingest", "kubernetes_pod_operator": "True"}
    assert match(fresh)
    assert not match({**fresh, "already_checked": "True"})
    assert not match({**fresh, "airflow-worker": "123"})


@pytest.mark.parametrize("selector", ["dag id=x", "=x", "a=b c", "a=" + "v" * 64, "a in (b"])
def test_bad_label_selector(selector: str) -> None:
    with pytest.raises(SelectorError, match="selector"):
        label_selector_matcher(selector)


def test_field_selector() -> None:
    event = {"involvedObject": {"name": "pod-1", "kind": "Pod"}, "type": "Warning", "count": 1}
    assert field_selector_matcher("involvedObject.name=pod-1")(event)
    assert field_selector_matcher("involvedObject.name==pod-1,type!=Normal")(event)
    assert not field_selector_matcher("involvedObject.name=pod-2")(event)
    assert field_selector_matcher("involvedObject.uid=")(event)  # a missing field is ""
    assert field_selector_matcher(None)(event)


def test_bad_field_selector() -> None:
    with pytest.raises(SelectorError, match="expected path=value"):
        field_selector_matcher("involvedObject.name")
