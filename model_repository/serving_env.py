"""Put the serving environment ahead of the base interpreter's packages, in every step's process.

The python backend stub ignores ``PYTHONPATH``: a model that imported numpy or lita_serve first
would get the base interpreter's (a numpy 2 there misreads the stub's tensors). The repository
writer copies this file beside each step's ``model.py`` (the stub puts that folder on
``sys.path``), and each adapter imports it before anything else. The launcher passes the
environment's site-packages and source folders in ``PYTHONPATH``; their ``.pth`` files are read
too, so editable installs work.
"""

import os
import site
import sys

_base = list(sys.path)
for _path in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    if _path and _path not in _base:
        site.addsitedir(_path)
sys.path[:] = [p for p in sys.path if p not in _base] + _base
