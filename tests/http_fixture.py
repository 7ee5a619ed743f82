"""A local HTTP file server with Range support, for download tests (127.0.0.1 only)."""

from __future__ import annotations

import http.server
import os
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class Hit:
    """One request the fixture server answered."""

    path: str
    range: str | None
    status: int
    body_bytes: int


@dataclass
class FileServer:
    """A running server: files under root are served at url; hits records every request."""

    root: Path
    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    ignore_range: bool = False  # behave like a server without Range support
    lock: threading.Lock = field(default_factory=threading.Lock)

    def paths(self) -> list[str]:
        """Request paths in order."""
        with self.lock:
            return [h.path for h in self.hits]


def _handler(server_state: FileServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def _record(self, status: int, nbytes: int) -> None:
            with server_state.lock:
                server_state.hits.append(Hit(self.path, self.headers.get("Range"), status, nbytes))

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            rel = self.path.split("?", 1)[0].lstrip("/")
            target = (server_state.root / rel).resolve()
            if server_state.root.resolve() not in target.parents or not target.is_file():
                self._record(404, 0)  # before answering: the client may check hits right after
                self.send_error(404)
                return
            size = target.stat().st_size
            start, end = 0, size - 1
            status = 200
            header = self.headers.get("Range")
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", header or "")
            if m and not server_state.ignore_range:
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
                if start >= size:
                    self._record(416, 0)
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 206
            length = end - start + 1
            self._record(status, length)
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
            self.end_headers()
            with open(target, "rb") as f:
                f.seek(start)
                shutil.copyfileobj(_Limited(f, length), self.wfile)

    return Handler


class _Limited:
    def __init__(self, f, n: int) -> None:
        self.f, self.n = f, n

    def read(self, size: int = -1) -> bytes:
        size = self.n if size < 0 else min(size, self.n)
        data = self.f.read(size)
        self.n -= len(data)
        return data


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve tmp_path/'served' on 127.0.0.1 (ephemeral port) for the duration of a test."""
    root = tmp_path / "served"
    root.mkdir()
    state = FileServer(root=root)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
    )
    thread.start()
    # urllib would send requests to a proxy from the environment instead of 127.0.0.1.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.lower().endswith("_proxy")}
    try:
        yield state
    finally:
        os.environ.update(saved)
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
