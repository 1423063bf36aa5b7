"""Write a tiny, valid llama-architecture GGUF model for tests.

The model produced by :func:`write_tiny_gguf` has random weights (so it
generates gibberish), but it is a complete llama.cpp model: hyperparameters,
all llama tensors and a SentencePiece-style ("llama") tokenizer embedded in
the GGUF metadata.  The vocabulary holds ``<unk>``, ``<s>``, ``</s>``, the
256 byte-fallback tokens ``<0x00>``..``<0xFF>`` and some hundreds of common
English pieces, so any text (including newlines and non-ASCII) tokenizes.

The file is about 1 MB, is written in a few milliseconds and is
byte-for-byte deterministic for a given ``seed``; nothing is downloaded.
Typical use::

    path = write_tiny_gguf(tmp_path / "tiny.gguf")
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, verbose=False)
"""

from __future__ import annotations

import pathlib

import gguf
import numpy as np

__all__ = [
    "BOS_ID",
    "CONTEXT_LENGTH",
    "EOS_ID",
    "N_EMBD",
    "N_FF",
    "N_HEAD",
    "N_LAYER",
    "UNK_ID",
    "build_vocab",
    "write_tiny_gguf",
]

ARCH: str = "llama"
N_EMBD: int = 64
N_LAYER: int = 2
N_HEAD: int = 4
N_HEAD_KV: int = 4
N_FF: int = 128
CONTEXT_LENGTH: int = 512
HEAD_DIM: int = N_EMBD // N_HEAD
RMS_EPS: float = 1e-5
ROPE_FREQ_BASE: float = 10000.0
INIT_SCALE: float = 0.02

UNK_ID: int = 0
BOS_ID: int = 1
EOS_ID: int = 2

_SPACE: str = "\u2581"  # "▁", SentencePiece's word-boundary marker

_WORDS: tuple[str, ...] = tuple(
    """
    the of and to in is it you that he was for on are with as his they be at one have
    this from or had by not word but what some we can out other were all there when up
    use your how said an each she which do their time if will way about many then them
    write would like so these her long make thing see him two has look more day could go
    come did number no most people my over know water than call first who may down side
    been now find any new work part take get place made live where after back little
    only round man year came show every good me give our under name very through just
    form sentence great think say help low line differ turn cause much mean before move
    right boy old too same tell does set three want air well also play small end put
    home read hand port large spell add even land here must big high such follow act why
    ask men change went light kind off need house picture try us again animal point
    mother world near build self earth father hello text label positive negative neutral
    yes answer question true false model test data input output Text Label The It This I
    A Answer
    """.split()
)

_SUFFIXES: tuple[str, ...] = tuple(
    """
    ing ed er es est ly tion ment ness able al ic ive ous ful less th he in an re on at
    en nd ti te or st ar nt to it is ou
    """.split()
)

_SINGLE_CHARS: str = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    ".,:;!?'\"-()[]{}/\\@#$%&*+=<>_|~`^"
)


def build_vocab() -> tuple[list[str], list[float], list[int]]:
    """Return ``(tokens, scores, token_types)`` for the tiny SentencePiece vocab.

    Every multi-character piece has all of its prefixes in the vocabulary too,
    so llama.cpp's SPM bigram merging can actually reach the whole-word pieces.
    """
    tokens: list[str] = ["<unk>", "<s>", "</s>"]
    scores: list[float] = [0.0, 0.0, 0.0]
    types: list[int] = [
        int(gguf.TokenType.UNKNOWN),
        int(gguf.TokenType.CONTROL),
        int(gguf.TokenType.CONTROL),
    ]
    for byte in range(256):
        tokens.append(f"<0x{byte:02X}>")
        scores.append(0.0)
        types.append(int(gguf.TokenType.BYTE))

    pieces: list[str] = [_SPACE, *_SINGLE_CHARS]
    pieces += [_SPACE + ch for ch in _SINGLE_CHARS]
    for word in (*_WORDS, *_SUFFIXES):
        for text in (_SPACE + word, word):
            pieces += [text[:end] for end in range(2, len(text) + 1)]

    seen: set[str] = set(tokens)
    rank = 0
    for piece in pieces:
        if piece in seen:
            continue
        seen.add(piece)
        tokens.append(piece)
        # SentencePiece-like log-prob scores: all negative, decreasing by rank.
        scores.append(-1.0 - rank * 0.01)
        types.append(int(gguf.TokenType.NORMAL))
        rank += 1
    return tokens, scores, types


