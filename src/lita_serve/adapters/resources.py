"""Where the files that ship with the server package are: the Triton adapters and the demo model.

An installed wheel carries them as package data under ``lita_serve/_data`` (see the wheel's
``sources`` table in ``pyproject.toml``). A source checkout (editable install, tests) reads
the same files where they are committed: ``model_repository/<step>/1/model.py`` and
``assets/demo/``. One function per kind of file, so no caller guesses a path.
"""

from __future__ import annotations

from pathlib import Path

from lita_serve.errors import LitaError

_PACKAGE = Path(__file__).resolve().parents[1]  # lita_serve/
_DATA = _PACKAGE / "_data"
_CHECKOUT = _PACKAGE.parents[1]  # <checkout>/src/lita_serve -> <checkout>


class MissingResourceError(LitaError):
    """A file that ships with lita-serve is absent: the installation is incomplete."""


def _first_existing(*candidates: Path, what: str) -> Path:
    for path in candidates:
        if path.exists():
            return path
    raise MissingResourceError(f"{what} not found (looked in {', '.join(str(p) for p in candidates)}): "
                               "reinstall lita-serve")


def adapter_path(step: str) -> Path:
    """The Triton python-backend adapter (``model.py``) of ensemble step ``step``."""
    return _first_existing(_DATA / "adapters" / step / "1" / "model.py",
                           _CHECKOUT / "model_repository" / step / "1" / "model.py",
                           what=f"the {step!r} adapter model.py")


SERVING_ENV = "serving_env.py"  # written beside every adapter by the repository writer


def serving_env_path() -> Path:
    """The module every adapter imports first: it puts the serving environment on ``sys.path``."""
    return _first_existing(_DATA / "adapters" / SERVING_ENV, _CHECKOUT / "model_repository" / SERVING_ENV,
                           what="the adapters' serving_env.py")


def demo_assets() -> Path:
    """The folder of the committed demo model: ``config.json``, ``model.safetensors``, ``tokenizer.model``."""
    return _first_existing(_DATA / "demo", _CHECKOUT / "assets" / "demo", what="the demo model")
