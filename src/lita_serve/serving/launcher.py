"""Start the real Triton Inference Server on a model repository, wait until ready, stop cleanly.

On a machine without NVIDIA's container the ``tritonserver`` binary comes from the
``nvidia-pytriton`` wheel, which also ships the python backend and one backend stub per Python
version. The launcher links the stub matching this interpreter into a private backend folder,
puts this interpreter's ``libpython`` first on ``LD_LIBRARY_PATH`` and passes this environment's
site-packages in ``PYTHONPATH`` (the model adapters add them to ``sys.path``).

Exposure: every endpoint binds 127.0.0.1 unless ``host`` says otherwise. gRPC can be served
over TLS (:class:`GrpcTls`: server certificate and key, plus a root certificate for mutual
TLS). :class:`Supervisor` restarts a server that died or stayed unready.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lita_serve.errors import LitaError, MissingDependencyError
from lita_serve.serving.proc_stat import stat_fields

logger = logging.getLogger(__name__)


class ServerStartError(LitaError):
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
            "tritonserver not found: install the serve extra (`pip install './client' '.[serve]'`, which brings "
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
    # This environment's site-packages (the adapters read their .pth files too, so editable
    # installs work), and the folder this package was imported from (a source tree on sys.path).
    # As for any Python process, the caller's PYTHONPATH and the tree this package came from go
    # ahead of site-packages, so the server runs the same code as the process that started it.
    site_dirs = [sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")]
    paths = [*(extra_pythonpath or [])]
    if env.get("PYTHONPATH"):
        paths.extend(p for p in env["PYTHONPATH"].split(os.pathsep) if p)
    paths += [str(Path(__file__).resolve().parents[2]), *site_dirs]  # the folder lita_serve/ is in
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (libdir, env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # Two torch processes (encoder, decoder) share the cores; with a thread per core each, the idle
    # one's spinning threads slow the busy one several-fold on small machines.
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2) // 2)))
    return env


@dataclass(frozen=True)
class GrpcTls:
    """TLS for the gRPC endpoint: PEM files of the server's certificate and key.

    ``root_cert`` (a CA certificate) turns on mutual TLS: clients must present a certificate
    signed by it. HTTP and metrics stay plain; keep them on loopback when gRPC is exposed.
    """

    server_cert: Path
    server_key: Path
    root_cert: Path | None = None

    def args(self) -> list[str]:
        for label, path in (("server certificate", self.server_cert), ("server key", self.server_key),
                            ("root certificate", self.root_cert)):
            if path is not None and not Path(path).is_file():
                raise ServerStartError(f"gRPC TLS {label} {path} is not a file")
        flags = [f"--grpc-server-cert={Path(self.server_cert).resolve()}",
                 f"--grpc-server-key={Path(self.server_key).resolve()}"]
        if self.root_cert is not None:
            return ["--grpc-use-ssl-mutual=true", *flags, f"--grpc-root-cert={Path(self.root_cert).resolve()}"]
        return ["--grpc-use-ssl=true", *flags]


STUB_NAME = "triton_python_backend_stub"
# tritonserver's log line for a model that failed to load; the reason ends at its first escaped newline.
_LOAD_FAILURE = re.compile(r"failed to load '([^']+)' version \d+: (?:Internal: )?(.*?)(?:\\n|\"$)", re.M)
SHM_PREFIX = "triton_python_backend_shm_region_"  # the python backend's own default prefix
SHM_DIR = Path("/dev/shm")


def remove_shm_regions(prefix: str) -> int:
    """Delete the shared-memory regions whose names start with ``prefix``; -> how many.

    The python backend leaves its regions behind when a stub is killed or the server dies.
    """
    removed = 0
    if SHM_DIR.is_dir():
        for region in SHM_DIR.glob(f"{prefix}*"):
            try:
                region.unlink()
                removed += 1
            except OSError:
                pass
    return removed


@dataclass(frozen=True)
class StubProcess:
    """One python-backend stub: the process that runs one instance of one model's ``model.py``."""

    pid: int
    instance: str  # Triton's instance name, e.g. "llm_0_0"
    model_file: str  # path of the model.py it runs

    def alive(self) -> bool:
        """Running (a killed stub lingers as a zombie until tritonserver reaps it)."""
        return _proc_state(self.pid) not in (None, "Z", "X")


