"""The source tree as the README's Development section draws it: every package of the runtime core
is there, the few modules at its top are the ones it names, and the adapters carry no path shim."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "src" / "lita_serve"


def _tree() -> str:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Development"):]
    return section[: section.index("```\n", section.index("```") + 3)]


def test_readme_tree_names_every_package_and_top_module() -> None:
    tree = _tree()
    packages = sorted(p.name for p in CORE.iterdir() if (p / "__init__.py").is_file())
    assert [p for p in packages if f"{p}/" not in tree] == []
    modules = sorted(p.name for p in CORE.glob("*.py") if p.name != "__init__.py")
    assert len(modules) + 1 <= 8  # __init__ included: a handful at the top, the rest in packages
    assert [m for m in modules if m not in tree] == []


def test_step_packages_name_their_entry_point() -> None:
    for step in ("preprocess", "vision_encoder", "llm", "postprocess"):
        doc = (CORE / step / "__init__.py").read_text()
        assert "Entry point:" in doc and f"lita_serve.{step}." in doc, step


def test_adapters_import_the_serving_environment_first_and_touch_no_path() -> None:
    for adapter in sorted((ROOT / "model_repository").glob("*/1/model.py")):
        code = re.sub(r'^""".*?"""\n', "", adapter.read_text(), flags=re.S).lstrip()
        assert code.startswith("import serving_env"), adapter
        assert "sys.path" not in code and "site.addsitedir" not in code, adapter
