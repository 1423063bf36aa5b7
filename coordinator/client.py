"""A small HTTP client for the coordinator's API, used by the CLI and the demo.

Every call has a timeout; an error answer becomes a `ClientError` carrying the
server's own explanation.
"""

from __future__ import annotations

from typing import Any

import httpx

from coordinator.errors import SlmfleetError


class ClientError(SlmfleetError):
    """The coordinator answered with an error, or could not be reached."""


class Client:
    def __init__(self, base_url: str, *, timeout_s: float = 30.0) -> None:
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api/v1",
                                  timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the coordinator at {self._http.base_url}: "
                              f"{exc}; is `slmfleet coordinator` running?") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ClientError(f"{method} {path} failed ({response.status_code}): {detail}")
        return response.json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health")  # type: ignore[no-any-return]

    def nodes(self) -> list[dict[str, Any]]:
        return self._call("GET", "/nodes")  # type: ignore[no-any-return]

    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/models")  # type: ignore[no-any-return]

    def add_model(self, *, name: str, path: str, threads: int = 2, n_ctx: int = 2048,
                  cpus: float | None = None, memory_mb: int | None = None) -> dict[str, Any]:
        return self._call("POST", "/models",  # type: ignore[no-any-return]
                          json={"name": name, "path": path, "threads": threads,
                                "n_ctx": n_ctx, "cpus": cpus, "memory_mb": memory_mb})

    def update_model(self, name: str, **changes: Any) -> dict[str, Any]:
        return self._call("PATCH", f"/models/{name}", json=changes)  # type: ignore[no-any-return]

    def drain_node(self, node_id: int) -> dict[str, Any]:
        return self._call("POST", f"/nodes/{node_id}/drain")  # type: ignore[no-any-return]

    def resume_node(self, node_id: int) -> dict[str, Any]:
        return self._call("POST", f"/nodes/{node_id}/resume")  # type: ignore[no-any-return]

    def revoke_node(self, node_id: int) -> dict[str, Any]:
        return self._call("POST", f"/nodes/{node_id}/revoke")  # type: ignore[no-any-return]

    def remove_model(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/models/{name}")  # type: ignore[no-any-return]

    def submit(self, spec: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/jobs", json=spec)  # type: ignore[no-any-return]

    def jobs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/jobs")  # type: ignore[no-any-return]

    def job(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")  # type: ignore[no-any-return]

    def results(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/results")  # type: ignore[no-any-return]

    def cancel(self, job_id: int) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def judge(self, job_id: int, *, model: str) -> dict[str, Any]:
        return self._call("POST", f"/jobs/{job_id}/judge",  # type: ignore[no-any-return]
                          json={"model": model})

    def report(self, job_id: int) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}/report")  # type: ignore[no-any-return]

    def compare(self, *, base: int, candidate: int) -> dict[str, Any]:
        return self._call("GET", "/compare",  # type: ignore[no-any-return]
                          params={"base": base, "candidate": candidate})

    def datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/datasets")  # type: ignore[no-any-return]

    def add_dataset(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/datasets", json=body)  # type: ignore[no-any-return]
