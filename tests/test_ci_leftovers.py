"""``.ci/leftovers``, the count ``.ci/run`` compares before and after ``make test``: each kind of
thing a test could leak moves it, so a leak fails CI."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _count(tmp: Path) -> str:
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "XDG_RUNTIME_DIR": str(tmp / "run")}
    return subprocess.run([str(ROOT / ".ci" / "leftovers")], env=env, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_every_leak_kind_changes_the_count(tmp_path) -> None:
    (tmp_path / "tmp").mkdir()
    (tmp_path / "run").mkdir()
    clean = _count(tmp_path)
    assert clean.startswith("0 temporary folders, 0 runtime cache folders,")
    (tmp_path / "tmp" / "unrelated").mkdir()
    assert _count(tmp_path) == clean
    (tmp_path / "tmp" / "lita-test-cache-leaked").mkdir()  # a feature-cache root a test did not remove
    leaked = _count(tmp_path)
    assert leaked.startswith("1 temporary folders") and leaked != clean
    (tmp_path / "tmp" / "lita-triton-abc").mkdir()  # a server that was never stopped
    assert _count(tmp_path).startswith("2 temporary folders")
    (tmp_path / "run" / "lita" / "repo-key").mkdir(parents=True)  # the default cache under $XDG_RUNTIME_DIR
    assert "1 runtime cache folders" in _count(tmp_path)
    region = Path("/dev/shm") / f"triton_python_backend_shm_region_leaktest_{uuid.uuid4().hex}"
    before = _count(tmp_path)
    region.write_bytes(b"")
    try:
        assert _count(tmp_path) != before
    finally:
        region.unlink()
    assert _count(tmp_path) == before
