"""The llama.cpp worker: one process that loads one GGUF model and serves completions.

It listens on a ZeroMQ PAIR socket (ipc or loopback) owned by its agent. After the model
loads it sends `{"type": "ready"}`; then for every request it streams the completion
and answers with the text and its timings (time to first token, per-output-token
time, end to end), measured here around llama.cpp so transport is not counted.
TTFT is the time until the first token is sampled (prompt processing included); TPOT
is the mean time between later tokens.
Run as `python -m node_agent.worker --model PATH --endpoint ENDPOINT`. With
`--health-file PATH` (or `SLMFLEET_HEALTH_FILE`, set in the worker image) it touches that
file once the model is loaded and every few seconds after, so a container health check
can tell a live, loaded worker from a stuck or still-loading one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq


def _serve(llm: Any, socket: zmq.Socket[bytes]) -> None:
    inbox = Inbox(socket)
    while True:
        request = inbox.next()
        if request.get("type") == "stop":
            return
        if request.get("type") == "cancel":  # for a request already answered
            continue
        try:
            reply = _score(llm, request) if request.get("kind") == "score" \
                else _complete(llm, request, inbox)
        except Exception as exc:  # noqa: BLE001 - any llama.cpp failure goes back to the agent
            reply = {"type": "error", "id": request.get("id"), "message": repr(exc)}
        socket.send(json.dumps(reply).encode())


class Inbox:
    """The worker's messages from its agent. While a completion runs, `cancelled` is
    asked between tokens: it reads what has arrived without waiting, notes a `cancel`
    of that request, and keeps anything else for `next`."""

    def __init__(self, socket: zmq.Socket[bytes]) -> None:
        self._socket = socket
        self._kept: list[dict[str, Any]] = []

    def next(self) -> dict[str, Any]:
        if self._kept:
            return self._kept.pop(0)
        message: dict[str, Any] = json.loads(self._socket.recv())
        return message

    def cancelled(self, request_id: str) -> bool:
        found = False
        while self._socket.poll(0):
            message = json.loads(self._socket.recv())
            if message.get("type") == "cancel":
                found = found or message.get("id") == request_id
            else:
                self._kept.append(message)
        return found


class TokenClock:
    """Notes the moment each token is sampled, to count tokens and time the first one;
    stops the generation when `stop_when()` says so (the agent cancelled the request).

    llama-cpp-python (0.3.x) calls a stopping criterion once per sampled token, before
    its text is held back for stop sequences or multi-byte characters, and then once
    more after generation ends (to set `finish_reason`). Stream chunks cannot be
    counted instead: they merge held-back text and end with an empty chunk.
    """

    def __init__(self, stop_when: Callable[[], bool] = lambda: False) -> None:
        self.stamps: list[float] = []
        self._stop_when = stop_when
        self.stopped = False

    def __call__(self, _input_ids: Any, _logits: Any) -> bool:
        self.stamps.append(time.perf_counter())
        self.stopped = self.stopped or self._stop_when()
        return self.stopped

    @property
    def sampled(self) -> list[float]:
        """Sampling times of the generated tokens (the last, bookkeeping call dropped)."""
        return self.stamps[:-1]


def _complete(llm: Any, request: dict[str, Any], inbox: Inbox | None = None
              ) -> dict[str, Any]:
    from llama_cpp import StoppingCriteriaList

    prompt = str(request["prompt"])
    prompt_tokens = len(llm.tokenize(prompt.encode(), add_bos=True))
    clock = TokenClock((lambda: inbox.cancelled(str(request["id"]))) if inbox else
                       (lambda: False))
    start = time.perf_counter()
    stream = llm.create_completion(
        prompt,
        max_tokens=int(request["max_tokens"]),
        temperature=float(request["temperature"]),
        seed=int(request["seed"]),
        stop=list(request["stop"]) or None,
        stopping_criteria=StoppingCriteriaList([clock]),
        stream=True,
    )
    text = "".join(chunk["choices"][0]["text"] for chunk in stream)
    if clock.stopped:
        return {"type": "cancelled", "id": request["id"]}
    end = time.perf_counter()
    sampled = clock.sampled
    first, last = (sampled[0], sampled[-1]) if sampled else (end, end)
    return {
        "type": "done",
        "id": request["id"],
        "text": text,
        "ttft_s": first - start,
        "tpot_s": (last - first) / (len(sampled) - 1) if len(sampled) > 1 else 0.0,
        "e2e_s": end - start,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": len(sampled),
    }


def token_logprobs(llm: Any, text: str, *, chunk: int = 64) -> list[float]:
    """Log-probability of each token of `text` given the tokens before it (after BOS).

    The text is decoded in chunks with logits requested for every position of the chunk
    only, so memory stays at chunk x vocabulary floats (a model loaded with logits_all
    would hold the whole context's). Uses llama-cpp-python's low-level context and batch
    (pinned version; checked against logits_all scores by the tests).
    """
    import numpy as np

    tokens = llm.tokenize(text.encode(), add_bos=True)
    if len(tokens) > llm.n_ctx():
        raise ValueError(f"the text has {len(tokens)} tokens but the context holds "
                         f"{llm.n_ctx()}; split it into shorter items")
    n_vocab = llm.n_vocab()
    llm.reset()
    llm._ctx.kv_cache_clear()
    logprobs: list[float] = []
    try:
        for start in range(0, len(tokens) - 1, chunk):
            part = tokens[start:start + chunk]
            llm._batch.set_batch(batch=part, n_past=start, logits_all=True)
            llm._ctx.decode(llm._batch)
            for i in range(len(part)):
                target = start + i + 1
                if target >= len(tokens):
                    break
                logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(n_vocab,))
                logits = logits.astype(np.float64)
                top = logits.max()
                norm = top + np.log(np.exp(logits - top).sum())
                logprobs.append(float(logits[tokens[target]] - norm))
    finally:
        llm._ctx.kv_cache_clear()  # the completion cache no longer matches: start afresh
        llm.reset()
    return logprobs


def _score(llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    start = time.perf_counter()
    logprobs = token_logprobs(llm, str(request["prompt"]))
    end = time.perf_counter()
    return {"type": "done", "id": request["id"],
            "text": json.dumps({"logprob_sum": sum(logprobs), "tokens": len(logprobs)}),
            "ttft_s": end - start, "tpot_s": 0.0, "e2e_s": end - start,
            "prompt_tokens": len(logprobs) + 1, "completion_tokens": 0}


HEALTH_INTERVAL_S = 5.0


def keep_healthy(path: Path, *, interval_s: float = HEALTH_INTERVAL_S) -> threading.Event:
    """Touch `path` now and every `interval_s` from a daemon thread; set the event to stop.

    llama.cpp releases the GIL while it computes, so the file stays fresh during long
    completions; it goes stale only if the interpreter itself is stuck.
    """
    stop = threading.Event()
    path.touch()

    def beat() -> None:
        while not stop.wait(interval_s):
            path.touch()

    threading.Thread(target=beat, name="health", daemon=True).start()
    return stop


AGENT_PID_ENV = "SLMFLEET_AGENT_PID"  # set by the process runtime
PR_SET_PDEATHSIG = 1


def end_with_agent() -> bool:
    """A worker run by an agent's process runtime dies with that agent: the kernel sends
    it SIGTERM when the agent exits, however it exits (kill -9 too), so no worker is left
    loaded and waiting forever. False if the agent is already gone."""
    agent = os.environ.get(AGENT_PID_ENV)
    if not agent or not sys.platform.startswith("linux"):
        return True  # in a container: the container's lifetime is the agent's business
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    return os.getppid() == int(agent)  # it may have died before prctl took effect


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--health-file", default=os.environ.get("SLMFLEET_HEALTH_FILE"))
    args = parser.parse_args(argv)

    if not end_with_agent():
        return 3
    context = zmq.Context()
    socket = context.socket(zmq.PAIR)
    socket.setsockopt(zmq.LINGER, 1000)
    socket.connect(args.endpoint)
    try:
        from llama_cpp import Llama

        llm = Llama(
            model_path=args.model,
            n_ctx=args.n_ctx,
            n_threads=args.threads,
            n_batch=min(512, args.n_ctx),
            verbose=False,
        )
    except Exception as exc:  # noqa: BLE001 - reported to the agent, then exit non-zero
        socket.send(json.dumps({"type": "failed", "message": f"cannot load model: {exc}"}).encode())
        socket.close()
        context.term()
        return 2
    healthy = keep_healthy(Path(args.health_file)) if args.health_file else None
    socket.send(json.dumps({"type": "ready"}).encode())
    try:
        _serve(llm, socket)
    finally:
        if healthy is not None:
            healthy.set()
        socket.close()
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
