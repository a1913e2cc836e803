"""Metrics scraped over HTTP after real operations, and JSON logs that never show a secret:
a real server on a unix socket, a real btrfs pool and a plain pool."""

from __future__ import annotations

import io
import json
import logging
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from sharevol.cli.logs import configure_logging
from sharevol.csi._proto import csi_pb2
from sharevol.csi.server import CsiServer, build_server
from sharevol.pools.config import PoolConfig, ServerConfig
from sharevol.sys import btrfs
from tests.support.csi import MiB, Stubs, code_of, mount_cap, stubs_for

pytestmark = pytest.mark.root

C = grpc.StatusCode
SECRET = "hunter2-s3cr3t-value"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def config(btrfs_fs: Path, tmp_path: Path) -> ServerConfig:
    plain = tmp_path / "plain"
    plain.mkdir()
    return ServerConfig(
        pools=(
            PoolConfig(name="fast", path=btrfs_fs, kind="btrfs"),
            PoolConfig(name="plain", path=plain, kind="plain"),
        ),
        default_pool="fast",
    )


@pytest.fixture
def served(config: ServerConfig, tmp_path: Path) -> Iterator[tuple[CsiServer, Stubs]]:
    socket = tmp_path / "state" / "csi.sock"
    server = build_server(
        config,
        endpoint=f"unix://{socket}",
        node_id="node-1",
        mode="all",
        state_dir=tmp_path / "state",
        metrics_address="127.0.0.1:0",
    )
    server.start()
    try:
        with stubs_for(socket) as stubs:
            yield server, stubs
    finally:
        server.stop(grace=1.0)


def create_request(name: str, **params: str) -> csi_pb2.CreateVolumeRequest:
    return csi_pb2.CreateVolumeRequest(
        name=name,
        capacity_range=csi_pb2.CapacityRange(required_bytes=64 * MiB),
        volume_capabilities=[mount_cap()],
        parameters=params,
    )


def scrape(server: CsiServer) -> Samples:
    assert server.metrics is not None
    url = f"http://127.0.0.1:{server.metrics.port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


def test_metrics_show_rpcs_by_method_and_code_pools_and_volumes_after_real_calls(
    served: tuple[CsiServer, Stubs], btrfs_fs: Path
) -> None:
    server, stubs = served
    kept = stubs.controller.CreateVolume(create_request("kept")).volume
    on_plain = stubs.controller.CreateVolume(create_request("on-plain", pool="plain")).volume
    gone = stubs.controller.CreateVolume(create_request("gone")).volume
    stubs.controller.DeleteVolume(csi_pb2.DeleteVolumeRequest(volume_id=gone.volume_id))
    bad = create_request("bad", color="blue")
    assert code_of(lambda: stubs.controller.CreateVolume(bad)) is C.INVALID_ARGUMENT
    with server.locks.hold(["name:busy"]):  # another CreateVolume of "busy" is in flight
        busy = create_request("busy")
        assert code_of(lambda: stubs.controller.CreateVolume(busy)) is C.ABORTED
    data = btrfs_fs / "volumes" / kept.volume_context["sharevol.csi.io/directory"] / "data"
    data.write_bytes(b"x" * (3 * MiB))
    btrfs.sync(btrfs_fs)  # qgroup numbers are current after a commit

    samples = scrape(server)

    controller = {"service": "csi.v1.Controller"}
    requests = "sharevol_rpc_requests_total"
    assert value(samples, requests, **controller, method="CreateVolume", code="OK") == 3
    assert value(samples, requests, **controller, method="DeleteVolume", code="OK") == 1
    assert (
        value(samples, requests, **controller, method="CreateVolume", code="INVALID_ARGUMENT") == 1
    )
    assert value(samples, requests, **controller, method="CreateVolume", code="ABORTED") == 1
    latency = "sharevol_rpc_duration_seconds_count"
    assert value(samples, latency, **controller, method="CreateVolume", code="OK") == 3
    assert value(samples, "sharevol_lock_aborted_total") == 1

    assert value(samples, "sharevol_pool_up", pool="fast", kind="btrfs") == 1
    assert value(samples, "sharevol_pool_up", pool="plain", kind="plain") == 1
    size = value(samples, "sharevol_pool_capacity_bytes", pool="fast")
    free = value(samples, "sharevol_pool_free_bytes", pool="fast")
    assert size is not None and free is not None and 0 < free < size
    assert value(samples, "sharevol_pool_provisioned_bytes", pool="fast") == 64 * MiB
    assert value(samples, "sharevol_pool_provisioned_bytes", pool="plain") == 64 * MiB
    assert value(samples, "sharevol_pool_volumes", pool="fast", state="ready") == 1
    assert value(samples, "sharevol_pool_quota_enforced", pool="plain") == 0

    fast_volume = {"pool": "fast", "volume_id": kept.volume_id, "name": "kept"}
    plain_volume = {"pool": "plain", "volume_id": on_plain.volume_id, "name": "on-plain"}
    assert value(samples, "sharevol_volume_capacity_bytes", **fast_volume) == 64 * MiB
    assert value(samples, "sharevol_volume_capacity_bytes", **plain_volume) == 64 * MiB
    used = value(samples, "sharevol_volume_used_bytes", **fast_volume)
    assert used is not None and 3 * MiB <= used < 4 * MiB
    # plain pools report limits only: their usage would be a walk of every file per scrape
    assert value(samples, "sharevol_volume_used_bytes", **plain_volume) is None
    assert not any(
        name == "sharevol_volume_capacity_bytes" and ("name", "gone") in labels
        for name, labels in samples
    )


