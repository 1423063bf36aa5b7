"""Unit tests for datasets, reports and comparisons over the HTTP API and a real SQLite store.

Work items are finished directly through the store (lease, then complete with the task's
own scorer), as a node would through the hub.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from coordinator import store as st
from coordinator.db import WorkItemRow
from coordinator.evaluation.tasks import get_task

API = "/api/v1"
MODEL = "tiny"
NAME = "my-ner"
NER_LINES = [
    {"id": "n1", "split": "train", "text": "Ada lives in Oslo.",
     "entities": [{"text": "Ada", "type": "PER"}, {"text": "Oslo", "type": "LOC"}]},
    {"id": "n2", "text": "Bob joined NASA in 1999.",
     "entities": [{"text": "Bob", "type": "PER"}, {"text": "NASA", "type": "ORG"},
                  {"text": "1999", "type": "DATE"}]},
    {"id": "n3", "text": "It rained all day.", "entities": []},
]
NER_CONTENT = "".join(json.dumps(line) + "\n" for line in NER_LINES)
BUILTINS = {"builtin:classification", "builtin:ner", "builtin:perplexity", "builtin:rag",
            "builtin:summarization", "builtin:translation"}


@pytest.fixture
def registered(store: st.Store) -> str:
    """A model in the store (registration itself is test_api.py's concern)."""
    st.add_model(store, name=MODEL, sha256="1" * 64, size=1, path="/nowhere/tiny.gguf",
                 threads=2, n_ctx=2048)
    return MODEL


def post_dataset(client: TestClient, **changes: Any) -> Any:
    body = {"name": NAME, "task": "ner", "content": NER_CONTENT, **changes}
    return client.post(f"{API}/datasets", json=body)


def user_datasets(client: TestClient) -> list[dict[str, Any]]:
    listed = client.get(f"{API}/datasets")
    assert listed.status_code == 200
    return [d for d in listed.json() if not d["builtin"]]


def create_job(client: TestClient, *, task: str = "classification",
               dataset: str = "builtin:classification", limit: int | None = 3,
               name: str = "job") -> dict[str, Any]:
    entry: dict[str, Any] = {"task": task, "dataset": dataset}
    if limit is not None:
        entry["limit"] = limit
    response = client.post(f"{API}/jobs", json={"name": name, "models": [MODEL],
                                                 "tasks": [entry]})
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


def task_scorer(item: WorkItemRow, output: str) -> tuple[str | None, dict[str, Any]]:
    return get_task(item.task).score_item(output, item.reference)


def finish_all(store: st.Store, output: Callable[[WorkItemRow], str]) -> int:
    """Lease and complete every pending item of every running job; how many were done."""
    done = 0
    while (item := st.lease_next(store, model=MODEL, node_id=1, lease_s=60.0)) is not None:
        assert item.lease_id is not None
        assert st.complete_item(store, item_id=item.id, lease_id=item.lease_id, node_id=1,
                                output=output(item), error=None, scorer=task_scorer,
                                measurement={"e2e_s": 0.5, "ttft_s": 0.1, "tpot_s": 0.02,
                                             "completion_tokens": 3, "tokens_per_s": 20.0})
        done += 1
    return done


def the_label(item: WorkItemRow) -> str:
    return str(item.reference["label"])


# --- registering datasets -----------------------------------------------------------------


def test_register_a_ner_dataset(client: TestClient) -> None:
    response = post_dataset(client)
    assert response.status_code == 201, response.text
    body = response.json()
    sha = hashlib.sha256(NER_CONTENT.encode()).hexdigest()
    assert (body["name"], body["task"], body["sha256"], body["items"]) == (NAME, "ner", sha, 2)
    assert body["ref"].startswith(f"{NAME}@") and body["ref"].endswith(f"#{sha[:12]}")


def test_list_shows_the_builtins_and_the_registered_dataset(client: TestClient) -> None:
    assert post_dataset(client).status_code == 201
    listed = client.get(f"{API}/datasets").json()
    builtin = {d["name"]: d for d in listed if d["builtin"]}
    assert set(builtin) == BUILTINS
    assert all(d["task"] == name.removeprefix("builtin:") for name, d in builtin.items())
    assert builtin["builtin:classification"]["items"] == 100
    (mine,) = user_datasets(client)
    assert (mine["name"], mine["task"], mine["items"]) == (NAME, "ner", 2)
    assert mine["sha256"] == hashlib.sha256(NER_CONTENT.encode()).hexdigest()


def test_same_name_same_content_is_accepted_again(client: TestClient) -> None:
    first = post_dataset(client).json()
    again = post_dataset(client)
    assert again.status_code == 201
    assert again.json() == first
    assert len(user_datasets(client)) == 1


def test_same_name_with_other_content_is_refused(client: TestClient) -> None:
    assert post_dataset(client).status_code == 201
    response = post_dataset(client, content=NER_CONTENT + json.dumps(
        {"id": "n4", "text": "Paris is big.", "entities": [{"text": "Paris", "type": "LOC"}]}))
    assert response.status_code == 422
    assert response.json()["error"] == "DatasetError"
    assert "name" in response.json()["detail"] and NAME in response.json()["detail"]
    (mine,) = user_datasets(client)
    assert mine["sha256"] == hashlib.sha256(NER_CONTENT.encode()).hexdigest()


def test_invalid_content_is_refused_and_nothing_is_stored(client: TestClient) -> None:
    lines = NER_CONTENT.splitlines()
    lines[2] = json.dumps({"id": "n3", "text": "Bob went home.",
                           "entities": [{"text": "Bob", "type": "per"}]})
    response = post_dataset(client, content="\n".join(lines))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert f"dataset '{NAME}'" in detail and "line 3" in detail and "type" in detail
    assert user_datasets(client) == []


def test_csv_content_is_accepted(client: TestClient) -> None:
    content = ("id,text,label,split\nc1,I was charged twice,billing,train\n"
               "c2,app crashes on start,technical,test\nc3,where is my parcel,shipping,\n")
    response = post_dataset(client, name="tickets", task="classification", format="csv",
                            content=content)
    assert response.status_code == 201, response.text
    assert response.json()["items"] == 2


def test_rag_dataset_needs_its_documents(client: TestClient) -> None:
    content = json.dumps({"id": "r1", "question": "Where is Ada?", "answers": ["Oslo"],
                          "doc_ids": ["d1"]}) + "\n"
    missing = post_dataset(client, name="qa", task="rag", content=content)
    assert missing.status_code == 422 and "documents" in missing.json()["detail"]
    documents = json.dumps({"id": "d1", "title": "Ada", "text": "Ada lives in Oslo."}) + "\n"
    ok = post_dataset(client, name="qa", task="rag", content=content, documents=documents)
    assert ok.status_code == 201, ok.text
    assert [d["name"] for d in user_datasets(client)] == ["qa"]


def test_body_with_an_extra_field_is_refused(client: TestClient) -> None:
    response = post_dataset(client, owner="anna")
    assert response.status_code == 422
    assert any(err["loc"][-1] == "owner" for err in response.json()["detail"])
    assert user_datasets(client) == []


def test_unknown_task_is_refused(client: TestClient) -> None:
    response = post_dataset(client, task="nerr")
    assert response.status_code == 422
    assert "'ner'" in response.json()["detail"]
    assert user_datasets(client) == []


def test_job_on_a_registered_dataset(client: TestClient, registered: str) -> None:
    ref = post_dataset(client).json()["ref"]
    job = create_job(client, task="ner", dataset=NAME, limit=None)
    assert (job["total"], job["pending"]) == (2, 2)
    records = client.get(f"{API}/jobs/{job['id']}/results").json()["records"]
    assert sorted(r["item_key"] for r in records) == ["n2", "n3"]
    assert {r["dataset"] for r in records} == {ref}, "results name the data the POST named"
    n2 = next(r for r in records if r["item_key"] == "n2")
    assert n2["reference"]["entities"] == [["Bob", "PER"], ["NASA", "ORG"], ["1999", "DATE"]]


def test_job_naming_a_registered_dataset_for_another_task_is_refused(
        client: TestClient, registered: str) -> None:
    assert post_dataset(client).status_code == 201
    response = client.post(f"{API}/jobs", json={
        "name": "j", "models": [MODEL], "tasks": [{"task": "classification", "dataset": NAME}]})
    assert response.status_code == 422
    assert "ner dataset" in response.json()["detail"]
    assert client.get(f"{API}/jobs").json() == []


# --- reports --------------------------------------------------------------------------------


@pytest.mark.parametrize(("fmt", "media"), [
    ("json", "application/json"), ("csv", "text/csv"), ("latex", "application/x-latex"),
    ("html", "text/html"), ("table", "text/plain")])
def test_report_formats(client: TestClient, store: st.Store, registered: str, fmt: str,
                        media: str) -> None:
    job = create_job(client)
    assert finish_all(store, the_label) == 3
    response = client.get(f"{API}/jobs/{job['id']}/report", params={"format": fmt})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media
    if fmt == "json":
        report = response.json()
        assert report["job"]["id"] == job["id"]
        (row,) = report["summary"]
        assert (row["model"], row["task"], row["done"]) == (MODEL, "classification", 3)
        assert row["metrics"]["accuracy"]["value"] == 1.0
    elif fmt == "html":
        assert "<html" in response.text and "accuracy" in response.text
    else:
        assert "classification" in response.text and "accuracy" in response.text


def test_report_is_json_by_default(client: TestClient, registered: str) -> None:
    job = create_job(client)
    response = client.get(f"{API}/jobs/{job['id']}/report")
    assert response.status_code == 200
    assert response.json()["summary"][0]["done"] == 0


def test_unknown_report_format_names_the_formats(client: TestClient, registered: str) -> None:
    job = create_job(client)
    response = client.get(f"{API}/jobs/{job['id']}/report", params={"format": "pdf"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "pdf" in detail
    for fmt in ("table", "csv", "json", "latex", "html"):
        assert fmt in detail


# --- comparing jobs -----------------------------------------------------------------------


def compare(client: TestClient, base: int, candidate: int) -> Any:
    return client.get(f"{API}/compare", params={"base": base, "candidate": candidate})


def test_identical_outputs_compare_to_zero(client: TestClient, store: st.Store,
                                           registered: str) -> None:
    base, cand = create_job(client, name="base"), create_job(client, name="candidate")
    # one wrong label per job, on the same item, so the metrics are not all 1.0
    wrong = min(i.item_key for i in st.job_items(store, job_id=base["id"]))
    assert finish_all(store, lambda i: "nonsense" if i.item_key == wrong else the_label(i)) == 6
    response = compare(client, base["id"], cand["id"])
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["base"], body["candidate"]) == (base["id"], cand["id"])
    assert body["paired_items"] == {"classification": 3}
    deltas = {d["metric"]: d for d in body["deltas"]}
    assert set(deltas) == {"accuracy", "macro_f1", "invalid_rate"}
    for d in deltas.values():
        assert d["task"] == "classification"
        assert d["delta"] == 0.0 and d["low"] == 0.0 and d["high"] == 0.0
    assert deltas["invalid_rate"]["higher_is_better"] is False
    assert deltas["accuracy"]["higher_is_better"] is True


def test_compare_a_job_with_itself(client: TestClient, store: st.Store,
                                   registered: str) -> None:
    job = create_job(client)
    finish_all(store, the_label)
    response = compare(client, job["id"], job["id"])
    assert response.status_code == 200, response.text
    assert all((d["delta"], d["low"], d["high"]) == (0.0, 0.0, 0.0)
               for d in response.json()["deltas"])


def test_compare_measures_candidate_minus_base(client: TestClient, store: st.Store,
                                               registered: str) -> None:
    base, cand = create_job(client, name="base"), create_job(client, name="candidate")
    wrong = min(i.item_key for i in st.job_items(store, job_id=cand["id"]))

    def output(item: WorkItemRow) -> str:
        return "nonsense" if item.job_id == cand["id"] and item.item_key == wrong \
            else the_label(item)

    finish_all(store, output)
    deltas = {d["metric"]: d for d in compare(client, base["id"], cand["id"]).json()["deltas"]}
    # base: 3/3 correct; candidate: 2/3 correct and 1/3 invalid
    assert deltas["accuracy"]["delta"] == pytest.approx(-1 / 3)
    assert deltas["invalid_rate"]["delta"] == pytest.approx(1 / 3)
    for d in deltas.values():
        assert d["low"] <= d["delta"] <= d["high"]


def test_compare_jobs_without_finished_items_is_refused(client: TestClient,
                                                        registered: str) -> None:
    base, cand = create_job(client, name="base"), create_job(client, name="candidate")
    response = compare(client, base["id"], cand["id"])
    assert response.status_code == 422
    assert response.json()["error"] == "CompareError"


def test_compare_unknown_job_is_404(client: TestClient, registered: str) -> None:
    job = create_job(client)
    response = compare(client, job["id"], 999)
    assert response.status_code == 404
    assert "999" in response.json()["detail"]
