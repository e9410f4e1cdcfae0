"""Start the real Triton Inference Server on a model repository, wait until ready, stop cleanly.

On a machine without NVIDIA's container the ``tritonserver`` binary comes from the
``nvidia-pytriton`` wheel, which also ships the python backend and one backend stub per Python
version. The launcher links the stub matching this interpreter into a private backend folder,
puts this interpreter's ``libpython`` first on ``LD_LIBRARY_PATH`` and passes the project's
import path in ``PYTHONPATH`` (the model adapters add it to ``sys.path``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lita_serve.errors import LitaError, MissingDependencyError

logger = logging.getLogger(__name__)


class ServerError(LitaError):
    """The server did not start, or died."""


@dataclass
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    @classmethod
    def free(cls) -> "Ports":
        """Three currently free loopback ports (for tests and side-by-side servers)."""
        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            return cls(*(s.getsockname()[1] for s in socks))
        finally:
            for s in socks:
                s.close()


def pytriton_dist() -> Path:
    """The tritonserver distribution inside the nvidia-pytriton wheel."""
    try:
        import pytriton
    except ImportError as exc:
        raise MissingDependencyError(
            "tritonserver not found: install the serve extra (`pip install -e '.[serve]'`, which brings "
            "nvidia-pytriton) or run inside NVIDIA's Triton container") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def find_tritonserver() -> Path:
    """``tritonserver`` from PATH (NVIDIA's container) or from the nvidia-pytriton wheel."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path)
    binary = pytriton_dist() / "bin" / "tritonserver"
    if not binary.is_file():
        raise MissingDependencyError(f"{binary} is missing: reinstall nvidia-pytriton")
    return binary


def prepare_backends(workdir: Path) -> Path:
    """A backend folder whose python backend uses the stub built for this interpreter."""
    dist = pytriton_dist()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise MissingDependencyError(f"nvidia-pytriton has no python backend stub for Python {version}")
    backends = workdir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for item in (dist / "backends" / "python").iterdir():
        if item.is_file():
            shutil.copy2(item, python_dir / item.name)
    # A symlink keeps the stub's $ORIGIN-relative library path pointing into the wheel.
    link = python_dir / "triton_python_backend_stub"
    if link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(stub)
    return backends


def server_env(extra_pythonpath: list[str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    paths = [*(extra_pythonpath or []), *sysconfig.get_paths()["purelib"].split(os.pathsep),
             str(Path(__file__).resolve().parents[2])]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


@dataclass
class TritonServer:
    """One tritonserver process. Use as a context manager, or ``start()`` / ``stop()``."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    log_path: Path | None = None
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    _workdir: Path | None = None

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.ports.grpc}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.ports.http}"

    def command(self, backends: Path) -> list[str]:
        return [
            str(find_tritonserver()),
            f"--model-repository={Path(self.repository).resolve()}",
            f"--backend-directory={backends}",
            f"--http-address={self.host}", f"--grpc-address={self.host}", f"--metrics-address={self.host}",
            f"--http-port={self.ports.http}", f"--grpc-port={self.ports.grpc}", f"--metrics-port={self.ports.metrics}",
            f"--log-verbose={self.log_verbose}", "--exit-timeout-secs=20",
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> "TritonServer":
        self._workdir = Path(tempfile.mkdtemp(prefix="lita-triton-"))
        backends = prepare_backends(self._workdir)
        log_path = self.log_path or self._workdir / "server.log"
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "ab")
        cmd = self.command(backends)
        logger.info("starting tritonserver", extra={"cmd": " ".join(cmd)})
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=server_env(),
                                        start_new_session=True)
        self.wait_ready(timeout)
        return self

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as resp:
                return resp.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} while starting; "
                                  f"last log lines:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise ServerError(f"tritonserver not ready after {timeout:.0f} s; last log lines:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not Path(self.log_path).is_file():
            return ""
        return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (Triton drains in-flight requests), then SIGKILL after ``timeout``."""
        proc, self.process = self.process, None
        code = None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                code = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
        elif proc is not None:
            code = proc.returncode
        if getattr(self, "_log", None):
            self._log.close()
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        return code

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(server: TritonServer, timeout: float = 300.0) -> int:
    """Start ``server``, forward SIGINT/SIGTERM to it, and return its exit code when it ends."""
    server.start(timeout)
    stopping = {"flag": False}

    def handle(signum, _frame):
        stopping["flag"] = True

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stopping["flag"]:
            if server.process is None or server.process.poll() is not None:
                code = server.process.returncode if server.process else 1
                raise ServerError(f"tritonserver exited unexpectedly with code {code}:\n{server.log_tail()}")
            time.sleep(0.5)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        code = server.stop()
    return code or 0