def test_json_logs_at_debug_parse_and_never_show_a_secret(
    served: tuple[CsiServer, Stubs],
) -> None:
    _server, stubs = served
    stream = io.StringIO()
    handler = configure_logging("debug", "json", stream)
    try:
        request = create_request("with-secrets")
        request.secrets["password"] = SECRET
        request.secrets[f"key-{SECRET}"] = SECRET
        created = stubs.controller.CreateVolume(request).volume
        failing = create_request("failing", color="blue")
        failing.secrets["token"] = SECRET
        assert code_of(lambda: stubs.controller.CreateVolume(failing)) is C.INVALID_ARGUMENT
        delete = csi_pb2.DeleteVolumeRequest(volume_id=created.volume_id)
        delete.secrets["password"] = SECRET
        stubs.controller.DeleteVolume(delete)
    finally:
        logging.getLogger().removeHandler(handler)
    text = stream.getvalue()

    assert SECRET not in text
    lines = [json.loads(line) for line in text.splitlines()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= line.keys()
    requests = [line for line in lines if "request" in line]
    assert {line["rpc_method"] for line in requests} >= {"CreateVolume", "DeleteVolume"}
    assert all(
        "***stripped***" in line["request"]
        for line in requests
        if line["rpc_method"] in ("CreateVolume", "DeleteVolume")
    )
    refused = [line for line in lines if line.get("grpc_code") == "INVALID_ARGUMENT"]
    assert refused and refused[0]["rpc_method"] == "CreateVolume"
    assert refused[0]["level"] == "info" and refused[0]["duration_ms"] >= 0


def test_serve_flags_give_json_logs_and_a_metrics_endpoint(
    config: ServerConfig, tmp_path: Path
) -> None:
    config_file = tmp_path / "pools.yaml"
    config_file.write_text(json.dumps(config.model_dump(mode="json")))
    socket = tmp_path / "serve" / "csi.sock"
    argv = [
        str(Path(sys.executable).parent / "sharevol"),
        "serve",
        "--config",
        str(config_file),
        "--endpoint",
        f"unix://{socket}",
        "--state-dir",
        str(tmp_path / "serve"),
        "--metrics-address",
        "127.0.0.1:0",
        "--log-format",
        "json",
    ]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        url = ""
        for raw in proc.stderr:
            line = json.loads(raw)  # every line is JSON
            if "Prometheus metrics" in line["message"]:
                url = line["message"].split(" on ", 1)[1]
                break
        assert url.startswith("http://127.0.0.1:"), url
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - http, checked
            text = response.read().decode()
        assert 'sharevol_pool_up{kind="btrfs",pool="fast"} 1.0' in text
        assert "process_open_fds" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0