def _proc_state(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None else fields[0]


def _parent(pid: int) -> int | None:
    fields = stat_fields(pid)
    return None if fields is None else int(fields[1])


def stub_processes(server_pid: int) -> list[StubProcess]:
    """The live python-backend stubs started by the tritonserver process ``server_pid`` (Linux /proc)."""
    stubs = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or _parent(int(entry.name)) != server_pid:
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # argv: stub, model.py path, shm region, shm sizes, parent pid, backend dir, ipc, instance name, ...
        if argv and argv[0].endswith(STUB_NAME.encode()) and len(argv) > 8:
            stub = StubProcess(int(entry.name), argv[8].decode(errors="replace"), argv[1].decode(errors="replace"))
            if stub.alive():
                stubs.append(stub)
    return sorted(stubs, key=lambda s: s.instance)


@dataclass
class TritonServer:
    """One tritonserver process. Use as a context manager, or ``start()`` / ``stop()``."""

    repository: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    log_path: Path | None = None
    log_verbose: int = 0
    extra_args: list[str] = field(default_factory=list)
    tls: GrpcTls | None = None
    process: subprocess.Popen | None = None
    _workdir: Path | None = None
    _log_given: bool | None = None
    stubs: list[StubProcess] = field(default_factory=list)
    # This server's python-backend shared-memory regions are named with this prefix, so stop()
    # removes exactly its own from /dev/shm, also those of stubs that were killed.
    shm_prefix: str = field(default_factory=lambda: f"{SHM_PREFIX}lita{os.getpid()}x{secrets.token_hex(4)}_")

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
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            *(self.tls.args() if self.tls is not None else []),
            *self.extra_args,
        ]

    def start(self, timeout: float = 180.0) -> "TritonServer":
        self._workdir = Path(tempfile.mkdtemp(prefix="lita-triton-"))
        backends = prepare_backends(self._workdir)
        if self._log_given is None:
            self._log_given = self.log_path is not None
        # A restart after stop() gets a fresh log in the new work folder unless the caller chose one.
        self.log_path = Path(self.log_path) if self._log_given else self._workdir / "server.log"
        cmd = self.command(backends)
        self._log = open(self.log_path, "ab")
        logger.info("starting tritonserver", extra={"cmd": " ".join(cmd)})
        self.process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, env=server_env(),
                                        start_new_session=True)
        self.wait_ready(timeout)
        self.stubs = stub_processes(self.process.pid)
        return self

    def dead_stubs(self) -> list[StubProcess]:
        """Stubs running when the server became ready that are gone now.

        Triton 2.51 does not restart a crashed python-backend stub: its model stays "ready" while
        every request to it fails with "Stub process '<instance>' is not healthy". Only a restart
        (see :class:`Supervisor`) recovers it.
        """
        return [stub for stub in self.stubs if not stub.alive()]

    def healthy(self) -> bool:
        """Ready, and every model instance's stub is still running."""
        return self.is_ready() and not self.dead_stubs()

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
                failures = "".join(f"\n  {line}" for line in self.load_failures())
                raise ServerStartError(f"tritonserver exited with code {self.process.returncode} while starting"
                                       f"{'; models that failed to load:' + failures if failures else ''}; "
                                       f"last log lines:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        self.stop()
        raise ServerStartError(f"tritonserver not ready after {timeout:.0f} s; last log lines:\n{self.log_tail()}")

    def load_failures(self) -> list[str]:
        """``model: reason`` for every model the log says failed to load (first line of the reason)."""
        if self.log_path is None or not Path(self.log_path).is_file():
            return []
        found = _LOAD_FAILURE.findall(Path(self.log_path).read_text(errors="replace"))
        return list(dict.fromkeys(f"{model}: {reason}" for model, reason in found))

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
        remove_shm_regions(self.shm_prefix)
        return code

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class Supervisor:
    """Keep ``server`` serving: restart it when its process or a model's stub died, or it stayed unready.

    Triton 2.51's python backend neither restarts a killed stub nor reports its model unready
    (requests fail with "Stub process ... is not healthy"), so the supervisor watches the stub
    processes itself. It also restarts a dead ``tritonserver`` and one that reports unready for
    ``unready_after`` seconds in a row. A restart reuses the same ports, so clients that
    retry on UNAVAILABLE reconnect. More than ``max_restarts`` restarts raise :class:`ServerStartError`.
    """

    def __init__(self, server: TritonServer, *, interval: float = 1.0, unready_after: float = 15.0,
                 max_restarts: int = 5, start_timeout: float = 300.0) -> None:
        self.server = server
        self.interval = interval
        self.unready_after = unready_after
        self.max_restarts = max_restarts
        self.start_timeout = start_timeout
        self.restarts = 0
        self._unready_since: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def check(self) -> bool:
        """One supervision step; True when it restarted the server."""
        proc = self.server.process
        dead = self.server.dead_stubs() if proc is not None else []
        if proc is None or proc.poll() is not None:
            reason = f"tritonserver exited with code {proc.returncode if proc else None}"
        elif dead:
            reason = "python backend stub(s) died: " + ", ".join(f"{s.instance} (pid {s.pid})" for s in dead)
        elif self.server.is_ready():
            self._unready_since = None
            return False
        else:
            now = time.monotonic()
            self._unready_since = self._unready_since or now
            if now - self._unready_since < self.unready_after:
                return False
            reason = f"tritonserver unready for {now - self._unready_since:.0f} s"
        self.restart(reason)
        return True

    def restart(self, reason: str) -> None:
        if self.restarts >= self.max_restarts:
            raise ServerStartError(f"{reason}; gave up after {self.restarts} restarts:\n{self.server.log_tail()}")
        self.restarts += 1
        logger.warning("restarting tritonserver", extra={"reason": reason, "restart": self.restarts})
        self.server.stop()
        self._unready_since = None
        self.server.start(self.start_timeout)

    def run(self) -> None:
        """Supervise until :meth:`stop`; re-raises the error that made it give up."""
        while not self._stop.wait(self.interval):
            self.check()

    def _run_logged(self) -> None:
        try:
            self.run()
        except BaseException as exc:  # noqa: BLE001 - kept for whoever stops the supervisor
            self.error = exc
            logger.error("supervisor stopped", exc_info=exc)

    def start(self) -> "Supervisor":
        """Start the server if needed, then supervise it on a background thread."""
        if self.server.process is None:
            self.server.start(self.start_timeout)
        self._thread = threading.Thread(target=self._run_logged, name="lita-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int | None:
        """Stop supervising, then stop the server; returns its exit code."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        return self.server.stop()

    def __enter__(self) -> "Supervisor":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_forever(server: TritonServer, timeout: float = 300.0, supervise: bool = False) -> int:
    """Start ``server``, forward SIGINT/SIGTERM to it, and return its exit code when it ends.

    ``supervise``: restart it (see :class:`Supervisor`) instead of failing when it dies or stays unready.
    """
    server.start(timeout)
    stopping = {"flag": False}

    def handle(signum, _frame):
        stopping["flag"] = True

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    supervisor = Supervisor(server, start_timeout=timeout) if supervise else None
    try:
        while not stopping["flag"]:
            if supervisor is not None:
                supervisor.check()
            elif server.process is None or server.process.poll() is not None:
                code = server.process.returncode if server.process else 1
                raise ServerStartError(f"tritonserver exited unexpectedly with code {code}:\n{server.log_tail()}")
            time.sleep(0.5)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        code = server.stop()
    return code or 0
