"""Servers on 127.0.0.1 for the tests: a black hole that accepts and never answers, smart
HTTP through `git http-backend` behind optional Basic auth, and `git daemon` (git:// URLs)
counting what it serves. Stopped by their users."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from upstream import trace_events

__all__ = ["BlackHole", "GitDaemon", "GitHTTPServer"]


class BlackHole:
    """Accepts TCP connections on 127.0.0.1 and never sends a byte: a stalled server."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="black-hole", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(connection)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for connection in self.accepted:
            connection.close()
        self.listener.close()


class GitHTTPHandler(BaseHTTPRequestHandler):
    """Smart HTTP through ``git http-backend`` (a CGI program), behind optional Basic auth."""

    root: Path
    credentials: str | None = None  # "user:password" required, or None for anonymous access
    requests: list[str]

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean

    def _handle(self) -> None:
        self.requests.append(self.path)
        expected = (
            self.credentials and "Basic " + base64.b64encode(self.credentials.encode()).decode()
        )
        if expected and self.headers.get("Authorization") != expected:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="repoclones test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(self.root),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": "/dev/null",
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": "127.0.0.1",
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
        }
        out = subprocess.run(
            ["git", "http-backend"], input=body, capture_output=True, env=env, timeout=30
        ).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode().split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = _handle
    do_POST = _handle


class GitHTTPServer:
    def __init__(self, root: Path, credentials: str | None) -> None:
        handler = type(
            "Handler",
            (GitHTTPHandler,),
            {"root": root, "credentials": credentials, "requests": []},
        )
        self.handler = handler
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port: int = self.server.server_address[1]
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def url(self, name: str, userinfo: str = "") -> str:
        at = f"{userinfo}@" if userinfo else ""
        return f"http://{at}127.0.0.1:{self.port}/{name}"

    @property
    def requests(self) -> list[str]:
        return self.handler.requests  # type: ignore[no-any-return]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


class GitDaemon:
    """``git daemon`` on 127.0.0.1 serving the repositories under ``root`` (as git:// URLs).

    Its ``--verbose`` log has one "Request upload-pack" line per fetch or clone served; with
    ``trace``, its upload-packs log GIT_TRACE2 events there (objects sent: ``objects_sent``).
    """

    def __init__(self, root: Path, log: Path, trace: Path | None = None) -> None:
        self.log = log
        self.trace = trace
        env = {k: v for k, v in os.environ.items() if k != "GIT_TRACE2_EVENT"}
        if trace is not None:
            env["GIT_TRACE2_EVENT"] = str(trace)
        for _ in range(5):  # a port picked free may be taken before the daemon binds it
            self.port = _free_port()
            with open(log, "wb") as stderr:
                self.proc = subprocess.Popen(
                    ["git", "daemon", "--listen=127.0.0.1", f"--port={self.port}",
                     "--export-all", f"--base-path={root}", "--reuseaddr", "--verbose",
                     "--informative-errors"],
                    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
                )  # fmt: skip
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.proc.poll() is None:
                if "Ready to rumble" in log.read_text(errors="replace"):
                    return
                time.sleep(0.02)
            self.stop()
        raise AssertionError(f"git daemon did not start: {log.read_text(errors='replace')}")

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    @property
    def upload_packs(self) -> int:
        return self.log.read_text(errors="replace").count("Request upload-pack")

    def objects_sent(self) -> list[int]:
        """Objects each pack-objects run behind the daemon wrote, in order."""
        assert self.trace is not None
        return [
            int(event["value"])
            for event in trace_events(self.trace)
            if event.get("event") == "data" and event.get("key") == "write_pack_file/wrote"
        ]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
        return port
