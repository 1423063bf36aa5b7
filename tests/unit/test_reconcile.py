"""Unit tests for the agent's pure reconcile step: desired vs observed workers -> actions."""

from __future__ import annotations

from node_agent.protocol import WorkerSpec
from node_agent.reconcile import Download, ObservedWorker, Remove, Start, Stop, plan

GEMMA = WorkerSpec(model="gemma", sha256="a" * 64, size=100, threads=4, n_ctx=2048)
QWEN = WorkerSpec(model="qwen", sha256="b" * 64, size=200, threads=4, n_ctx=2048)
NONE: frozenset[str] = frozenset()


def running(spec: WorkerSpec, *, state: str = "ready", alive: bool = True) -> ObservedWorker:
    return ObservedWorker(spec=spec, state=state, alive=alive)  # type: ignore[arg-type]


def test_nothing_wanted_nothing_running() -> None:
    assert plan(desired={}, observed={}, stored=NONE, downloading=NONE) == []


def test_downloads_a_missing_model() -> None:
    assert plan(desired={"gemma": GEMMA}, observed={}, stored=NONE,
                downloading=NONE) == [Download(GEMMA)]


def test_starts_a_stored_model() -> None:
    assert plan(desired={"gemma": GEMMA}, observed={}, stored=frozenset({GEMMA.sha256}),
                downloading=NONE) == [Start(GEMMA)]


def test_stored_means_by_sha256_not_by_name() -> None:
    assert plan(desired={"gemma": GEMMA}, observed={}, stored=frozenset({"gemma"}),
                downloading=NONE) == [Download(GEMMA)]


def test_nothing_to_do_when_running_as_desired() -> None:
    for state in ("starting", "ready", "busy"):
        assert plan(desired={"gemma": GEMMA}, observed={"gemma": running(GEMMA, state=state)},
                    stored=frozenset({GEMMA.sha256}), downloading=NONE) == []


def test_stops_a_worker_no_longer_desired() -> None:
    assert plan(desired={}, observed={"gemma": running(GEMMA)},
                stored=frozenset({GEMMA.sha256}), downloading=NONE) == [Stop("gemma")]


def test_replaces_a_worker_whose_spec_changed() -> None:
    wider = GEMMA.model_copy(update={"threads": 2})
    actions = plan(desired={"gemma": wider}, observed={"gemma": running(GEMMA)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE)
    assert actions == [Stop("gemma", "changed"), Start(wider)]


def test_replacement_with_a_new_file_downloads_it_first() -> None:
    newer = GEMMA.model_copy(update={"sha256": "c" * 64})
    actions = plan(desired={"gemma": newer}, observed={"gemma": running(GEMMA)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE)
    assert actions == [Stop("gemma", "changed"), Download(newer)]


def test_restarts_a_worker_that_died() -> None:
    for state, reason in (("ready", "crashed"), ("busy", "crashed"), ("failed", "failed")):
        actions = plan(desired={"gemma": GEMMA},
                       observed={"gemma": running(GEMMA, state=state, alive=False)},
                       stored=frozenset({GEMMA.sha256}), downloading=NONE)
        assert actions == [Stop("gemma", reason), Start(GEMMA)], state  # type: ignore[arg-type]


def test_a_worker_that_stopped_answering_is_replaced_even_if_its_process_lives() -> None:
    actions = plan(desired={"gemma": GEMMA},
                   observed={"gemma": running(GEMMA, state="failed", alive=True)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE)
    assert actions == [Stop("gemma", "failed"), Start(GEMMA)]


def test_a_starting_worker_is_left_alone() -> None:
    assert plan(desired={"gemma": GEMMA},
                observed={"gemma": running(GEMMA, state="starting", alive=False)},
                stored=frozenset({GEMMA.sha256}), downloading=NONE) == []


def test_leftovers_of_an_earlier_run_are_removed_first() -> None:
    actions = plan(desired={"gemma": GEMMA}, observed={"qwen": running(QWEN)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE,
                   leftovers=("c0ffee", "beef"))
    assert actions == [Remove("c0ffee"), Remove("beef"), Stop("qwen"), Start(GEMMA)]


def test_nothing_starts_while_the_runtime_is_not_ready() -> None:
    actions = plan(desired={"gemma": GEMMA, "qwen": QWEN},
                   observed={"gemma": running(GEMMA, state="failed", alive=False)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE, runtime_ready=False)
    assert actions == [Stop("gemma", "failed"), Download(QWEN)]


def test_no_second_download_while_one_is_running() -> None:
    assert plan(desired={"gemma": GEMMA}, observed={}, stored=NONE,
                downloading=frozenset({GEMMA.sha256})) == []


def test_download_in_progress_for_one_model_does_not_block_another() -> None:
    assert plan(desired={"gemma": GEMMA, "qwen": QWEN}, observed={}, stored=NONE,
                downloading=frozenset({GEMMA.sha256})) == [Download(QWEN)]


def test_backing_off_model_is_neither_fetched_nor_started() -> None:
    desired = {"gemma": GEMMA}
    assert plan(desired=desired, observed={}, stored=NONE, downloading=NONE,
                backing_off=frozenset({"gemma"})) == []
    assert plan(desired=desired, observed={}, stored=frozenset({GEMMA.sha256}),
                downloading=NONE, backing_off=frozenset({"gemma"})) == []


def test_dead_worker_backing_off_is_stopped_but_not_restarted() -> None:
    actions = plan(desired={"gemma": GEMMA},
                   observed={"gemma": running(GEMMA, state="failed", alive=False)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE,
                   backing_off=frozenset({"gemma"}))
    assert actions == [Stop("gemma", "failed")]


def test_backing_off_only_affects_that_model() -> None:
    assert plan(desired={"gemma": GEMMA, "qwen": QWEN}, observed={},
                stored=frozenset({GEMMA.sha256, QWEN.sha256}), downloading=NONE,
                backing_off=frozenset({"gemma"})) == [Start(QWEN)]


def test_stops_come_before_starts_and_downloads() -> None:
    # "zz-old" sorts after every desired model, so only the stops-first rule puts it first
    old = WorkerSpec(model="zz-old", sha256="d" * 64, size=1, threads=1, n_ctx=64)
    actions = plan(desired={"gemma": GEMMA, "qwen": QWEN}, observed={"zz-old": running(old)},
                   stored=frozenset({GEMMA.sha256}), downloading=NONE)
    assert actions[0] == Stop("zz-old")
    assert set(actions[1:]) == {Start(GEMMA), Download(QWEN)}
    assert len(actions) == 3
