"""Unit tests for BM25 retrieval, the index factory and hit@k; none of them needs torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from coordinator.evaluation.retrieval import (
    Bm25Index,
    Document,
    hit_at_k,
    make_index,
    tokenize,
)
from tests.support.requirements import require_module

DOCS = [
    Document("d-pi", "Raspberry Pi", "A small single-board computer made in Cambridge."),
    Document("d-tea", "Green tea", "Tea leaves are steamed or pan-fired to stop oxidation."),
    Document("d-zmq", "ZeroMQ", "A messaging library with sockets for pub-sub and pipelines."),
    Document("d-bert", "BERT", "A transformer encoder pretrained with masked language modelling."),
    Document("d-alps", "The Alps", "A mountain range crossing eight countries in Europe."),
    Document("d-tea2", "Black tea", "Black tea leaves are fully oxidised before drying."),
]


@pytest.fixture(scope="module")
def bm25() -> Bm25Index:
    require_module("rank_bm25", install_hint="run make test")
    return Bm25Index(DOCS)


def test_tokenize_lowercases_and_drops_punctuation() -> None:
    assert tokenize("Pub-Sub, ZeroMQ's sockets!") == ["pub", "sub", "zeromq", "s", "sockets"]


def test_bm25_ranks_the_document_with_the_query_words_first(bm25: Bm25Index) -> None:
    results = bm25.search("which library has pub-sub sockets?", k=3)
    assert results[0][0] == "d-zmq"
    scores = [score for _, score in results]
    assert scores == sorted(scores, reverse=True)


def test_bm25_searches_the_title_too(bm25: Bm25Index) -> None:
    assert [doc_id for doc_id, _ in bm25.search("RASPBERRY", k=3)] == ["d-pi"]


def test_bm25_returns_only_documents_sharing_a_query_word(bm25: Bm25Index) -> None:
    results = bm25.search("mountain", k=5)
    assert [doc_id for doc_id, _ in results] == ["d-alps"]
    assert bm25.search("quantum chromodynamics", k=5) == []


def test_bm25_breaks_ties_by_document_order() -> None:
    require_module("rank_bm25", install_hint="run make test")
    twins = [
        Document("a", "", "filler words here"),
        Document("b", "", "kettle boiling water"),
        Document("c", "", "more filler text"),
        Document("d", "", "kettle boiling water"),
        Document("e", "", "unrelated content entirely"),
    ]
    results = Bm25Index(twins).search("kettle", k=2)
    assert [doc_id for doc_id, _ in results] == ["b", "d"]
    assert results[0][1] == results[1][1] > 0


def test_bm25_returns_every_matching_document(bm25: Bm25Index) -> None:
    results = dict(bm25.search("tea leaves", k=6))
    assert set(results) == {"d-tea", "d-tea2"}


def test_bm25_rejects_bad_input() -> None:
    require_module("rank_bm25", install_hint="run make test")
    with pytest.raises(ValueError, match="at least one document"):
        Bm25Index([])
    with pytest.raises(ValueError, match="'d-pi' appears twice"):
        Bm25Index([DOCS[0], DOCS[0]])
    with pytest.raises(ValueError, match="k must be at least 1"):
        Bm25Index(DOCS).search("tea", k=0)


def test_make_index_builds_bm25_and_names_allowed_kinds() -> None:
    require_module("rank_bm25", install_hint="run make test")
    assert isinstance(make_index("bm25", DOCS), Bm25Index)
    with pytest.raises(ValueError, match="'bm25', 'embedding', 'hybrid'") as info:
        make_index("dense", DOCS)  # type: ignore[arg-type]
    assert "'dense'" in str(info.value)


def test_hit_at_k() -> None:
    retrieved = ["d1", "d2", "d3"]
    assert hit_at_k(retrieved, ["d1"], k=1)
    assert not hit_at_k(retrieved, ["d3"], k=2)
    assert hit_at_k(retrieved, ["d3"], k=3)
    assert hit_at_k(retrieved, ["x", "d2"], k=5)  # k beyond the list is fine
    assert not hit_at_k([], ["d1"], k=3)


def test_hit_at_k_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        hit_at_k(["d1"], ["d1"], k=0)
    with pytest.raises(ValueError, match="no gold document"):
        hit_at_k(["d1"], [], k=1)
    with pytest.raises(TypeError, match="not a single string"):
        hit_at_k(["d1"], "d1", k=1)


def test_importing_retrieval_does_not_import_torch() -> None:
    code = (
        "import sys, coordinator.evaluation.retrieval, coordinator.evaluation.embeddings; "
        "sys.exit('torch' in sys.modules or 'sentence_transformers' in sys.modules)"
    )
    root = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=root)
