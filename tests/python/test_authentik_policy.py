"""Run the Authentik expression policy in examples/authentik against a real ipclass.

Authentik compiles an expression policy as the body of a function. The
function's parameters are the policy context (`ak_client_ip` as an
`ipaddress` object, `request`, `context`, ...), its globals include
`ak_logger` (a structlog logger) and `requests` (a requests Session), and
its return value is the policy result. `run_policy` does the same with the
policy file unchanged except for the value of IPCLASS_URL.
"""

import http.server
import ipaddress
import re
import socket
import threading
import time
from textwrap import indent

import pytest
import requests

from ipclass_process import REPO_ROOT, IpclassServer

POLICY_PATH = REPO_ROOT / "examples" / "authentik" / "is_internal_policy.py"
POLICY_SOURCE = POLICY_PATH.read_text()

URL_ASSIGNMENT = re.compile(r'^IPCLASS_URL = "[^"]*"$', re.MULTILINE)


def policy_constant(name: str) -> float:
    """Return the number assigned to `name` at the start of a line in the policy."""
    found = re.search(rf"^{name} = ([0-9.]+)$", POLICY_SOURCE, re.MULTILINE)
    assert found, f"{POLICY_PATH} has no line `{name} = NUMBER`"
    return float(found.group(1))


CONNECT_TIMEOUT = policy_constant("CONNECT_TIMEOUT_SECONDS")
READ_TIMEOUT = policy_constant("READ_TIMEOUT_SECONDS")
TOTAL_TIMEOUT = policy_constant("TOTAL_TIMEOUT_SECONDS")
MAX_RESPONSE_BYTES = policy_constant("MAX_RESPONSE_BYTES")
# Scheduling slack on a loaded test machine, added to every time bound.
SLACK_SECONDS = 1.0

CONFIG = """
[sets.office]
internal = true
networks = ["10.20.0.0/16", "fd20::/16"]

[sets.guest]
internal = false
networks = ["10.20.99.0/24"]
"""


class RecordingLogger:
    """Stand-in for Authentik's structlog logger that keeps each event."""

    def __init__(self):
        self.events: list[tuple[str, str, dict]] = []

    def _record(self, level: str, event: str, **fields) -> None:
        self.events.append((level, event, fields))

    def debug(self, event, **fields):
        self._record("debug", event, **fields)

    def info(self, event, **fields):
        self._record("info", event, **fields)

    def warning(self, event, **fields):
        self._record("warning", event, **fields)

    def error(self, event, **fields):
        self._record("error", event, **fields)

    def levels(self) -> list[str]:
        return [level for level, _, _ in self.events]


def run_policy(url: str, client_ip, logger: RecordingLogger, with_http_request: bool = True):
    """Compile and run the policy the way Authentik's evaluator does, and return its result."""
    source, count = URL_ASSIGNMENT.subn(f'IPCLASS_URL = "{url}"', POLICY_SOURCE)
    assert count == 1, f"{POLICY_PATH} must assign IPCLASS_URL exactly once"

    context = {"request": None, "context": {}, "ak_is_sso_flow": False}
    if with_http_request:
        context["ak_client_ip"] = client_ip
        context["http_request"] = None
    signature = ",".join(context)
    wrapped = f"def handler({signature}):\n{indent(source, '    ')}\nresult = handler({signature})"
    code = compile(wrapped, str(POLICY_PATH), "exec")

    session = requests.Session()
    globals_ = {
        "ak_logger": logger,
        "requests": session,
        "ip_address": ipaddress.ip_address,
        "ip_network": ipaddress.ip_network,
    }
    locals_ = dict(context)
    try:
        exec(code, globals_, locals_)
    finally:
        session.close()
    return locals_["result"]


def timed_policy(url: str, client_ip, logger: RecordingLogger):
    """Run the policy and return its result with the elapsed seconds."""
    started = time.monotonic()
    result = run_policy(url, client_ip, logger)
    return result, time.monotonic() - started


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    config = tmp_path_factory.mktemp("ipclass") / "ipclass.toml"
    config.write_text(CONFIG)
    with IpclassServer(config) as running:
        yield running


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("10.20.1.7", True),
        ("fd20::7", True),
        ("203.0.113.9", False),
        ("2001:db8::9", False),
        ("10.20.99.5", False),
        ("::ffff:10.20.1.7", True),
        ("::ffff:203.0.113.9", False),
    ],
)
def test_policy_matches_service_verdict(server, address, expected):
    logger = RecordingLogger()
    result = run_policy(server.url(), ipaddress.ip_address(address), logger)
    assert result is expected
    assert logger.levels() == ["debug"], logger.events


