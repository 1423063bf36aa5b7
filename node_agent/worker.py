"""The llama.cpp worker: one process that loads one GGUF model and serves completions.

It listens on a ZeroMQ PAIR socket (ipc or loopback) owned by its agent. After the model
loads it sends `{"type": "ready"}`; then for every request it streams the completion
and answers with the text and its timings (time to first token, per-output-token
time, end to end), measured here around llama.cpp so transport is not counted.
Run as `python -m node_agent.worker --model PATH --endpoint ENDPOINT`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import zmq


def _serve(llm: Any, socket: zmq.Socket[bytes]) -> None:
    while True:
        request = json.loads(socket.recv())
        if request.get("type") == "stop":
            return
        try:
            reply = _complete(llm, request)
        except Exception as exc:  # noqa: BLE001 - any llama.cpp failure goes back to the agent
            reply = {"type": "error", "id": request.get("id"), "message": repr(exc)}
        socket.send(json.dumps(reply).encode())


def _complete(llm: Any, request: dict[str, Any]) -> dict[str, Any]:
    prompt = str(request["prompt"])
    prompt_tokens = len(llm.tokenize(prompt.encode(), add_bos=True))
    start = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    completion_tokens = 0
    stream = llm.create_completion(
        prompt,
        max_tokens=int(request["max_tokens"]),
        temperature=float(request["temperature"]),
        seed=int(request["seed"]),
        stop=list(request["stop"]) or None,
        stream=True,
    )
    for chunk in stream:
        if first is None:
            first = time.perf_counter()
        completion_tokens += 1
        pieces.append(chunk["choices"][0]["text"])
    end = time.perf_counter()
    ttft = (first or end) - start
    decode_s = end - (first or end)
    tpot = decode_s / (completion_tokens - 1) if completion_tokens > 1 else 0.0
    return {
        "type": "done",
        "id": request["id"],
        "text": "".join(pieces),
        "ttft_s": ttft,
        "tpot_s": tpot,
        "e2e_s": end - start,
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n-ctx", type=int, default=2048)
    args = parser.parse_args(argv)

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
    socket.send(json.dumps({"type": "ready"}).encode())
    try:
        _serve(llm, socket)
    finally:
        socket.close()
        context.term()
    return 0


if __name__ == "__main__":
    sys.exit(main())
