"""Unit tests for the Docker runtime's pure parts: container settings, limits, exit reasons,
memory from stats, and which runtime an agent picks. The real engine is exercised in
tests/integration/test_docker_runtime.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from node_agent.docker_runtime import (
    LABEL_AGENT,
    LABEL_MANAGED,
    LABEL_MODEL,
    LABEL_SPEC,
    MODEL_MOUNT,
    DockerSettings,
    container_config,
    container_memory_mb,
    container_name,
    describe_exit,
    effective_limits,
    own_container_candidates,
    spec_hash,
    worker_network,
)
from node_agent.protocol import WorkerSpec
from node_agent.runtime_choice import choose_runtime

SPEC = WorkerSpec(model="gemma-3-270m", sha256="a" * 64, size=100, threads=2, n_ctx=2048)


def test_container_config_mounts_the_model_read_only_and_labels_the_container() -> None:
    config = container_config(SPEC, agent="pi-01", settings=DockerSettings(image="w:1"),
                              model_path=Path("/var/lib/m/aa.gguf"), port=40123,
                              network="host")
    assert config["image"] == "w:1"
    assert config["volumes"] == {"/var/lib/m/aa.gguf": {"bind": MODEL_MOUNT, "mode": "ro"}}
    assert config["read_only"] is True and "/tmp" in config["tmpfs"]
    assert config["network_mode"] == "host"
    assert config["labels"] == {LABEL_MANAGED: "true", LABEL_AGENT: "pi-01",
                                LABEL_MODEL: "gemma-3-270m", LABEL_SPEC: spec_hash(SPEC)}
    command = config["command"]
    assert command[command.index("--endpoint") + 1] == "tcp://127.0.0.1:40123"
    assert command[command.index("--model") + 1] == MODEL_MOUNT
    assert command[command.index("--threads") + 1] == "2"
    assert config["restart_policy"] == {"Name": "no"}  # the agent restarts, with backoff
    assert "nano_cpus" not in config and "mem_limit" not in config  # no limits asked


def test_limits_are_the_tighter_of_spec_and_node_caps() -> None:
    limited = SPEC.model_copy(update={"cpus": 2.0, "memory_mb": 1024})
    assert effective_limits(limited, DockerSettings()) == (2.0, 1024)
    assert effective_limits(limited, DockerSettings(max_cpus=1.5, max_memory_mb=4096)) == \
        (1.5, 1024)
    assert effective_limits(SPEC, DockerSettings(max_memory_mb=512)) == (None, 512)
    config = container_config(limited, agent="a", settings=DockerSettings(max_cpus=1.5),
                              model_path=Path("/m"), port=1, network="host")
    assert config["nano_cpus"] == 1_500_000_000
    assert config["mem_limit"] == config["memswap_limit"] == "1024m"


def test_spec_hash_changes_with_any_setting() -> None:
    hashes = {spec_hash(SPEC), spec_hash(SPEC.model_copy(update={"threads": 1})),
              spec_hash(SPEC.model_copy(update={"n_ctx": 1024})),
              spec_hash(SPEC.model_copy(update={"memory_mb": 900}))}
    assert len(hashes) == 4


def test_container_names_are_valid_and_unique() -> None:
    first, second = container_name("pi 01", "Qwen/2.5:q4"), container_name("pi 01", "Qwen/2.5:q4")
    assert first != second
    for name in (first, second):
        assert name.startswith("slmfleet-pi-01-Qwen-2.5-q4-")
        assert all(c.isalnum() or c in "_.-" for c in name)


def test_workers_share_the_agents_network() -> None:
    assert worker_network("auto", own_container=None) == "host"
    assert worker_network("auto", own_container="3f2a") == "container:3f2a"
    assert worker_network("container:agent-1", own_container=None) == "container:agent-1"


def test_own_container_candidates_come_from_docker_mounts_then_the_hostname() -> None:
    cid = "4b1c" * 16
    mountinfo = (  # as read inside a container of Docker 20.10 (one line of three kept)
        f"612 590 254:0 /var/lib/docker/containers/{cid}/hostname /etc/hostname rw,relatime"
        " - ext4 /dev/vda rw\n"
        "590 570 0:52 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/x\n")
    assert own_container_candidates(mountinfo=mountinfo, hostname="4b1c4b1c4b1c") == \
        [cid, "4b1c4b1c4b1c"]
    assert own_container_candidates(mountinfo="", hostname="pi-07") == ["pi-07"]


@pytest.mark.parametrize(("state", "expected"), [
    ({"Status": "exited", "ExitCode": 137, "OOMKilled": True},
     "killed for running out of memory (its memory limit of 512 MB"),
    ({"Status": "exited", "ExitCode": 2, "OOMKilled": False}, "container exited with code 2"),
    ({"Status": "running", "Health": {"Status": "unhealthy"}}, "failed its health check"),
    ({"Status": "removed"}, "container removed"),
])
def test_exit_reasons_say_what_happened(state: dict[str, object], expected: str) -> None:
    assert expected in describe_exit(state, memory_mb=512)


def test_memory_from_stats_subtracts_inactive_cache_on_cgroup_v1_and_v2() -> None:
    v1 = {"memory_stats": {"usage": 300 * 2**20, "stats": {"total_inactive_file": 100 * 2**20}}}
    v2 = {"memory_stats": {"usage": 300 * 2**20, "stats": {"inactive_file": 50 * 2**20}}}
    assert container_memory_mb(v1) == pytest.approx(200)
    assert container_memory_mb(v2) == pytest.approx(250)
    assert container_memory_mb({}) == 0.0


def test_runtime_choice() -> None:
    assert choose_runtime("auto", on_pi=True, engine_answers=True) == "docker"
    assert choose_runtime("auto", on_pi=True, engine_answers=False) == "process"
    assert choose_runtime("auto", on_pi=False, engine_answers=True) == "process"
    # an explicit choice is kept: a missing engine is then reported, not papered over
    assert choose_runtime("docker", on_pi=False, engine_answers=False) == "docker"
    assert choose_runtime("process", on_pi=True, engine_answers=True) == "process"
    with pytest.raises(ValueError, match="unknown runtime 'podman'"):
        choose_runtime("podman", on_pi=True, engine_answers=True)
