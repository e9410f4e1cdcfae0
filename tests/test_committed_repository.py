"""The committed model_repository/ is exactly what the build writes for the demo model."""

from __future__ import annotations

from pathlib import Path

from lita_serve.serving.demo import build_demo_repository
from lita_serve.adapters.layout import MODELS

COMMITTED = Path(__file__).resolve().parents[1] / "model_repository"


def test_committed_configs_are_generated_from_the_demo_config(tmp_path):
    built = build_demo_repository(tmp_path / "repo", progress=False)
    for model in MODELS:
        committed = (COMMITTED / model / "config.pbtxt").read_text()
        assert committed == (built / model / "config.pbtxt").read_text(), (
            f"model_repository/{model}/config.pbtxt is stale: rebuild it with `make demo` (or lita build) and commit it")
        adapter = COMMITTED / model / "1" / "model.py"
        if adapter.is_file():
            assert adapter.read_text() == (built / model / "1" / "model.py").read_text()
