"""The offline GPU bundle (:mod:`benchmarks.gpu_bundle`): made from registry wheels (downloads and
built archives are cached, so a second run only copies files), it fits the transfer limit together
with the working tree, holds what the GPU machine lacks, and its cut-down tritonserver starts here
and serves a python-backend model (with this interpreter's stub added: the bundle carries 3.12's).
"""

from __future__ import annotations

import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gpu_bundle as gb

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STUBS = "pytriton/tritonserver/python_backend_stubs/"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("gpu-bundle")
    return out, gb.build(out, tree_root=ROOT)


def test_bundle_fits_with_the_tree_and_matches_its_manifest(bundle):
    out, manifest = bundle
    tree = gb.tree_bytes(ROOT)
    assert tree is not None
    assert manifest["total_bytes"] == sum(p.stat().st_size for p in out.iterdir())
    assert manifest["total_bytes"] + tree <= gb.TRANSFER_LIMIT
    assert gb.check(out) == []
    (out / manifest["files"][-1]["name"]).write_bytes(b"damaged")
    assert gb.check(out) and "bytes" in gb.check(out)[0]
    gb.build(out, tree_root=ROOT)  # restores the file from the cache
    assert gb.check(out) == []


def test_bundle_holds_what_the_gpu_machine_lacks(bundle):
    _, manifest = bundle
    parts = manifest["components"]
    assert set(parts) == {"tritonserver", "numpy", "av", "tritonclient", "python-rapidjson"}
    numpy = parts["numpy"]["source"]
    assert numpy["version"].startswith("1.26.") and "-cp312-cp312-manylinux" in numpy["wheel"]
    assert "-cp312-" in parts["python-rapidjson"]["source"]["wheel"]
    client = parts["tritonclient"]["source"]
    assert tuple(map(int, client["version"].split(".")[:2])) >= (2, 51) and client["bytes"] < 1 << 20
    assert parts["av"]["source"]["version"] == gb.SOURCES["av"].version


def test_tritonserver_archive_is_cut_down_to_the_launchers_needs(bundle):
    out, manifest = bundle
    triton = manifest["components"]["tritonserver"]
    with tarfile.open(out / triton["archive"]) as tar:
        files = {m.name for m in tar.getmembers() if m.isfile()}
    assert {"pytriton/__init__.py", "pytriton/tritonserver/bin/tritonserver",
            "pytriton/tritonserver/backends/python/libtriton_python.so",
            "pytriton/tritonserver/backends/python/triton_python_backend_utils.py",
            f"{STUBS}3.12/{gb.STUB}"} <= files
    assert [n for n in files if n.startswith(STUBS) and n.endswith(gb.STUB)] == [f"{STUBS}3.12/{gb.STUB}"]
    assert not any(n.startswith("pytriton/client") or "libpython3" in n for n in files)
    assert {p["path"] for p in triton["kept"]} == files
    assert "libpython3.12.so.1.0" in triton["system_libraries"]
    assert any("libicudata" in c["path"] for c in triton["changed"])


def test_stub_is_built_against_the_numpy_1_api():
    """pybind11 before 2.12 imports ``numpy.core.multiarray`` and reads NumPy 1.x structures;
    2.12 and later name ``numpy._core`` for NumPy 2. The 3.12 stub only knows the former."""
    wheel = gb.download(gb.SOURCES[gb.TRITONSERVER], gb.default_cache())
    with zipfile.ZipFile(wheel) as zf:
        stub = zf.read(f"{STUBS}3.12/{gb.STUB}")
    assert b"numpy.core.multiarray" in stub and b"_ARRAY_API" in stub
    assert b"numpy._core" not in stub


@pytest.mark.server
def test_bundled_tritonserver_serves_a_python_model(bundle, tmp_path):
    out, _ = bundle
    target = tmp_path / "site"
    gb.install(out, target, parts=[gb.TRITONSERVER])  # the cp312 wheels cannot load in this interpreter
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if version != gb.PYTHON:
        gb.add_stub(target, gb.download(gb.SOURCES[gb.TRITONSERVER], gb.default_cache()), version)
    assert all(not missing for missing in gb.missing_libraries(target).values())
    result = gb.smoke(target)
    assert result["stub_numpy"].startswith("1.")  # this environment's numpy, the adapters' way
    assert result["exit_code"] == 0
