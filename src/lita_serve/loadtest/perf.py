"""Find, set up and run Triton's ``perf_analyzer`` binary; read its CSV report.

The binary ships in the ``tritonclient[all]==2.51.0`` wheel (matching the server), which cannot
share an environment with the current ``tritonclient`` the client uses (same distribution name).
So it lives in a tool environment of its own (``make perf-tools`` makes ``.venv-perf``), named by
:data:`PERF_ANALYZER_ENV`. It is linked against ``libb64.so.0d`` (Debian's ``libb64-0d``
package) and ``libcudart.so.12`` (the ``nvidia-cuda-runtime-cu12`` wheel in that environment; no
GPU is needed): :func:`perf_env` puts the wheel's library folder on ``LD_LIBRARY_PATH`` and
:func:`check_libraries` names whatever is still missing.
"""

from __future__ import annotations

import csv
import ctypes
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from lita_client.contract import ENSEMBLE
from lita_serve.errors import LitaError, MissingDependencyError

LIBB64 = "libb64.so.0d"
# The perf_analyzer binary to run (the Makefile points it into .venv-perf); else PATH is searched.
PERF_ANALYZER_ENV = "LITA_PERF_ANALYZER"


class PerfAnalyzerError(LitaError):
    """perf_analyzer failed or produced no report."""


def find_perf_analyzer() -> Path:
    """The binary ``$LITA_PERF_ANALYZER`` names, else ``perf_analyzer`` on PATH."""
    named = os.environ.get(PERF_ANALYZER_ENV)
    if named:
        if not Path(named).is_file():
            raise MissingDependencyError(f"{PERF_ANALYZER_ENV}={named} does not exist: run `make perf-tools`")
        return Path(named)
    found = shutil.which("perf_analyzer")
    if found:
        return Path(found)
    raise MissingDependencyError(f"perf_analyzer not found: `make perf-tools` installs tritonclient[all]==2.51.0 "
                                 f"into .venv-perf; set {PERF_ANALYZER_ENV}=.venv-perf/bin/perf_analyzer")


def cuda_runtime_libdir(binary: Path | None = None) -> Path | None:
    """``nvidia/cuda_runtime/lib`` of the nvidia-cuda-runtime-cu12 wheel in perf_analyzer's environment."""
    try:
        binary = binary or find_perf_analyzer()
    except MissingDependencyError:
        return None
    env_root = Path(binary).resolve().parent.parent  # <venv>/bin/perf_analyzer -> <venv>
    for lib in sorted(env_root.glob("lib/python3*/site-packages/nvidia/cuda_runtime/lib")):
        if lib.is_dir():
            return lib
    return None


def perf_env() -> dict[str, str]:
    """This process's environment with the CUDA runtime wheel's libraries on LD_LIBRARY_PATH."""
    env = dict(os.environ)
    lib = cuda_runtime_libdir()
    if lib is not None:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(lib), env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def check_libraries() -> None:
    """Raise MissingDependencyError naming the package that provides a missing shared library."""
    try:
        ctypes.CDLL(LIBB64)
    except OSError:
        raise MissingDependencyError(f"{LIBB64} is missing: `apt-get install -y libb64-0d` "
                                     "(`make load` does it)") from None
    if cuda_runtime_libdir() is None:
        raise MissingDependencyError("libcudart.so.12 is missing: `make perf-tools` (nvidia-cuda-runtime-cu12 beside perf_analyzer)")


@dataclass
class PerfOptions:
    """How perf_analyzer measures; defaults suit a CPU server answering in tens of milliseconds."""

    concurrency: tuple[int, int] = (1, 8)
    step: int = 1
    measurement_interval_ms: int = 5000
    stability_percentage: int = 50  # a 2-core CPU host is noisy: 10-20 % rarely stabilises
    max_trials: int = 10
    request_count: int = 0  # > 0: windows of at least this many requests instead of time windows (short runs)
    extra_args: list[str] = field(default_factory=list)


def perf_command(url: str, input_data: Path, csv_path: Path, opts: PerfOptions, model: str = ENSEMBLE,
                 profile_path: Path | None = None) -> list[str]:
    """perf_analyzer over streaming gRPC (the ensemble is decoupled) with the given real inputs;
    with ``profile_path`` it also exports every request's and response's timestamps there."""
    return _command(["-i", "grpc", "-u", url, "--streaming"], model, input_data, csv_path, opts, profile_path)


def openai_perf_command(url: str, input_data: Path, csv_path: Path, opts: PerfOptions, model: str = ENSEMBLE,
                        profile_path: Path | None = None, api_key: str | None = None) -> list[str]:
    """perf_analyzer against an OpenAI-compatible ``url`` (host:port) on ``v1/chat/completions``.

    perf_analyzer 2.51 refuses ``--streaming`` with this service kind: a request asks for a stream
    in its own body (``"stream": true``, see :func:`~lita_serve.loadtest.inputs.write_openai_input_data`)
    and perf_analyzer records each server-sent event it reads as a response.
    """
    args = ["--service-kind", "openai", "--endpoint", "v1/chat/completions", "-u", url, "--async"]
    if api_key:
        args += ["-H", f"Authorization:Bearer {api_key}"]
    return _command(args, model, input_data, csv_path, opts, profile_path)


def _command(transport: list[str], model: str, input_data: Path, csv_path: Path, opts: PerfOptions,
             profile_path: Path | None) -> list[str]:
    lo, hi = opts.concurrency
    cmd = [str(find_perf_analyzer()), "-m", model, *transport,
           "--input-data", str(input_data), "--concurrency-range", f"{lo}:{hi}:{opts.step}",
           "-f", str(csv_path), "--stability-percentage", str(opts.stability_percentage),
           "--max-trials", str(opts.max_trials)]
    if profile_path is not None:
        cmd += ["--profile-export-file", str(profile_path)]
    if opts.request_count > 0:
        cmd += ["--measurement-mode", "count_windows", "--measurement-request-count", str(opts.request_count)]
    else:
        cmd += ["--measurement-interval", str(opts.measurement_interval_ms)]
    return cmd + opts.extra_args


def run_perf_analyzer(cmd: list[str], log_path: Path, timeout: float | None = None) -> None:
    """Run ``cmd`` with its output in ``log_path``; PerfAnalyzerError with the log tail on failure."""
    check_libraries()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=perf_env(), timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
        raise PerfAnalyzerError(f"perf_analyzer exited with code {proc.returncode}:\n{tail}")


def read_csv(path: str | Path) -> list[dict[str, float]]:
    """perf_analyzer's ``-f`` CSV: one row per concurrency level (ascending), numbers as floats (latencies in us)."""
    path = Path(path)
    if not path.is_file():
        raise PerfAnalyzerError(f"perf_analyzer wrote no report at {path}")
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows.append({k.strip(): float(v) for k, v in row.items() if k and _is_number(v)})
    if not rows:
        raise PerfAnalyzerError(f"{path} holds no measurements")
    return sorted(rows, key=lambda r: r.get("Concurrency", 0.0))  # perf_analyzer orders rows by throughput


def _is_number(value: str | None) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return True
