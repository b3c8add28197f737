"""Run the real `ipclass serve` binary for Python tests.

The server listens on 127.0.0.1 with a port the kernel picks and logs JSON;
`IpclassServer` reads the bound address from the "listening" log line. The
binary comes from the IPCLASS_BIN environment variable, or
target/debug/ipclass in the repository when it is unset.
"""

import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

# Maximum seconds a test waits for the server to log a line it expects.
LOG_TIMEOUT_SECONDS = 30.0


def binary_path() -> Path:
    """Return the ipclass binary to test, from IPCLASS_BIN or the debug build."""
    configured = os.environ.get("IPCLASS_BIN")
    if configured:
        return Path(configured)
    return REPO_ROOT / "target" / "debug" / "ipclass"


class IpclassServer:
    """A running `ipclass serve` process, stopped by `stop()` or on exit of a `with` block."""

    def __init__(self, config: Path, extra_args: tuple[str, ...] = ()):
        binary = binary_path()
        if not binary.is_file():
            raise FileNotFoundError(
                f"ipclass binary not found at {binary}; run `cargo build` or set IPCLASS_BIN"
            )
        command = [
            str(binary),
            "serve",
            "--config",
            str(config),
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            *extra_args,
        ]
        environment = dict(os.environ, RUST_LOG="info")
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=environment,
        )
        # Every stderr line, kept for failure messages.
        self.log_lines: list[str] = []
        self._lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            listening = self.wait_for_log(lambda line: line.get("message") == "listening")
        except AssertionError:
            self.stop()
            raise
        self.address: str = listening["address"]

    def __enter__(self) -> "IpclassServer":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def url(self, path: str = "") -> str:
        """Return the HTTP URL of `path` on this server."""
        return f"http://{self.address}{path}"

    def wait_for_log(self, accept, timeout: float = LOG_TIMEOUT_SECONDS) -> dict:
        """Wait for a JSON log line for which `accept` is true and return it.

        Raises AssertionError with the log so far when none arrives in time
        or the process exits first.
        """
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(
                    f"expected log line did not arrive within {timeout}s; log so far:\n"
                    + "\n".join(self.log_lines)
                )
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise AssertionError(
                    f"ipclass exited with {self.process.wait()} before the expected log line; "
                    "log:\n" + "\n".join(self.log_lines)
                )
            if accept(line):
                return line

    def stop(self, timeout: float = 10.0) -> int:
        """Send SIGTERM, wait up to `timeout` seconds, then kill. Return the exit code."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def _read_stderr(self) -> None:
        for raw in self.process.stderr:
            text = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.log_lines.append(text)
            try:
                line = json.loads(text)
            except ValueError:
                continue
            if isinstance(line, dict):
                self._lines.put(line)
        # End of stderr: the process has exited.
        self._lines.put(None)