@pytest.mark.parametrize("text", ["::ffff:10.20.1.7", "::ffff:a14:107"])
def test_service_reads_both_mapped_forms_as_ipv4(server, text):
    answer = requests.get(server.url("/v1/is-internal"), params={"ip": text}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["verdict"] == "internal"
    assert answer.json()["network"] == "10.20.0.0/16"


def test_mapped_address_is_internal(server):
    mapped = ipaddress.ip_address("::ffff:10.20.1.7")
    assert isinstance(mapped, ipaddress.IPv6Address)
    logger = RecordingLogger()
    assert run_policy(server.url(), mapped, logger) is True
    _, _, fields = logger.events[0]
    # Python before 3.13 prints a mapped address in hex ("::ffff:a14:107");
    # ipclass reads either form as the same IPv4-mapped address.
    assert fields["client_ip"] == str(mapped)
    assert fields["set"] == "office"
    assert fields["network"] == "10.20.0.0/16"


def test_undetermined_address_is_not_internal(server):
    # Authentik passes 255.255.255.255 when it cannot determine the client.
    answer = requests.get(server.url("/v1/is-internal"), params={"ip": "255.255.255.255"}, timeout=5)
    assert answer.status_code == 200
    assert answer.json()["verdict"] == "unknown"
    assert answer.json()["internal"] is False

    logger = RecordingLogger()
    assert run_policy(server.url(), ipaddress.ip_address("255.255.255.255"), logger) is False
    assert logger.levels() == ["warning"]
    assert logger.events[0][2]["verdict"] == "unknown"


@pytest.mark.parametrize("address", ["0.0.0.0", "::"])
def test_unspecified_address_is_not_internal(server, address):
    logger = RecordingLogger()
    assert run_policy(server.url(), ipaddress.ip_address(address), logger) is False
    assert logger.events[0][2]["verdict"] == "unknown"


def test_missing_client_address_is_not_internal(server):
    logger = RecordingLogger()
    assert run_policy(server.url(), None, logger, with_http_request=False) is False
    assert logger.levels() == ["warning"]


def test_non_200_response_is_not_internal(server):
    # A wrong base URL makes ipclass return 404 with a JSON error body.
    answer = requests.get(server.url("/wrong/v1/is-internal"), params={"ip": "10.20.1.7"}, timeout=5)
    assert answer.status_code == 404

    logger = RecordingLogger()
    assert run_policy(server.url("/wrong"), ipaddress.ip_address("10.20.1.7"), logger) is False
    assert logger.levels() == ["warning"]
    assert logger.events[0][2]["status"] == 404


def test_stopped_service_is_not_internal_within_timeout(tmp_path):
    config = tmp_path / "ipclass.toml"
    config.write_text(CONFIG)
    with IpclassServer(config) as stopped:
        url = stopped.url()
        assert run_policy(url, ipaddress.ip_address("10.20.1.7"), RecordingLogger()) is True
        assert stopped.stop() == 0

    logger = RecordingLogger()
    result, elapsed = timed_policy(url, ipaddress.ip_address("10.20.1.7"), logger)
    assert result is False
    assert elapsed < CONNECT_TIMEOUT + SLACK_SECONDS, f"took {elapsed:.3f}s"
    assert logger.levels() == ["warning"]
    assert "ConnectionError" in logger.events[0][2]["error"]


class SilentListener:
    """A TCP listener on loopback that accepts connections and never responds."""

    def __init__(self):
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.socket.listen(8)
        self.socket.settimeout(0.2)
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def url(self) -> str:
        host, port = self.socket.getsockname()
        return f"http://{host}:{port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.socket.accept()
            except socket.timeout:
                continue
            self.accepted.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for connection in self.accepted:
            connection.close()
        self.socket.close()


def test_silent_listener_is_not_internal_within_read_timeout():
    listener = SilentListener()
    try:
        logger = RecordingLogger()
        result, elapsed = timed_policy(listener.url(), ipaddress.ip_address("10.20.1.7"), logger)
        assert result is False
        assert elapsed >= READ_TIMEOUT, f"returned after {elapsed:.3f}s, before the read timeout"
        assert elapsed < READ_TIMEOUT + SLACK_SECONDS, f"took {elapsed:.3f}s"
        assert len(listener.accepted) >= 1
        assert logger.levels() == ["warning"]
        assert "ReadTimeout" in logger.events[0][2]["error"]
    finally:
        listener.close()


class DrippingHandler(http.server.BaseHTTPRequestHandler):
    """Send the headers at once, then an internal verdict one byte every 0.3 s."""

    def do_GET(self):
        payload = b'{"verdict": "internal", "internal": true, "set": "office"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.flush()
        for index in range(len(payload)):
            if self.server.stop.wait(0.3):
                return
            self.wfile.write(payload[index : index + 1])
            self.wfile.flush()

    def log_message(self, format, *args):
        pass


def test_dripping_response_is_not_internal_within_total_timeout():
    fake = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DrippingHandler)
    fake.stop = threading.Event()
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = fake.server_address
        logger = RecordingLogger()
        result, elapsed = timed_policy(f"http://{host}:{port}", ipaddress.ip_address("10.20.1.7"), logger)
        assert result is False
        # Each byte comes well within the read timeout, and the whole body
        # would take 17 s.
        assert elapsed >= TOTAL_TIMEOUT, f"returned after {elapsed:.3f}s"
        assert elapsed < TOTAL_TIMEOUT + SLACK_SECONDS, f"took {elapsed:.3f}s"
        assert logger.levels() == ["warning"]
        assert "TimeoutError" in logger.events[0][2]["error"]
    finally:
        fake.stop.set()
        fake.shutdown()
        fake.server_close()
        thread.join(timeout=5)


class FixedResponseHandler(http.server.BaseHTTPRequestHandler):
    """Respond to every GET with the status and body set on the server."""

    def do_GET(self):
        status, body = self.server.fixed_response
        payload = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format, *args):
        pass


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (200, "not json"),
        (200, '["internal"]'),
        (200, '{"verdict": "internal", "internal": "yes"}'),
        (200, '{"verdict": "invalid", "internal": false, "error": "bad"}'),
        (500, '{"verdict": "internal", "internal": true}'),
        (200, '{"verdict": "internal", "internal": true, "pad": "' + "x" * int(MAX_RESPONSE_BYTES) + '"}'),
    ],
)
def test_malformed_response_is_not_internal(status, body):
    fake = http.server.HTTPServer(("127.0.0.1", 0), FixedResponseHandler)
    fake.fixed_response = (status, body)
    thread = threading.Thread(target=fake.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = fake.server_address
        logger = RecordingLogger()
        assert run_policy(f"http://{host}:{port}", ipaddress.ip_address("10.20.1.7"), logger) is False
        assert logger.levels() == ["warning"]
    finally:
        fake.shutdown()
        fake.server_close()
        thread.join(timeout=5)

