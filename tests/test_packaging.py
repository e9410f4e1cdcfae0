"""What users install: the light client in a fresh environment, the server package installed
(not editable) and run from an unrelated folder, and light model processes while serving.

The fresh environments install from the package registry (or pip's cache), as a user's would.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from lita_serve.serving.process_memory import model_memory

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "av", "decord", "sentencepiece", "safetensors", "lita_serve")
# Goals for the light steps while serving (MiB of resident memory per process).
LIGHT_RSS_MB = {"preprocess": 120.0, "postprocess": 80.0}


def _fresh_venv(path: Path) -> Path:
    """A new virtual environment with pip and nothing else; -> its python."""
    venv.EnvBuilder(with_pip=True, clear=True).create(path)
    return path / "bin" / "python"


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 900, env: dict | None = None) -> str:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def _git_status() -> str:
    return _run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=ROOT)


def _clean_env() -> dict:
    """This environment without its virtualenv on PATH or PYTHONPATH (a user's shell)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if not p.startswith(str(Path(sys.executable).parent)))
    return env


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh venv holding only ``pip install ./client "numpy>=2"``; -> its bin folder."""
    python = _fresh_venv(tmp_path_factory.mktemp("client-venv") / "venv")
    _run([python, "-m", "pip", "install", "-q", str(ROOT / "client"), "numpy>=2"], env=_clean_env())
    return python.parent


@pytest.mark.slow
def test_client_installs_alone_without_heavy_packages(client_venv):
    python = client_venv / "python"
    probe = ("import importlib.util, json, numpy, tritonclient, lita_client; "
             "from lita_client import LitaClient, AsyncLitaClient; "
             f"print(json.dumps({{'numpy': numpy.__version__, 'heavy': [m for m in {HEAVY!r} "
             "if importlib.util.find_spec(m)]}))")
    report = __import__("json").loads(_run([python, "-c", probe], env=_clean_env()))
    assert report["heavy"] == [], f"the client environment holds {report['heavy']}"
    assert int(report["numpy"].split(".")[0]) >= 2
    assert "ask" in _run([client_venv / "lita-client", "--help"], env=_clean_env())


@pytest.mark.slow
@pytest.mark.server
def test_light_client_with_numpy2_asks_the_real_server(client_venv, triton_server, sample_videos):
    """The installed CLI (current tritonclient, numpy 2) against tritonserver 2.51; connection
    flags before the subcommand."""
    out = _run([client_venv / "lita-client", "--url", triton_server.grpc_url, "ask",
                sample_videos["red_3s"], "When does the red square appear?", "--json", "--max-tokens", "4"],
               env=_clean_env())
    answer = __import__("json").loads(out)
    assert answer["num_output_tokens"] == 4 and answer["duration"] == pytest.approx(3.0, abs=0.2)


@pytest.mark.slow
def test_server_package_installed_runs_the_demo_from_an_unrelated_folder(tmp_path):
    """Non-editable install into a fresh venv; `lita demo` from a folder outside the checkout
    builds, serves and answers; the checkout is left as it was."""
    before = _git_status()
    python = _fresh_venv(tmp_path / "venv")
    env = _clean_env()
    _run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], env=env)  # the CPU build
    _run([python, "-m", "pip", "install", "-q", str(ROOT / "client"), f"{ROOT}[serve]"], env=env)
    assert _git_status() == before, "pip install . wrote into the checkout"

    site = _run([python, "-c", "import lita_serve, lita_build; print(lita_serve.__file__, lita_build.__file__)"],
                cwd=tmp_path, env=env)
    assert str(ROOT) not in site, f"imported from the checkout, not the installed wheel: {site}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = _run([tmp_path / "venv" / "bin" / "lita", "demo"], cwd=elsewhere, env=env, timeout=900)
    assert "A: " in out and "truth:" in out
    assert (elsewhere / "model_repository" / "llm" / "1" / "model.py").is_file()
    checked = _run([tmp_path / "venv" / "bin" / "lita", "check-repository", "model_repository"], cwd=elsewhere, env=env)
    assert checked.strip() == "ok", checked
    assert _git_status() == before

    # The core package (build step included) on numpy 2, as in NVIDIA's current containers; only the
    # serve extra's bundled server pins numpy<2.
    _run([python, "-m", "pip", "install", "-q", "numpy>=2"], env=env)
    assert _run([python, "-c", "import numpy; print(numpy.__version__)"], env=env).startswith("2.")
    dry = elsewhere / "gpu_repo"
    _run([tmp_path / "venv" / "bin" / "lita", "build", "--checkpoint", ROOT / "assets" / "demo", "--tokenizer",
          ROOT / "assets" / "demo" / "tokenizer.model", "--lita-version", "1.0", "--engine", "tensorrt_llm",
          "--encoder-engine", "torch", "--dtype", "bfloat16", "--dry-run", "--output", dry], cwd=elsewhere, env=env)
    assert (dry / "tensorrt_llm" / "config.pbtxt").is_file() and (dry / "build.json").is_file()


@pytest.mark.server
def test_light_steps_never_load_torch_and_stay_small(triton_server, tiny_repo, sample_videos):
    """Read while the shared server has answered requests: preprocess and postprocess processes
    have no libtorch mapped and stay within their memory goals; the heavy steps do load it."""
    from lita_client import LitaClient

    with LitaClient(triton_server.grpc_url) as client:
        client.ask(sample_videos["blue_2s"], "What happens?", max_tokens=2)
    rows = model_memory(triton_server.process.pid, tiny_repo)
    by_model: dict[str, list] = {}
    for row in rows:
        by_model.setdefault(row.model, []).append(row)
    assert set(by_model) == {"preprocess", "vision_encoder", "llm", "postprocess"}
    for model, limit in LIGHT_RSS_MB.items():
        for row in by_model[model]:
            assert not row.torch_loaded, f"{row.instance} loaded torch"
            # Its own memory: the shared-memory region Triton passes tensors through grows with the
            # largest video this shared server has been sent by other tests.
            assert row.own_mb <= limit, f"{row.instance} holds {row.own_mb} MB, over the goal of {limit} MB"
    assert all(row.torch_loaded for model in ("vision_encoder", "llm") for row in by_model[model])
