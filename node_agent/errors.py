"""Errors raised by the node agent and its workers: one hierarchy for the agent side."""


class AgentError(Exception):
    """Base class of every error the node agent raises on purpose."""


class ProtocolError(AgentError):
    """A wire message could not be decoded or validated."""


class ModelStoreError(AgentError):
    """A model download failed, or a file did not match its sha256."""


class WorkerError(AgentError):
    """A llama.cpp worker failed to start or to answer a request."""


class WorkerLost(WorkerError):
    """The worker stopped answering (it exited, disconnected or timed out); unlike a
    failed request, no further request should go to it."""


class RuntimeUnavailable(WorkerError):
    """The worker runtime cannot run workers on this node (no container engine, no image)."""


class CompletionCancelled(WorkerError):
    """The agent cancelled the completion (another node's copy of the item won); the
    worker is fine and takes the next request."""
