"""Real object-store servers for the tests: moto's S3 server and a GCS emulator, as subprocesses on 127.0.0.1.

moto runs in server mode in its own process (in-process, its mock deadlocks with pyarrow's S3 client). Each
server is started once per test session (once per xdist worker), on a free port, and always stopped.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

BIN = Path(sys.executable).parent
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask an instance metadata service
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A server process and how to reach it."""

    name: str
    endpoint: str
    """``http://127.0.0.1:PORT``"""
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def host_port(self) -> str:
        return self.endpoint.removeprefix("http://")

    def options(self) -> dict[str, str]:
        """The storage options that point batchscore at this server (pyarrow's names)."""
        anonymous = {"anonymous": "true"} if self.name == "gcs" else {}  # the emulator wants no token
        return {"endpoint_override": self.host_port, "scheme": "http", **anonymous}

    def cli_options(self) -> list[str]:
        return [arg for key, value in self.options().items() for arg in ("--storage-option", f"{key}={value}")]


@contextlib.contextmanager
def serve(name: str, command: list[str], port: int, *, env: dict[str, str] | None = None) -> Iterator[Server | str]:
    """Start ``command``, wait for its port; yield the server, or the reason it did not start. Always stopped."""
    log = Path(os.environ.get("TMPDIR", "/tmp")) / f"batchscore-{name}-{port}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                yield f"{name} exited with {process.returncode}: {log.read_text(errors='replace')[-500:]}"
                return
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.1)
        else:
            yield f"{name} did not listen on 127.0.0.1:{port} within 30 s"
            return
        yield Server(name, f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(OSError):
            log.unlink()


def moto_command(port: int) -> list[str] | str:
    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        return f"moto[server] is not installed ({exc})"
    return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def gcs_command(port: int, bucket: str) -> list[str] | str:
    emulator = shutil.which("gcp-storage-emulator", path=str(BIN)) or shutil.which("gcp-storage-emulator")
    if emulator is None:
        return "gcp-storage-emulator is not installed"
    return [emulator, "start", "--host", "127.0.0.1", "--port", str(port), "--in-memory", "--default-bucket", bucket]


def new_bucket(server: Server) -> str:
    """A fresh, empty S3 bucket on the server."""
    import pyarrow.fs as pafs

    name = f"bkt-{uuid.uuid4().hex[:12]}"
    fs = pafs.S3FileSystem(
        endpoint_override=server.host_port, scheme="http", region="us-east-1", allow_bucket_creation=True
    )
    fs.create_dir(name)
    return name


@dataclass
class Bucket:
    """One bucket (or, on the GCS emulator, one prefix of its bucket) for a test, with helpers to look inside."""

    server: Server
    scheme: str
    name: str
    """``bucket`` or ``bucket/prefix``"""

    @property
    def fs(self):  # a pyarrow filesystem for setting up and looking, outside batchscore
        import pyarrow.fs as pafs

        if self.scheme == "s3":
            return pafs.S3FileSystem(endpoint_override=self.server.host_port, scheme="http", region="us-east-1")
        return pafs.GcsFileSystem(anonymous=True, endpoint_override=self.server.host_port, scheme="http")

    def uri(self, *parts: str) -> str:
        return "/".join([f"{self.scheme}://{self.name}", *parts])

    def path(self, *parts: str) -> str:
        return "/".join([self.name, *parts])

    def put(self, key: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.path(key)) as fh:
            fh.write(data)

    def get(self, key: str) -> bytes:
        with self.fs.open_input_stream(self.path(key)) as fh:
            return bytes(fh.read())

    def upload(self, folder: Path, prefix: str) -> str:
        """Copy a local folder's files under ``prefix``; its URI."""
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                self.put(f"{prefix}/{path.relative_to(folder).as_posix()}", path.read_bytes())
        return self.uri(prefix)

    def keys(self, prefix: str = "") -> list[str]:
        """Every object below ``prefix``, hidden names included, relative to it."""
        import pyarrow.fs as pafs

        base = self.path(prefix) if prefix else self.name
        found = self.fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        return sorted(f.path[len(base) + 1 :] for f in found if f.type == pafs.FileType.File)


class LatencyProxy:
    """A TCP proxy on 127.0.0.1 that holds each HTTP request ``latency`` seconds before passing it on.

    It stands for a store far away (20 ms a round trip, say) and counts what goes through: requests by
    method, bytes sent back, and how many requests were held at once (the client's concurrency).
    """

    METHODS = (b"GET ", b"HEAD ", b"PUT ", b"POST ", b"DELETE ")

    def __init__(self, upstream: str, *, latency: float, rewrite: Callable[[bytes], bytes] | None = None) -> None:
        self.upstream = upstream.removeprefix("http://")
        self.latency = latency
        self.rewrite = rewrite
        """Applied to what the client sends (a store that drops a header, say)."""
        self.requests: dict[str, int] = {}
        self.bytes_down = 0
        self.peak = 0
        self._active = 0
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port = self._server.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host_port(self) -> str:
        return f"127.0.0.1:{self.port}"

    def reset(self) -> None:
        with self._lock:
            self.requests, self.bytes_down, self.peak = {}, 0, 0

    def close(self) -> None:
        self._closed = True
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            host, port = self.upstream.split(":")
            server = socket.create_connection((host, int(port)))
            threading.Thread(target=self._up, args=(client, server), daemon=True).start()
            threading.Thread(target=self._down, args=(server, client), daemon=True).start()

    def _up(self, client: socket.socket, server: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := client.recv(1 << 16):
                method = next((m for m in self.METHODS if data.startswith(m)), None)
                if method is not None:
                    with self._lock:
                        name = method.decode().strip()
                        self.requests[name] = self.requests.get(name, 0) + 1
                        self._active += 1
                        self.peak = max(self.peak, self._active)
                    time.sleep(self.latency)
                    with self._lock:
                        self._active -= 1
                server.sendall(self.rewrite(data) if self.rewrite else data)
        with contextlib.suppress(OSError):
            server.shutdown(socket.SHUT_WR)

    def _down(self, server: socket.socket, client: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := server.recv(1 << 16):
                with self._lock:
                    self.bytes_down += len(data)
                client.sendall(data)
        with contextlib.suppress(OSError):
            client.shutdown(socket.SHUT_WR)
