"""The process runtime with a real llama.cpp worker process on a real GGUF file."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import zmq.asyncio

from node_agent.errors import CompletionCancelled, WorkerError
from node_agent.runtime import Completion, CompletionRequest, ProcessRuntime, ProcessWorker
from tests.support.specs import worker_spec

pytestmark = pytest.mark.integration

REQUEST = CompletionRequest(prompt="Message: the app crashes\nLabel:", stop=("\n",),
                            max_tokens=6, temperature=0.0, seed=7)


@contextlib.asynccontextmanager
async def _runtime(run_dir: Path) -> AsyncIterator[ProcessRuntime]:
    context = zmq.asyncio.Context()
    try:
        yield ProcessRuntime(context=context, run_dir=run_dir)
    finally:
        context.term()


def test_worker_serves_streamed_completions_with_timings(tiny_model: Path,
                                                         tmp_path: Path) -> None:
    # a run directory far longer than a Unix socket path may be (~107 bytes) must work
    run_dir = tmp_path / ("deep-" * 30)

    async def scenario() -> tuple[Completion, Completion, float]:
        async with _runtime(run_dir) as runtime:
            worker = await runtime.start(worker_spec("tiny", tiny_model), path=tiny_model,
                                         timeout_s=60)
            try:
                first = await worker.complete(REQUEST, timeout_s=60)
                again = await worker.complete(REQUEST, timeout_s=60)
                return first, again, worker.rss_mb()
            finally:
                await worker.stop()
                assert not worker.alive()

    first, again, rss = asyncio.run(scenario())
    assert first.text == again.text, "temperature 0 with a fixed seed is deterministic"
    assert "\n" not in first.text, "the stop sequence ends the completion"
    assert 0 < first.completion_tokens <= REQUEST.max_tokens  # sampled, EOS included
    assert first.prompt_tokens > 5
    assert 0 < first.ttft_s <= first.e2e_s
    assert first.tokens_per_s >= 0
    assert first.peak_rss_mb > 0 and rss > 0


@pytest.mark.parametrize(("content", "expected"), [
    (b"GGUF" + b"\x00" * 64, "cannot load model"),
    (b"definitely not a model", "cannot load model"),
])
def test_corrupt_model_fails_to_start_with_a_clear_error(
        tmp_path: Path, tiny_model: Path, content: bytes, expected: str) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(content)

    async def scenario() -> None:
        async with _runtime(tmp_path / "run") as runtime:
            await runtime.start(worker_spec("broken", broken, n_ctx=256), path=broken,
                                timeout_s=60)

    with pytest.raises(WorkerError, match=expected):
        asyncio.run(scenario())


def test_worker_without_a_connected_peer_fails_fast_and_stops(tmp_path: Path) -> None:
    """A live process whose socket peer is gone: complete() errors, stop() returns.

    A ZeroMQ PAIR send waits forever when no peer is connected; both calls must not.
    """
    async def scenario() -> tuple[str, bool]:
        context = zmq.asyncio.Context()
        socket = context.socket(zmq.PAIR)
        socket.bind_to_random_port("tcp://127.0.0.1")
        process = subprocess.Popen(["sleep", "60"])
        worker = ProcessWorker(model="ghost", process=process, socket=socket)
        try:
            with pytest.raises(WorkerError) as failure:
                await asyncio.wait_for(worker.complete(REQUEST, timeout_s=5), timeout=30)
            await asyncio.wait_for(worker.stop(), timeout=30)
            return str(failure.value), worker.alive()
        finally:
            process.kill()
            process.wait()
            context.destroy(linger=0)

    message, alive = asyncio.run(scenario())
    assert "not connected" in message
    assert not alive, "stop() ends a worker that does not answer"


def test_a_cancelled_completion_stops_and_the_worker_serves_the_next(
        tiny_model: Path, tmp_path: Path) -> None:
    """Cancelling (the other copy of a backed-up item won) stops generation between
    tokens: the long completion ends as cancelled, well short of its budget, and the
    same worker then answers the next request."""
    long = CompletionRequest(prompt="Hello", stop=(), max_tokens=400, temperature=0.0,
                             seed=1)

    async def scenario() -> tuple[BaseException | Completion, Completion]:
        async with _runtime(tmp_path / "run") as runtime:
            worker = await runtime.start(worker_spec("tiny", tiny_model, n_ctx=512),
                                         path=tiny_model, timeout_s=60)
            try:
                running = asyncio.create_task(worker.complete(long, timeout_s=300))
                while not worker.serving:  # the request went out
                    await asyncio.sleep(0.01)
                await worker.cancel()
                outcome = (await asyncio.gather(running, return_exceptions=True))[0]
                return outcome, await worker.complete(REQUEST, timeout_s=60)
            finally:
                await worker.stop()

    outcome, after = asyncio.run(scenario())
    assert isinstance(outcome, CompletionCancelled), outcome
    assert after.completion_tokens > 0
