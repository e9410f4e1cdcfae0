"""Resident memory of a serving tritonserver's model processes: what each ensemble step costs.

Every instance of a python-backend model is its own process (a backend stub), so its resident
set size (``VmRSS`` in ``/proc/<pid>/status``) is what that step holds; of it, ``RssShmem`` is
the python backend's shared-memory region, through which Triton passes tensors in and out (it
grows with the largest tensor a process has seen, and is shared with tritonserver), and the
rest is the process's own (code, libraries, heap). The report also says
whether torch is loaded into the process (``libtorch`` mapped), which the light steps
(``preprocess``, ``postprocess``) must never do, and the size of the weights each heavy step
serves, so what a process holds beyond its weights is visible. Linux only (``/proc``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from lita_serve.serving.launcher import stub_processes
from lita_serve.adapters.layout import RepositoryLayout
from lita_serve.serving.demo import QUESTION

# What each step's adapter imports (besides Triton's own module): importing alone costs this much.
STEP_IMPORTS = {
    "preprocess": "lita_serve.preprocess.request, lita_serve.feature_cache, lita_serve.adapters.triton_io",
    "vision_encoder": "lita_serve.vision_encoder.cached, lita_serve.engine.torch_engine, lita_serve.adapters.triton_io",
    "llm": "lita_serve.llm.service, lita_serve.llm.trtllm_bls, lita_serve.engine.torch_engine, lita_serve.adapters.triton_io",
    "postprocess": "lita_serve.postprocess.render, lita_serve.text.tokenizer, lita_serve.adapters.triton_io",
}
# One line of Python run in a fresh interpreter of this environment: what importing costs.
_IMPORT_PROBE = ("import sys, {module}; "
                 "print([int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmRSS:')][0])")


@dataclass(frozen=True)
class ProcessMemory:
    """One model instance's process."""

    instance: str  # Triton's instance name, e.g. "preprocess_0_1"
    pid: int
    rss_mb: float
    shmem_mb: float  # the part of rss_mb in Triton's shared-memory region (tensors in flight)
    torch_loaded: bool
    weights_mb: float  # size of the weights file this step serves; 0 for steps without weights

    @property
    def model(self) -> str:
        return self.instance.rsplit("_", 2)[0]

    @property
    def own_mb(self) -> float:
        """Resident memory outside Triton's shared-memory region."""
        return round(self.rss_mb - self.shmem_mb, 1)


def _status_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ProcessLookupError(f"process {pid} has no {field} (a zombie?)")


def rss_mb(pid: int) -> float:
    """Resident set size of process ``pid`` in MiB."""
    return _status_mb(pid, "VmRSS")


def maps_library(pid: int, name: str) -> bool:
    """True when a shared library whose file name contains ``name`` is mapped into ``pid``."""
    with open(f"/proc/{pid}/maps") as maps:
        return any(name in Path(line.split()[-1]).name for line in maps if line.count("/"))


def _weights_mb(layout: RepositoryLayout, model: str) -> float:
    path = {"vision_encoder": layout.encoder_weights, "llm": layout.decoder_weights}.get(model)
    return path.stat().st_size / 2**20 if path is not None and path.is_file() else 0.0


def model_memory(server_pid: int, repository: str | Path) -> list[ProcessMemory]:
    """Memory of every live model instance of the tritonserver process ``server_pid``."""
    layout = RepositoryLayout.of(repository)
    rows = []
    for stub in stub_processes(server_pid):
        model = stub.instance.rsplit("_", 2)[0]
        rows.append(ProcessMemory(stub.instance, stub.pid, round(rss_mb(stub.pid), 1),
                                  round(_status_mb(stub.pid, "RssShmem"), 1), maps_library(stub.pid, "libtorch"),
                                  round(_weights_mb(layout, model), 1)))
    return rows


def import_cost_mb(module: str) -> float:
    """RSS of a fresh interpreter of this environment after ``import module`` (MiB)."""
    out = subprocess.run([sys.executable, "-c", _IMPORT_PROBE.format(module=module)],
                         capture_output=True, text=True, check=True).stdout
    return round(int(out.strip()) / 1024, 1)


def measure(repository: str | Path, workdir: Path, printer=print) -> dict:
    """Serve ``repository``, answer one question about a generated video, then read each model's RSS.

    One answered request first, so every step has loaded and run (allocations made on the first
    request count).
    """
    from lita_client import LitaClient
    from lita_serve.data.synthetic import Event, make_event_video
    from lita_serve.serving.launcher import Ports, TritonServer

    workdir.mkdir(parents=True, exist_ok=True)
    video = workdir / "rss_probe.mp4"
    make_event_video(video, duration_s=12.0, fps=10, width=96, height=64, seed=3,
                     events=[Event(shape="circle", color="red", start_s=3.0, end_s=7.0, x=0.3, y=0.3, size=0.15)])
    with TritonServer(Path(repository), ports=Ports.free(), log_path=workdir / "tritonserver.log") as server:
        with LitaClient(server.grpc_url) as client:
            answer = client.ask(video, QUESTION)
        printer(f"answered {answer.text!r}; reading /proc of tritonserver {server.process.pid}")
        rows = model_memory(server.process.pid, repository)
        server_mb = round(rss_mb(server.process.pid), 1)
    baselines = {"python + numpy": import_cost_mb("numpy"), "python + torch": import_cost_mb("torch"),
                 **{f"python + the {step} step's imports": import_cost_mb(modules)
                    for step, modules in STEP_IMPORTS.items()}}
    return {"processes": [asdict(r) | {"model": r.model, "own_mb": r.own_mb} for r in rows],
            "tritonserver_mb": server_mb,
            "import_baselines_mb": baselines}


def format_report(report: dict) -> str:
    """A table: one line per model instance, then tritonserver and the import baselines."""
    lines = [f"{'instance':<20} {'pid':>7} {'RSS MB':>8} {'shm MB':>7} {'own MB':>7} {'torch':>6} "
             f"{'weights MB':>11} {'own - weights':>14}"]
    for row in report["processes"]:
        lines.append(f"{row['instance']:<20} {row['pid']:>7} {row['rss_mb']:>8.1f} {row['shmem_mb']:>7.1f} "
                     f"{row['own_mb']:>7.1f} {'yes' if row['torch_loaded'] else 'no':>6} {row['weights_mb']:>11.1f} "
                     f"{row['own_mb'] - row['weights_mb']:>14.1f}")
    lines.append(f"{'tritonserver':<20} {'':>7} {report['tritonserver_mb']:>8.1f}")
    for name, mb in report["import_baselines_mb"].items():
        lines.append(f"baseline: a fresh {name}: {mb:.1f} MB")
    return "\n".join(lines)


def main(repository: Path, workdir: Path, as_json: bool = False) -> int:
    report = measure(repository, workdir, printer=(lambda *_: None) if as_json else print)
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0
