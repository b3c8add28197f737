"""Fixtures for the Python client tests: a running ``ipclass serve`` and the
gRPC stubs generated from proto/ when the tests start.

The binary comes from the IPCLASS_BIN environment variable, which the cargo
test tests/python.rs sets to the binary it built.
"""

import importlib
import json
import os
import pathlib
import queue
import subprocess
import sys
import threading
import time

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 30

CLASSIFIER_CONFIG = """
[sets.home-lan]
internal = true
networks = ["192.168.1.0/24", "fd12:3456:789a::/48"]

[sets.guest-wifi]
internal = false
networks = ["192.168.1.192/26"]

[sets.link-local]
internal = true
networks = ["fe80::/10"]

[sets.hosts]
internal = true
networks = ["203.0.113.7/32", "2001:db8::7/128"]

[sets.vpn]
internal = true
files = ["vpn.txt"]
"""

VPN_LIST = "# WireGuard peers\n10.8.0.0/24\n"


class RunningClassifier:
    """An ``ipclass serve`` process and the address it listens on."""

    def __init__(self, process, address):
        self.process = process
        self.address = address

    @property
    def http_url(self):
        return f"http://{self.address}"

    def stop(self):
        self.process.kill()
        self.process.wait(timeout=START_TIMEOUT_SECONDS)


def _ipclass_binary():
    binary = os.environ.get("IPCLASS_BIN")
    if not binary:
        raise RuntimeError("IPCLASS_BIN is not set; run these tests through `cargo test --test python`")
    return binary


def _start_classifier(config_path, extra_args):
    """Start the server on a free port and wait for its "listening" log line."""
    process = subprocess.Popen(
        [_ipclass_binary(), "--log-format", "json", "serve", "--listen", "127.0.0.1:0",
         "--config", str(config_path), *extra_args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "RUST_LOG": "info"},
    )
    lines = queue.Queue()

    def read_log():
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read_log, daemon=True).start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(deadline - time.monotonic(), 0))
        except queue.Empty:
            line = None
        if line is None:
            process.kill()
            raise RuntimeError("ipclass did not report listening; log:\n" + "".join(seen))
        seen.append(line)
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("message") == "listening":
            return RunningClassifier(process, record["address"])


@pytest.fixture
def start_classifier(tmp_path):
    """Return a function that starts ipclass on config text; stopped after the test."""
    started = []

    def start(config_text, *extra_args):
        (tmp_path / "vpn.txt").write_text(VPN_LIST)
        config_path = tmp_path / "ipclass.toml"
        config_path.write_text(config_text)
        server = _start_classifier(config_path, extra_args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """An ipclass server on CLASSIFIER_CONFIG, shared by a test module."""
    folder = tmp_path_factory.mktemp("classifier")
    (folder / "vpn.txt").write_text(VPN_LIST)
    config_path = folder / "ipclass.toml"
    config_path.write_text(CLASSIFIER_CONFIG)
    server = _start_classifier(config_path, ())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def ipclass_stubs(tmp_path_factory):
    """Generate the Python gRPC stubs from proto/ and return (pb2, pb2_grpc)."""
    out = tmp_path_factory.mktemp("stubs")
    proto_root = REPO / "proto"
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{proto_root}",
         f"--python_out={out}", f"--grpc_python_out={out}",
         str(proto_root / "ipclass" / "v1" / "ipclass.proto")],
        check=True,
    )
    sys.path.insert(0, str(out))
    try:
        pb2 = importlib.import_module("ipclass.v1.ipclass_pb2")
        pb2_grpc = importlib.import_module("ipclass.v1.ipclass_pb2_grpc")
    finally:
        sys.path.remove(str(out))
    return pb2, pb2_grpc