def _tensor_name(tensor: gguf.MODEL_TENSOR, bid: int | None = None) -> str:
    name = gguf.TENSOR_NAMES[tensor]
    return (name.format(bid=bid) if bid is not None else name) + ".weight"


def write_tiny_gguf(path: pathlib.Path, *, seed: int = 0,
                    chat_template: str | None = None) -> pathlib.Path:
    """Write a tiny random-weight llama model with an embedded tokenizer to ``path``.

    The same ``seed`` always yields the same bytes.  Weights are float32,
    drawn from ``normal(0, 1) * 0.02`` (norm weights are 1), which keeps the
    activations small and finite.  Returns ``path``.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    tokens, scores, types = build_vocab()
    n_vocab = len(tokens)

    def rand(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape, dtype=np.float32) * INIT_SCALE).astype(np.float32)

    def ones(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    writer = gguf.GGUFWriter(path, ARCH)
    try:
        writer.add_name(f"slmfleet-tiny-llama-seed{seed}")
        if chat_template is not None:
            writer.add_chat_template(chat_template)
        writer.add_file_type(int(gguf.LlamaFileType.ALL_F32))
        writer.add_vocab_size(n_vocab)
        writer.add_context_length(CONTEXT_LENGTH)
        writer.add_embedding_length(N_EMBD)
        writer.add_block_count(N_LAYER)
        writer.add_feed_forward_length(N_FF)
        writer.add_head_count(N_HEAD)
        writer.add_head_count_kv(N_HEAD_KV)
        writer.add_rope_dimension_count(HEAD_DIM)
        writer.add_rope_freq_base(ROPE_FREQ_BASE)
        writer.add_layer_norm_rms_eps(RMS_EPS)

        writer.add_tokenizer_model("llama")
        writer.add_token_list(tokens)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        writer.add_unk_token_id(UNK_ID)
        writer.add_bos_token_id(BOS_ID)
        writer.add_eos_token_id(EOS_ID)
        writer.add_add_bos_token(True)
        writer.add_add_eos_token(False)
        writer.add_add_space_prefix(True)

        # numpy shapes are (rows, cols) = reversed ggml ne: (n_out, n_in).
        t = gguf.MODEL_TENSOR
        writer.add_tensor(_tensor_name(t.TOKEN_EMBD), rand(n_vocab, N_EMBD))
        for bid in range(N_LAYER):
            writer.add_tensor(_tensor_name(t.ATTN_NORM, bid), ones(N_EMBD))
            writer.add_tensor(_tensor_name(t.ATTN_Q, bid), rand(N_HEAD * HEAD_DIM, N_EMBD))
            writer.add_tensor(_tensor_name(t.ATTN_K, bid), rand(N_HEAD_KV * HEAD_DIM, N_EMBD))
            writer.add_tensor(_tensor_name(t.ATTN_V, bid), rand(N_HEAD_KV * HEAD_DIM, N_EMBD))
            writer.add_tensor(_tensor_name(t.ATTN_OUT, bid), rand(N_EMBD, N_HEAD * HEAD_DIM))
            writer.add_tensor(_tensor_name(t.FFN_NORM, bid), ones(N_EMBD))
            writer.add_tensor(_tensor_name(t.FFN_GATE, bid), rand(N_FF, N_EMBD))
            writer.add_tensor(_tensor_name(t.FFN_UP, bid), rand(N_FF, N_EMBD))
            writer.add_tensor(_tensor_name(t.FFN_DOWN, bid), rand(N_EMBD, N_FF))
        writer.add_tensor(_tensor_name(t.OUTPUT_NORM), ones(N_EMBD))
        writer.add_tensor(_tensor_name(t.OUTPUT), rand(n_vocab, N_EMBD))

        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return path
