"""Fixtures of the serving tests: settings on temp dirs, demo media, a loopback HTTP server, a moto S3 server."""

from __future__ import annotations

import dataclasses
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tools.make_demo_inputs import write_demo_inputs
from worker.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Poll `url` until it answers (any status), failing early when `process` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server process exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@pytest.fixture
def make_settings(tmp_path) -> Callable[..., Settings]:
    """Settings from a clean environment (model root and outputs in tmp_path), with field overrides."""
    root = tmp_path / "root"
    root.mkdir()

    def make(**overrides) -> Settings:
        env = {"SCAIL_MODEL_ROOT": str(root), "SCAIL_OUTPUT_DIR": str(tmp_path / "outputs"), "SCAIL_DEVICE": "cpu"}
        return dataclasses.replace(Settings.from_env(env), **overrides)

    return make


@pytest.fixture(scope="session")
def demo_media(tmp_path_factory):
    """A reference png and a 48-frame 16 fps driving mp4 (256x256)."""
    return write_demo_inputs(tmp_path_factory.mktemp("demo"), width=256, height=256, seconds=3.0, fps=16.0)


class Routes(http.server.BaseHTTPRequestHandler):
    """GET handler answering from the server's `routes`: path -> (status, headers, body) or a callable.

    Content-Length is added unless the route's headers map it to None (then the body ends at close).
    """

    def do_GET(self):  # noqa: N802 - http.server's naming
        route = self.server.routes.get(self.path)
        self.server.hits.append(self.path)
        if route is None:
            status, headers, body = 404, {}, b"not found"
        else:
            status, headers, body = route() if callable(route) else route
        self.send_response(status)
        for name, value in headers.items():
            if value is not None:  # None: leave the header out
                self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def http_server():
    """A threaded HTTP server on 127.0.0.1; set `server.routes[path]`, read `server.hits`; base URL in `.url`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    server.routes, server.hits = {}, []
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def moto_endpoint():
    """A moto S3 server on a random loopback port for the whole session; yields its endpoint URL."""
    port = free_port()
    moto = Path(sys.executable).with_name("moto_server")
    command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
    process = subprocess.Popen(
        [*command, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url, 30, process)
        yield url
    finally:
        process.terminate()
        process.wait(10)
