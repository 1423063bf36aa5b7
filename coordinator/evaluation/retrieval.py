"""Document retrieval for retrieval-augmented tasks: BM25, embeddings, and their fusion.

Every index is built once from a list of :class:`Document` and answers
``search(query, k) -> [(doc_id, score), ...]``, best first, ties broken by document order.
Scores are comparable only within one index kind. :func:`hit_at_k` scores one retrieval.
rank-bm25 and the embedding model belong to the optional ``embeddings`` extra.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt

from coordinator.evaluation.embeddings import (
    INSTALL_HINT,
    Embedder,
    EmbeddingsUnavailable,
    default_embedder,
)

IndexKind = Literal["bm25", "embedding", "hybrid"]
RRF_K = 60
Ranking = list[tuple[str, float]]


@dataclass(frozen=True)
class Document:
    """One retrievable passage; ``id`` is what gold answers refer to."""

    id: str
    title: str
    text: str


class Index(Protocol):
    """Anything that ranks documents for a query."""

    def search(self, query: str, k: int) -> Ranking: ...


def tokenize(text: str) -> list[str]:
    """Lowercase word tokens (``\\w+``), the BM25 vocabulary."""
    return re.findall(r"\w+", text.lower())


def _full_text(document: Document) -> str:
    return f"{document.title}\n{document.text}" if document.title else document.text


def _checked(documents: Iterable[Document]) -> list[Document]:
    docs = list(documents)
    if not docs:
        raise ValueError("a retrieval index needs at least one document")
    seen: set[str] = set()
    for doc in docs:
        if doc.id in seen:
            raise ValueError(f"document id {doc.id!r} appears twice; ids must be unique")
        seen.add(doc.id)
    return docs


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def _top_k(ids: Sequence[str], scores: npt.NDArray[np.float64], k: int) -> Ranking:
    """The ``k`` best ids by score; a stable sort keeps document order among ties."""
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


class Bm25Index:
    """Okapi BM25 over title + text; only documents sharing a query word are returned.

    So a search may return fewer than ``k`` results (none for a query with no known word).
    """

    def __init__(self, documents: Iterable[Document]) -> None:
        try:
            from rank_bm25 import BM25Okapi
        except ImportError as exc:
            raise EmbeddingsUnavailable(
                f"BM25 retrieval needs rank-bm25 ({exc}); install it with: {INSTALL_HINT}"
            ) from exc
        docs = _checked(documents)
        self._ids = [doc.id for doc in docs]
        corpus = [tokenize(_full_text(doc)) for doc in docs]
        self._vocab = [set(words) for words in corpus]
        self._bm25 = BM25Okapi(corpus)

    def search(self, query: str, k: int) -> Ranking:
        _check_k(k)
        words = tokenize(query)
        scores = np.asarray(self._bm25.get_scores(words), dtype=np.float64)
        matching = [i for i, vocab in enumerate(self._vocab) if not vocab.isdisjoint(words)]
        return _top_k([self._ids[i] for i in matching], scores[matching], k)


class EmbeddingIndex:
    """Cosine similarity between the query and each document's title + text embedding."""

    def __init__(self, documents: Iterable[Document], embedder: Embedder) -> None:
        docs = _checked(documents)
        self._ids = [doc.id for doc in docs]
        self._embedder = embedder
        self._vectors = embedder.encode([_full_text(doc) for doc in docs])

    def search(self, query: str, k: int) -> Ranking:
        _check_k(k)
        query_vector = self._embedder.encode([query])[0]
        scores = (self._vectors @ query_vector).astype(np.float64)
        return _top_k(self._ids, scores, k)


class HybridIndex:
    """Reciprocal rank fusion of BM25 and embedding rankings: sum of ``1 / (rrf_k + rank)``.

    Ranks start at 1; a document missing from the BM25 ranking (no shared word) gets only
    its embedding term. The returned score is the fused RRF score.
    """

    def __init__(
        self, documents: Iterable[Document], embedder: Embedder, *, rrf_k: int = RRF_K
    ) -> None:
        docs = _checked(documents)
        self._ids = [doc.id for doc in docs]
        self._rrf_k = rrf_k
        self._bm25 = Bm25Index(docs)
        self._embedding = EmbeddingIndex(docs, embedder)

    def search(self, query: str, k: int) -> Ranking:
        _check_k(k)
        everything = len(self._ids)
        fused = dict.fromkeys(self._ids, 0.0)
        for index in (self._bm25, self._embedding):
            for rank, (doc_id, _) in enumerate(index.search(query, everything), start=1):
                fused[doc_id] += 1.0 / (self._rrf_k + rank)
        scores = np.array([fused[doc_id] for doc_id in self._ids], dtype=np.float64)
        return _top_k(self._ids, scores, k)


def make_index(
    kind: IndexKind, documents: Iterable[Document], embedder: Embedder | None = None
) -> Index:
    """Build the index of ``kind``; embedding kinds use ``embedder`` or the shared default."""
    if kind == "bm25":
        return Bm25Index(documents)
    if kind == "embedding":
        return EmbeddingIndex(documents, embedder or default_embedder())
    if kind == "hybrid":
        return HybridIndex(documents, embedder or default_embedder())
    allowed = ", ".join(repr(name) for name in get_args(IndexKind))
    raise ValueError(f"unknown retrieval index kind {kind!r}; allowed kinds: {allowed}")


def hit_at_k(retrieved_ids: Sequence[str], gold_ids: Sequence[str], k: int) -> bool:
    """Whether any of the first ``k`` retrieved ids is a gold id."""
    _check_k(k)
    if isinstance(retrieved_ids, str) or isinstance(gold_ids, str):
        raise TypeError("hit_at_k takes sequences of ids, not a single string")
    if not gold_ids:
        raise ValueError("hit_at_k needs at least one gold id; the item has no gold document")
    gold = set(gold_ids)
    return any(doc_id in gold for doc_id in retrieved_ids[:k])
