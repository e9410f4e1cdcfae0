"""Shared fixtures: a tiny LITA model repository, real test videos, and the real tritonserver."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from repo_factory import build_tiny_repository  # noqa: E402
from videos import make_mp4  # noqa: E402

from lita_serve.feature_cache import temporary_cache_root  # noqa: E402
from lita_serve.serving.launcher import Ports, TritonServer  # noqa: E402
from lita_serve.loadtest.perf import PERF_ANALYZER_ENV  # noqa: E402

# perf_analyzer's tool environment as `make perf-tools` makes it, unless the caller names another.
os.environ.setdefault(PERF_ANALYZER_ENV, str(Path(__file__).resolve().parents[1] / ".venv-perf" / "bin" / "perf_analyzer"))


def pytest_configure(config) -> None:
    """Default feature-cache folders of every server the tests start go to one private temporary
    folder, removed when the session ends (nothing is left in the system's temporary folder)."""
    config._lita_cache_root = temporary_cache_root("lita-test-cache-")
    config._lita_cache_root.__enter__()
    _refuse_unmarked_servers()


def pytest_unconfigure(config) -> None:
    root = getattr(config, "_lita_cache_root", None)
    if root is not None:
        root.__exit__(None, None, None)


# Session fixtures that start tritonserver: a test that uses one (directly or through another
# fixture) is a `server` test. Tests that start a server themselves say so with the marker;
# `_refuse_unmarked_servers` fails a test that starts one without it, so `make test-fast`
# (`-m "not server and not slow and not gpu"`) never waits for a server.
SERVER_FIXTURES = {"triton_server", "demo_server"}


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
        if any(m.name == "skipif" and "CUDA" in str(m.kwargs.get("reason", "")) for m in item.iter_markers()):
            item.add_marker(pytest.mark.gpu)


_RUNNING: dict[str, pytest.Item | None] = {"item": None}


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item) -> None:
    _RUNNING["item"] = item  # before its fixtures are set up, module and session ones included


def pytest_runtest_teardown(item) -> None:
    _RUNNING["item"] = None


def _refuse_unmarked_servers() -> None:
    """A test without the `server` marker that starts tritonserver (itself or through a fixture)
    fails and says to mark it."""
    start = TritonServer.start

    def checked(self, *args, **kwargs):
        item = _RUNNING["item"]
        if item is not None and item.get_closest_marker("server") is None:
            raise AssertionError(f"{item.nodeid} starts tritonserver: mark it @pytest.mark.server")
        return start(self, *args, **kwargs)

    TritonServer.start = checked


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory) -> Path:
    """A built model repository holding a tiny random LITA model (torch engine)."""
    return build_tiny_repository(tmp_path_factory.mktemp("tiny_repo"), seed=0)


@pytest.fixture(scope="session")
def sample_videos(tmp_path_factory) -> dict[str, Path]:
    """A few real H.264 mp4 files of different lengths and colours."""
    root = tmp_path_factory.mktemp("videos")
    specs = {
        "red_3s": dict(seconds=3.0, fps=10, color_fn=lambda i: (200, 30, 30)),
        "moving_5s": dict(seconds=5.0, fps=8, color_fn=lambda i: (i * 5 % 255, 80, 255 - i * 5 % 255)),
        "blue_2s": dict(seconds=2.0, fps=12, color_fn=lambda i: (20, 40, 220)),
    }
    return {name: make_mp4(root / f"{name}.mp4", size=(96, 64), **kw) for name, kw in specs.items()}


def serving(repo: Path):
    """The real tritonserver on free loopback ports serving ``repo``: a context, stopped on exit."""
    return TritonServer(repo, ports=Ports.free()).start(timeout=240)


@pytest.fixture(scope="session")
def triton_server(tiny_repo):
    """The real tritonserver on free loopback ports, serving the tiny repository; stopped at the end."""
    with serving(tiny_repo) as server:
        yield server


@pytest.fixture(scope="session")
def demo_repo(tmp_path_factory) -> Path:
    """The committed demo model (trained, it really localizes), built as `make demo` builds it."""
    from lita_serve.serving.demo import build_demo_repository

    return build_demo_repository(tmp_path_factory.mktemp("demo_repo") / "repo", progress=False)


@pytest.fixture(scope="session")
def demo_server(demo_repo):
    """The real tritonserver serving the demo repository; stopped at the end."""
    with serving(demo_repo) as server:
        yield server
