"""Tests for the tiny random-weight GGUF model used as a llama.cpp test fixture."""

from __future__ import annotations

import hashlib
import pathlib
from collections.abc import Iterator

import gguf
import numpy as np
import pytest

from tests.support import tiny_gguf
from tests.support.requirements import require_module

BOS_ID = tiny_gguf.BOS_ID
CONTEXT_LENGTH = tiny_gguf.CONTEXT_LENGTH
EOS_ID = tiny_gguf.EOS_ID
N_EMBD = tiny_gguf.N_EMBD
N_LAYER = tiny_gguf.N_LAYER
UNK_ID = tiny_gguf.UNK_ID
build_vocab = tiny_gguf.build_vocab
write_tiny_gguf = tiny_gguf.write_tiny_gguf

llama_cpp = require_module("llama_cpp", install_hint="run `make test` to install it")

PROMPT = "Text: hello world\nLabel:"
MAX_TOKENS = 8


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("tiny_gguf") / "tiny.gguf")


@pytest.fixture(scope="module")
def tiny_llm(tiny_model_path: pathlib.Path) -> Iterator[llama_cpp.Llama]:
    llm = llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=512, n_threads=1, verbose=False)
    try:
        yield llm
    finally:
        llm.close()


def test_write_returns_path_and_is_small(tmp_path: pathlib.Path) -> None:
    target = tmp_path / "nested" / "tiny.gguf"
    result = write_tiny_gguf(target, seed=3)

    assert result == target
    assert target.is_file()
    assert target.read_bytes()[:4] == b"GGUF"
    assert target.stat().st_size < 4 * 1024 * 1024


def test_same_seed_gives_identical_bytes(tmp_path: pathlib.Path) -> None:
    a = write_tiny_gguf(tmp_path / "a.gguf", seed=7)
    b = write_tiny_gguf(tmp_path / "b.gguf", seed=7)
    c = write_tiny_gguf(tmp_path / "c.gguf", seed=8)

    assert _sha256(a) == _sha256(b)
    assert _sha256(a) != _sha256(c)


def test_vocab_is_unique_and_has_special_and_byte_tokens() -> None:
    tokens, scores, types = build_vocab()

    assert len(tokens) == len(set(tokens)) == len(scores) == len(types)
    assert 3 + 256 + 200 <= len(tokens) < 4096
    assert tokens[UNK_ID] == "<unk>"
    assert tokens[BOS_ID] == "<s>"
    assert tokens[EOS_ID] == "</s>"
    assert tokens[3] == "<0x00>" and tokens[3 + 255] == "<0xFF>"
    assert types[3 : 3 + 256] == [int(gguf.TokenType.BYTE)] * 256
    assert "\u2581the" in tokens


def test_gguf_metadata_is_llama(tiny_model_path: pathlib.Path) -> None:
    reader = gguf.GGUFReader(tiny_model_path)

    def value(key: str) -> object:
        field = reader.get_field(key)
        assert field is not None, key
        return field.contents()

    assert value("general.architecture") == "llama"
    assert value("tokenizer.ggml.model") == "llama"
    assert value("llama.context_length") == CONTEXT_LENGTH
    assert value("llama.embedding_length") == N_EMBD
    assert value("llama.block_count") == N_LAYER
    assert value("tokenizer.ggml.bos_token_id") == BOS_ID
    assert value("tokenizer.ggml.eos_token_id") == EOS_ID
    assert len(value("tokenizer.ggml.tokens")) == len(build_vocab()[0])  # type: ignore[arg-type]
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "output.weight"} <= names
    assert "blk.1.ffn_down.weight" in names


def test_tokenize_round_trips_arbitrary_text(tiny_llm: llama_cpp.Llama) -> None:
    hello = tiny_llm.tokenize(b"hello")
    assert hello[0] == BOS_ID
    assert len(hello) >= 2

    text = "Text: the caf\u00e9 costs 4.50 \u20ac\nLabel: positive"
    ids = tiny_llm.tokenize(text.encode("utf-8"), add_bos=False)
    assert UNK_ID not in ids
    assert tiny_llm.detokenize(ids).decode("utf-8").strip() == text


def test_logits_are_finite(tiny_model_path: pathlib.Path) -> None:
    # llama-cpp-python 0.3 fills `scores` only with logits_all=True; otherwise the array
    # is uninitialised memory and reading it tests nothing
    llm = llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=512, n_threads=1,
                          logits_all=True, verbose=False)
    try:
        tokens = llm.tokenize(PROMPT.encode("utf-8"))
        llm.eval(tokens)
        logits = np.asarray(llm.scores[: llm.n_tokens])
    finally:
        llm.close()

    assert logits.shape == (len(tokens), llm.n_vocab())
    assert np.isfinite(logits).all()
    assert logits.std() > 0, "random weights give logits that vary"


def test_streaming_completion_yields_chunks(tiny_llm: llama_cpp.Llama) -> None:
    chunks = list(
        tiny_llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0, stream=True)
    )

    assert len(chunks) >= 1
    for chunk in chunks:
        assert chunk["object"] == "text_completion"
        assert isinstance(chunk["choices"][0]["text"], str)
    assert chunks[-1]["choices"][0]["finish_reason"] in {"length", "stop"}


def test_completion_usage_is_sane_and_greedy_is_deterministic(
    tiny_llm: llama_cpp.Llama,
) -> None:
    first = tiny_llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0)
    second = tiny_llm.create_completion(PROMPT, max_tokens=MAX_TOKENS, temperature=0.0)

    assert isinstance(first["choices"][0]["text"], str)
    usage = first["usage"]
    assert usage["prompt_tokens"] == len(tiny_llm.tokenize(PROMPT.encode("utf-8")))
    assert 0 < usage["completion_tokens"] <= MAX_TOKENS
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert first["choices"][0]["text"] == second["choices"][0]["text"]


def test_chunked_token_logprobs_match_llama_cpps_own_scores(
        tiny_model_path: pathlib.Path) -> None:
    from node_agent.worker import token_logprobs

    text = "the quick brown fox jumps over the lazy dog and then it runs home"
    full = llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=512, n_threads=1,
                           logits_all=True, verbose=False)
    lean = llama_cpp.Llama(model_path=str(tiny_model_path), n_ctx=512, n_threads=1,
                           verbose=False)
    try:
        tokens = full.tokenize(text.encode(), add_bos=True)
        full.eval(tokens)
        scores = np.asarray(full.scores[: len(tokens)], dtype=np.float64)
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        expected = [log_softmax[i, tokens[i + 1]] for i in range(len(tokens) - 1)]
        chunked = token_logprobs(lean, text, chunk=5)  # several chunks, a ragged last one
        # the model still completes normally afterwards: its cache was reset
        after = lean.create_completion("the", max_tokens=2, temperature=0.0)
    finally:
        full.close()
        lean.close()
    assert len(chunked) == len(tokens) - 1
    assert np.allclose(chunked, expected, atol=1e-3)
    assert all(lp <= 0 for lp in chunked)
    assert after["choices"][0]["text"] is not None
