"""The offline bundle (``make gpu-bundle``): what a GPU machine without tritonserver, a video
decoder or a network needs to serve lita-serve through the real ``tritonserver``, from registry
wheels, small enough to travel with the working tree (64 MiB in all).

The GPU machine: x86-64, glibc 2.39, Python 3.12 with torch, numpy 2, sentencepiece, safetensors,
grpcio, protobuf, urllib3, packaging (and more), but no tritonserver, PyAV, tritonclient or
python-rapidjson. The bundle is one ``.tar.xz`` per part plus ``manifest.json`` (every file's
size and sha256, the source wheels, what was kept, dropped or changed and why):

* ``tritonserver.tar.xz``: the ``pytriton`` package of nvidia-pytriton 0.7.0 cut down to what the
  launcher uses (``tritonserver/bin``, the python backend, the Python 3.12 stub and the shared
  libraries they need, found by walking ELF ``DT_NEEDED`` entries), symbols stripped, and ICU's
  data table blanked (libxml2 links ICU only for exotic XML encodings, which a local model
  repository never reads; the zeros compress to nothing);
* numpy 1.26.4: the stub of Triton 2.51 is built with a pybind11 older than 2.12 (it imports
  ``numpy.core.multiarray``, never ``numpy._core``), which reads NumPy 1.x structures;
* PyAV (the serving path probes every video with it; decord alone serves no request), the
  pure-Python tritonclient and python-rapidjson, which tritonclient imports.

Wheels keep their files byte for byte (only numpy's own test folders are left out). Downloads
and built archives are cached outside the bundle (``--cache``), so that carrying the bundle
folder never carries the cache and a rebuild from unchanged wheels only copies files.

    python3 -m benchmarks.gpu_bundle --out .gpu-bundle                      # here, with pip
    python3 -m benchmarks.gpu_bundle --check .gpu-bundle
    python3 -m benchmarks.gpu_bundle --install .gpu-bundle --target /tmp/lita-site --smoke   # there

Installing only needs the standard library: it unpacks the archives into ``--target`` (put it
first on ``PYTHONPATH``), reports libraries the loader cannot find (``libpython3.12.so.1.0`` for
the stub) and imports every bundled module; ``--smoke`` then starts ``tritonserver`` from the
target with a trivial python-backend model and runs one inference over HTTP on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

MiB = 1 << 20
TRANSFER_LIMIT = 64 * MiB  # working tree + bundle, raw bytes, per run on the GPU machine
PYTHON = "3.12"  # the GPU machine's interpreter
RECIPE = 2  # bump when what goes into an archive changes: cached archives are rebuilt
MANIFEST = "manifest.json"
# the checkout's copy of what every adapter imports first (the smoke model imports it too)
SERVING_ENV = Path(__file__).resolve().parents[1] / "model_repository" / "serving_env.py"
INSTALLED = ".gpu-bundle-installed.json"  # in the target: the manifest it was installed from
TAR_MTIME = 315532800  # 1980-01-01, the zip epoch: archives do not depend on when they were made
# pip's --platform takes exact tags: every manylinux tag a glibc 2.39 x86-64 machine accepts.
PLATFORMS = ("any", "manylinux1_x86_64", "manylinux2010_x86_64", "manylinux2014_x86_64",
             *(f"manylinux_2_{minor}_x86_64" for minor in range(5, 40)))


class BundleError(RuntimeError):
    """The bundle cannot be made, is damaged, or does not work here."""


@dataclass(frozen=True)
class Source:
    """One pinned distribution, taken from PyPI as a wheel."""

    dist: str
    version: str
    why: str
    imports: tuple[str, ...]  # modules the install step imports to check the part
    drop_tests: bool = False  # leave out the package's own ``tests`` folders

    @property
    def requirement(self) -> str:
        return f"{self.dist}=={self.version}"

    @property
    def wheel_prefix(self) -> str:
        """How the wheel's file name starts (PEP 427 escapes ``-`` in the name as ``_``)."""
        return f"{re.sub(r'[-_.]+', '_', self.dist).lower()}-{self.version}-"


TRITONSERVER = "tritonserver"
SOURCES: dict[str, Source] = {
    TRITONSERVER: Source("nvidia-pytriton", "0.7.0", "tritonserver 2.51 and its python backend", ("pytriton",)),
    "numpy": Source("numpy", "1.26.4", "the python backend stub reads NumPy 1.x structures (pybind11 < 2.12)",
                    ("numpy",), drop_tests=True),
    "av": Source("av", "18.1.0", "PyAV: every video is probed with it, and 'auto' decodes with it", ("av",)),
    "decord": Source("decord", "0.6.0", "decord: used only when a request asks for backend='decord'",
                     ("decord",)),
    "tritonclient": Source("tritonclient", "2.61.0", "lita_client (imported by the adapters) needs tritonclient.grpc; "
                           "2.51 to 2.60 carry perf_analyzer (14 MB), 2.61 is the first pure-Python wheel; its "
                           "gRPC stubs need grpcio >= 1.67.1", ("tritonclient.grpc",)),
    "python-rapidjson": Source("python-rapidjson", "1.25", "imported by tritonclient.grpc", ("rapidjson",)),
}
DECODERS = ("av", "decord")


def default_cache() -> Path:
    """Where downloads and built archives are kept: outside the bundle folder, which travels."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lita-serve" / "gpu-bundle"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def say(message: str) -> None:
    print(message, flush=True)


# --- ELF: just enough of the format (64-bit little-endian) to follow DT_NEEDED and find symbols

_SHT_DYNAMIC, _SHT_NOBITS, _SHT_DYNSYM, _DT_NEEDED = 6, 8, 11, 1


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    addr: int
    offset: int
    size: int
    link: int


def is_elf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"\x7fELF"


def _sections(data: bytes) -> list[_Section]:
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise BundleError("not a 64-bit little-endian ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    raw = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = raw[shstrndx][4] if shnum else 0

    def name(at: int) -> str:
        return data[names + at:data.index(b"\0", names + at)].decode()

    return [_Section(name(s[0]), s[1], s[3], s[4], s[5], s[6]) for s in raw]


def _string(data: bytes, table: _Section, at: int) -> str:
    start = table.offset + at
    return data[start:data.index(b"\0", start)].decode()


def elf_needed(path: Path) -> list[str]:
    """The ``DT_NEEDED`` entries of an ELF file: the libraries the loader must find for it."""
    data = path.read_bytes()
    sections = _sections(data)
    needed = []
    for dyn in (s for s in sections if s.type == _SHT_DYNAMIC):
        for tag, value in struct.iter_unpack("<qQ", data[dyn.offset:dyn.offset + dyn.size]):
            if tag == _DT_NEEDED:
                needed.append(_string(data, sections[dyn.link], value))
    return needed


def elf_symbols(path: Path) -> dict[str, tuple[int, int]]:
    """Defined dynamic symbols: name -> (offset in the file, size)."""
    data = path.read_bytes()
    sections = _sections(data)
    found = {}
    for table in (s for s in sections if s.type == _SHT_DYNSYM):
        for name_at, _info, _other, index, value, size in struct.iter_unpack(
                "<IBBHQQ", data[table.offset:table.offset + table.size]):
            if 0 < index < len(sections) and sections[index].type != _SHT_NOBITS:  # defined, with bytes
                home = sections[index]
                found[_string(data, sections[table.link], name_at)] = (home.offset + value - home.addr, size)
    return found


def elf_has_symtab(path: Path) -> bool:
    """True while the file still carries its static symbol table (what ``strip`` removes)."""
    return any(s.name == ".symtab" for s in _sections(path.read_bytes()))


def blank_icu_data(path: Path) -> int:
    """Empty ICU's data table in place (``icudtNN_dat``: count 0, entries zeroed, as ICU's own
    stub data library); the file keeps its size and layout. Returns the bytes zeroed.

    ICU then finds no converter tables and returns an error code where it would have used one.
    """
    symbols = elf_symbols(path)
    name = next((n for n in symbols if re.fullmatch(r"icudt\d+[lb]?_dat", n)), None)
    if name is None:
        raise BundleError(f"{path.name}: no icudtNN_dat symbol")
    offset, size = symbols[name]
    with open(path, "r+b") as f:
        f.seek(offset)
        head = f.read(32)
        header_size, = struct.unpack_from("<H", head)
        if head[2:4] != b"\xda\x27" or head[12:16] != b"CmnD" or not 32 <= header_size < size:
            raise BundleError(f"{path.name}: {name} is not ICU common data")
        f.seek(offset + header_size)
        f.write(bytes(size - header_size))
    return size - header_size


# --- building

def wheel_fits(name: str) -> bool:
    """True when a wheel's file name says it installs on CPython 3.12, manylinux x86-64."""
    parts = name[:-len(".whl")].split("-")
    if len(parts) not in (5, 6):
        return False
    pythons, abis, platforms = (set(tags.split(".")) for tags in parts[-3:])
    cpython = {f"cp3{minor}" for minor in range(2, 13)}
    return (bool(pythons & {"py3", "cp312"} or ("abi3" in abis and pythons & cpython))
            and bool(abis & {"none", "cp312", "abi3"}) and bool(platforms & set(PLATFORMS)))


def download(source: Source, cache: Path) -> Path:
    """The source's wheel for CPython 3.12 on manylinux x86-64, from the cache or from PyPI."""
    wheels = cache / "wheels"

    def cached() -> list[Path]:
        return sorted(p for p in wheels.glob("*.whl")
                      if p.name.lower().startswith(source.wheel_prefix) and wheel_fits(p.name))

    found = cached()
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
           "--python-version", PYTHON, "--implementation", "cp", "--abi", "cp312", "--abi", "abi3", "--abi", "none",
           *(arg for tag in PLATFORMS for arg in ("--platform", tag)), "--dest", str(wheels), source.requirement]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = cached()
    if done.returncode != 0 or not found:
        raise BundleError(f"pip download {source.requirement} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    say(f"downloaded {found[0].name} ({found[0].stat().st_size / MiB:.1f} MiB) in {time.perf_counter() - start:.1f} s")
    return found[0]


def unpack_wheel(wheel: Path, dest: Path) -> list[str]:
    """Unzip a wheel as an installer lays it out in site-packages (``*.data/purelib`` and
    ``platlib`` moved to the top, the ``scripts``/``data``/``headers`` parts left out); keeps
    file modes. Returns the wheel members left out."""
    skipped = []
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            parts = info.filename.split("/")
            if parts[0].endswith(".data"):
                if len(parts) < 3 or parts[1] not in ("purelib", "platlib"):
                    skipped.append(info.filename)
                    continue
                parts = parts[2:]
            target = dest.joinpath(*parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode | 0o644 if mode else 0o644)
    return skipped


def _tree_files(root: Path) -> Iterator[Path]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path


def _drop(path: Path) -> int:
    """Remove a file or folder; -> the bytes it held."""
    if path.is_dir():
        size = sum(p.stat().st_size for p in _tree_files(path))
        shutil.rmtree(path)
        return size
    size = path.stat().st_size
    path.unlink()
    return size


def needed_closure(roots: Sequence[Path], libs: Path) -> tuple[dict[str, list[str]], list[str]]:
    """Follow DT_NEEDED from ``roots`` through the wheel's library folder.

    Returns (bundled library -> the files that need it, libraries the system must provide).
    """
    users: dict[str, list[str]] = {}
    system: set[str] = set()
    todo = list(roots)
    while todo:
        item = todo.pop()
        for name in elf_needed(item):
            if (libs / name).is_file():
                if name not in users:
                    users[name] = []
                    todo.append(libs / name)
                users[name].append(item.name)
            else:
                system.add(name)
    return {name: sorted(set(by)) for name, by in sorted(users.items())}, sorted(system)


STUB = "triton_python_backend_stub"
PYTRITON_INIT = '''"""nvidia-pytriton's tritonserver, cut down for lita-serve (benchmarks/gpu_bundle.py): this package
only locates ``tritonserver/`` next to this file; PyTriton's own Python API is left out."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nvidia-pytriton")
except PackageNotFoundError:
    pass
'''


def stage_tritonserver(wheel: Path, dest: Path, stub_versions: Sequence[str]) -> dict[str, Any]:
    """Lay out the cut-down ``pytriton`` tree in ``dest``; -> what was kept, dropped and changed."""
    unpack_wheel(wheel, dest)
    pkg = dest / "pytriton"
    dist = pkg / "tritonserver"
    libs = dest / "nvidia_pytriton.libs"
    info_dir = next(dest.glob("*.dist-info"))
    dropped: list[dict[str, Any]] = []

    def drop(path: Path, why: str) -> None:
        dropped.append({"path": path.relative_to(dest).as_posix(), "bytes": _drop(path), "why": why})

    for item in sorted(pkg.iterdir()):
        if item.name not in ("__init__.py", "tritonserver"):
            drop(item, "PyTriton's Python API (needs pyzmq, sh, tritonclient[all]); the launcher only "
                       "locates tritonserver/")
    for stub_dir in sorted((dist / "python_backend_stubs").iterdir()):
        if stub_dir.name not in stub_versions:
            drop(stub_dir, f"python backend stub for Python {stub_dir.name}; the GPU machine runs {PYTHON}")
    missing = [v for v in stub_versions if not (dist / "python_backend_stubs" / v / STUB).is_file()]
    if missing:
        raise BundleError(f"{wheel.name} has no python backend stub for Python {', '.join(missing)}")
    if (dist / "caches").exists():
        drop(dist / "caches", "response cache plugin, loaded only with --cache-config (the launcher never sets it)")
    for name in ("RECORD", "entry_points.txt"):
        if (info_dir / name).exists():
            drop(info_dir / name, "lists or runs files that were left out")

    roots = [dist / "bin" / "tritonserver", dist / "backends" / "python" / "libtriton_python.so",
             *(dist / "python_backend_stubs" / v / STUB for v in stub_versions)]
    users, system = needed_closure(roots, libs)
    for lib in sorted(libs.iterdir()):
        if lib.name not in users:
            drop(lib, "no kept file needs it (DT_NEEDED)" + (": the libpython of the Python 3.13 stub"
                                                              if lib.name.startswith("libpython") else ""))

    changed = [{"path": "pytriton/__init__.py", "why": "imports only importlib.metadata (the original imports "
                "PyTriton's API)"}]
    (pkg / "__init__.py").write_text(PYTRITON_INIT)
    for lib in libs.glob("libicudata*"):
        zeroed = blank_icu_data(lib)
        changed.append({"path": lib.relative_to(dest).as_posix(), "why": f"ICU data table blanked ({zeroed / MiB:.1f} "
                        "MiB of zeros): needed by libxml2's converters only, for XML in exotic encodings"})
    strip = shutil.which("strip")
    for path in _tree_files(dest):
        if strip and is_elf(path) and elf_has_symtab(path):
            subprocess.run([strip, "--strip-unneeded", str(path)], check=True)
            changed.append({"path": path.relative_to(dest).as_posix(), "why": "static symbol table stripped"})

    why = {"bin/tritonserver": "the server", "backends/python/libtriton_python.so": "the python backend",
           "backends/python/triton_python_backend_utils.py": "pb_utils, imported by every model.py"}
    kept = []
    for path in _tree_files(dest):
        rel = path.relative_to(dest).as_posix()
        if path.parent == libs:
            reason = "needed by " + ", ".join(users[path.name])
        elif path.name == STUB:
            reason = f"python backend stub for Python {path.parent.name}"
        elif path.is_relative_to(info_dir):
            reason = "metadata: pytriton.__version__, licences"
        else:
            reason = why.get(path.relative_to(dist).as_posix() if path.is_relative_to(dist) else "",
                             "the package (rewritten, see changed)")
        kept.append({"path": rel, "bytes": path.stat().st_size, "why": reason})
    return {"kept": kept, "dropped": dropped, "changed": changed, "system_libraries": system,
            "stubs": list(stub_versions), "stripped_with": strip}


def stage_wheel(source: Source, wheel: Path, dest: Path) -> dict[str, Any]:
    """Unpack a wheel into ``dest`` as it would be installed, less its tests when asked."""
    dropped = [{"path": name, "why": "wheel scripts/data, not importable"} for name in unpack_wheel(wheel, dest)]
    if source.drop_tests:
        for tests in sorted(dest.rglob("tests")):
            if tests.is_dir() and tests.exists():
                dropped.append({"path": tests.relative_to(dest).as_posix() + "/", "bytes": _drop(tests),
                                "why": "the package's own test suite, never imported when serving"})
    return {"dropped": dropped}


def write_archive(tree: Path, archive: Path) -> None:
    """``tree`` as a reproducible tar.xz (sorted, no owners, fixed times)."""
    tmp = archive.with_name(archive.name + ".part")
    with tarfile.open(tmp, "w:xz", preset=9) as tar:
        for path in sorted(tree.rglob("*")):
            info = tar.gettarinfo(str(path), path.relative_to(tree).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = TAR_MTIME
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)
    tmp.replace(archive)


def recipe_key(part: str, wheel_sha: str, stub_versions: Sequence[str]) -> str:
    text = json.dumps([RECIPE, part, wheel_sha, sorted(stub_versions) if part == TRITONSERVER else []])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_part(part: str, cache: Path, stub_versions: Sequence[str]) -> tuple[Path, dict[str, Any]]:
    """One part's archive (from the cache when its recipe is unchanged) and its manifest entry."""
    source = SOURCES[part]
    wheel = download(source, cache)
    wheel_sha = sha256(wheel)
    key = recipe_key(part, wheel_sha, stub_versions)
    archive = cache / "archives" / f"{part}-{key}.tar.xz"
    record = cache / "archives" / f"{part}-{key}.json"
    if archive.is_file() and record.is_file():
        say(f"{part}: cached archive {archive.name}")
        return archive, json.loads(record.read_text())
    start = time.perf_counter()
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"gpu-bundle-{part}-") as tmp:
        tree = Path(tmp)
        detail = stage_tritonserver(wheel, tree, stub_versions) if part == TRITONSERVER else stage_wheel(source, wheel, tree)
        unpacked = sum(p.stat().st_size for p in _tree_files(tree))
        write_archive(tree, archive)
    entry = {"source": {"dist": source.dist, "version": source.version, "wheel": wheel.name,
                        "bytes": wheel.stat().st_size, "sha256": wheel_sha},
             "why": source.why, "imports": list(source.imports), "unpacked_bytes": unpacked, **detail}
    record.write_text(json.dumps(entry, indent=1))
    for stale in archive.parent.glob(f"{part}-*"):  # earlier recipes of this part
        if stale not in (archive, record) and re.fullmatch(rf"{re.escape(part)}-[0-9a-f]{{16}}\.(tar\.xz|json)", stale.name):
            stale.unlink()
    say(f"{part}: {wheel.name} -> {archive.stat().st_size / MiB:.1f} MiB xz ({unpacked / MiB:.1f} MiB unpacked) "
        f"in {time.perf_counter() - start:.1f} s")
    return archive, entry


def archive_name(part: str) -> str:
    source = SOURCES[part]
    return f"{part}.tar.xz" if part == TRITONSERVER else f"{source.wheel_prefix.rstrip('-')}.tar.xz"


def tree_bytes(root: Path) -> int | None:
    """Bytes of the files that travel with a working tree: tracked ones and untracked ones git
    does not ignore (None outside a git checkout)."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                             capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = {root / name.decode() for name in out.split(b"\0") if name}
    return sum(p.stat().st_size for p in paths if p.is_file() and not p.is_symlink())


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` with ``total_bytes``: the archives and the manifest itself."""
    archives = sum(f["bytes"] for f in manifest["files"])
    manifest["total_bytes"] = archives
    while True:
        text = json.dumps(manifest, indent=1)
        if manifest["total_bytes"] == archives + len(text.encode()):
            break
        manifest["total_bytes"] = archives + len(text.encode())
    (out / MANIFEST).write_text(text)


def build(out: Path, cache: Path | None = None, decoder: str = "av",
          stub_versions: Sequence[str] = (PYTHON,), tree_root: Path | None = Path(".")) -> dict[str, Any]:
    """Make the bundle in ``out``; -> its manifest. Raises :class:`BundleError` when it and the
    working tree at ``tree_root`` would not fit :data:`TRANSFER_LIMIT` together."""
    cache = cache or default_cache()
    parts = [TRITONSERVER, "numpy", decoder, "tritonclient", "python-rapidjson"]
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=max(1, min(len(parts), os.cpu_count() or 1))) as pool:
        built = dict(zip(parts, pool.map(lambda p: build_part(p, cache, stub_versions), parts)))
    out.mkdir(parents=True, exist_ok=True)
    previous = read_manifest(out) if (out / MANIFEST).is_file() else {}
    files, components = [], {}
    for part, (archive, entry) in built.items():
        name, digest = archive_name(part), sha256(archive)
        if not (out / name).is_file() or sha256(out / name) != digest:
            shutil.copyfile(archive, out / name)
        files.append({"name": name, "bytes": (out / name).stat().st_size, "sha256": digest})
        components[part] = {"archive": name, **entry}
    for old in previous.get("files", []):
        if old["name"] not in {f["name"] for f in files} and (out / old["name"]).is_file():
            (out / old["name"]).unlink()
    manifest: dict[str, Any] = {
        "format": 1, "python": PYTHON, "decoder": decoder, "files": files, "components": components,
        "notes": [
            "install: python3 -m benchmarks.gpu_bundle --install DIR --target SITE, then put SITE first on PYTHONPATH",
            "the stub needs libpython3.12.so.1.0 from the GPU machine (sysconfig LIBDIR on LD_LIBRARY_PATH)",
            "numpy 1.26.4 shadows the machine's numpy 2 for every process with SITE on PYTHONPATH",
        ],
    }
    tree = manifest["tree_bytes"] = tree_bytes(tree_root) if tree_root is not None else None
    write_manifest(out, manifest)
    for f in files:
        say(f"  {f['name']:<40} {f['bytes'] / MiB:7.2f} MiB")
    # What travels is the whole folder: also files put there by others (e.g. media).
    folder = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    line = f"bundle {out}: {manifest['total_bytes'] / MiB:.2f} MiB in {len(files) + 1} files"
    if folder != manifest["total_bytes"]:
        line += f" (the folder with other files: {folder / MiB:.2f} MiB)"
    line += f", made in {time.perf_counter() - start:.1f} s"
    if tree is not None:
        line += f"; with the working tree ({tree / MiB:.2f} MiB): {(tree + folder) / MiB:.2f} MiB " \
                f"of {TRANSFER_LIMIT / MiB:.0f} MiB"
    say(line)
    if tree is not None and tree + folder > TRANSFER_LIMIT:
        raise BundleError(f"bundle and working tree together exceed {TRANSFER_LIMIT / MiB:.0f} MiB")
    return manifest


# --- checking and installing (standard library only: this runs on the GPU machine)

def read_manifest(bundle: Path) -> dict[str, Any]:
    path = bundle / MANIFEST
    if not path.is_file():
        raise BundleError(f"{path} is missing: not a bundle folder")
    return json.loads(path.read_text())


def check(bundle: Path) -> list[str]:
    """Each bundle file against the manifest (size, sha256); -> the problems found."""
    problems = []
    for entry in read_manifest(bundle)["files"]:
        path = bundle / entry["name"]
        if not path.is_file():
            problems.append(f"{entry['name']}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{entry['name']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif sha256(path) != entry["sha256"]:
            problems.append(f"{entry['name']}: sha256 differs from the manifest")
    return problems


def _extract(archive: Path, target: Path) -> None:
    with tarfile.open(archive, "r:xz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(target, filter="data")
        else:  # pragma: no cover - Pythons without extraction filters
            tar.extractall(target)


def install(bundle: Path, target: Path, parts: Sequence[str] | None = None) -> dict[str, Any]:
    """Check the bundle, then unpack its archives (or only ``parts``) into ``target``.

    A target already holding this very bundle is left as it is.
    """
    start = time.perf_counter()
    manifest = read_manifest(bundle)
    problems = check(bundle)
    if problems:
        raise BundleError("bundle damaged: " + "; ".join(problems))
    say(f"checked {len(manifest['files'])} files against {MANIFEST} in {time.perf_counter() - start:.1f} s")
    chosen = [p for p in manifest["components"] if parts is None or p in parts]
    stamp = target / INSTALLED
    wanted = {"files": manifest["files"], "parts": chosen}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        say(f"{target} already holds this bundle; nothing to unpack")
        return manifest
    target.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    for part in chosen:
        step = time.perf_counter()
        _extract(bundle / manifest["components"][part]["archive"], target)
        say(f"unpacked {part} ({manifest['components'][part]['source']['wheel']}) in {time.perf_counter() - step:.1f} s")
    stamp.write_text(json.dumps(wanted))
    say(f"installed into {target} in {time.perf_counter() - start:.1f} s; put it first on PYTHONPATH")
    return manifest


def add_stub(target: Path, wheel: Path, version: str) -> Path:
    """Copy one more python backend stub from the nvidia-pytriton wheel into an installed tree
    (to run the tree under another Python, e.g. a local check under 3.11)."""
    member = f"pytriton/tritonserver/python_backend_stubs/{version}/{STUB}"
    dest = target / member
    dest.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as zf, zf.open(member) as src, open(dest, "wb") as out:
        shutil.copyfileobj(src, out)
    dest.chmod(0o755)
    return dest


def library_path() -> list[str]:
    """The interpreter's LIBDIR (the stub links libpython) ahead of the caller's LD_LIBRARY_PATH."""
    libdir = sysconfig.get_config_var("LIBDIR")
    return [p for p in (libdir, *os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep)) if p]


def this_stub(target: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    return target / "pytriton" / "tritonserver" / "python_backend_stubs" / version / STUB


def linked_libraries(target: Path) -> dict[str, dict[str, str | None]]:
    """``ldd`` of the server, the python backend and this interpreter's stub, with the library
    path the launcher sets: file -> {library: where the loader finds it, None when it does not}.
    Empty without ``ldd``; a file that is not there maps to {"(file missing)": None}."""
    ldd = shutil.which("ldd")
    dist = target / "pytriton" / "tritonserver"
    files = [dist / "bin" / "tritonserver", dist / "backends" / "python" / "libtriton_python.so", this_stub(target)]
    env = {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(library_path())}
    found: dict[str, dict[str, str | None]] = {}
    for path in files if ldd else []:
        if not path.is_file():
            found[path.name] = {"(file missing)": None}
            continue
        out = subprocess.run([ldd, str(path)], capture_output=True, text=True, env=env).stdout
        libs: dict[str, str | None] = {}
        for line in out.splitlines():
            name, arrow, rest = line.strip().partition(" => ")
            if arrow:
                libs[name] = None if rest.startswith("not found") else rest.split(" (")[0]
        found[path.name] = libs
    return found


def missing_libraries(target: Path) -> dict[str, list[str]]:
    """File -> the libraries the loader cannot find for it (see :func:`linked_libraries`)."""
    return {name: [lib for lib, where in libs.items() if where is None]
            for name, libs in linked_libraries(target).items()}


IMPORT_PROBE = r'''
import importlib, importlib.metadata, json, sys
modules, out = sys.argv[1:], {}
for name in modules:
    try:
        mod = importlib.import_module(name)
        top = name.split(".")[0]
        version = getattr(sys.modules[top], "__version__", None)
        if version is None:
            dists = importlib.metadata.packages_distributions().get(top, [])
            version = importlib.metadata.version(dists[0]) if dists else "?"
        out[name] = {"version": str(version), "file": getattr(mod, "__file__", None)}
    except Exception as exc:
        out[name] = {"error": f"{type(exc).__name__}: {exc}"}
try:
    import numpy, torch
    array = numpy.arange(6, dtype=numpy.float32).reshape(2, 3)
    back = torch.from_numpy(array).mul(2).numpy()
    out["torch"] = {"version": torch.__version__, "from_numpy_roundtrip": bool((back == array * 2).all())}
except ImportError as exc:
    out["torch"] = {"error": f"ImportError: {exc}"}
except Exception as exc:
    out["torch"] = {"error": f"{type(exc).__name__}: {exc}", "from_numpy_roundtrip": False}
print(json.dumps(out))
'''


def import_probe(target: Path, modules: Sequence[str]) -> dict[str, Any]:
    """Import ``modules`` in a fresh interpreter with ``target`` first on its path (and numpy
    with torch, when torch is there); -> module -> version and file, or the error."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}
    done = subprocess.run([sys.executable, "-c", IMPORT_PROBE, *modules], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BundleError(f"import probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.splitlines()[-1])


def probe(target: Path, manifest: dict[str, Any], parts: Sequence[str] | None = None) -> bool:
    """Print the loader's and the importer's view of an installed bundle; -> True when all is found."""
    ok = True
    linked = linked_libraries(target)
    if not linked:
        say("ldd not found: shared libraries not checked")
    for name, libs in linked.items():
        missing = [lib for lib, where in libs.items() if where is None]
        ok = ok and not missing
        libpython = next((f"; {lib} => {where}" for lib, where in libs.items() if lib.startswith("libpython") and where), "")
        say(f"libraries of {name}: {'all found' if not missing else 'NOT FOUND: ' + ', '.join(missing)}{libpython}")
    modules = [m for p, c in manifest["components"].items() if parts is None or p in parts for m in c["imports"]]
    for name, result in import_probe(target, modules).items():
        if "error" in result:
            optional = name == "torch" and result["error"].startswith("ImportError")  # no torch: nothing to check
            ok = ok and optional
            say(f"import {name}: {result['error']}")
        else:
            extra = f", torch.from_numpy round trip {'ok' if result['from_numpy_roundtrip'] else 'WRONG'}" \
                if name == "torch" else f" from {result['file']}"
            ok = ok and result.get("from_numpy_roundtrip", True)
            say(f"import {name}: {result['version']}{extra}")
    return ok


# --- a trivial model through the installed tritonserver

SMOKE_MODEL = "bundle_smoke"
SMOKE_CONFIG = f'''name: "{SMOKE_MODEL}"
backend: "python"
max_batch_size: 0
input [
  {{ name: "X" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "S" data_type: TYPE_STRING dims: [ -1 ] }}
]
output [
  {{ name: "Y" data_type: TYPE_FP32 dims: [ -1 ] }},
  {{ name: "T" data_type: TYPE_STRING dims: [ -1 ] }},
  {{ name: "NUMPY" data_type: TYPE_STRING dims: [ 1 ] }}
]
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
'''
SMOKE_PY = '''import serving_env  # noqa: F401 - the project's adapters' first import: PYTHONPATH ahead of the base packages

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "X").as_numpy()
            s = pb_utils.get_input_tensor_by_name(request, "S").as_numpy()
            outputs = [pb_utils.Tensor("Y", (x * 2 + 1).astype(np.float32)),
                       pb_utils.Tensor("T", np.array([v.upper() for v in s.reshape(-1)], dtype=np.object_)),
                       pb_utils.Tensor("NUMPY", np.array([np.__version__.encode()], dtype=np.object_))]
            responses.append(pb_utils.InferenceResponse(output_tensors=outputs))
        return responses
'''


def free_ports(count: int = 3) -> list[int]:
    socks = [socket.socket() for _ in range(count)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _http(url: str, body: dict[str, Any] | None = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            payload = resp.read()
            return resp.status, json.loads(payload) if payload else None
    except urllib.error.HTTPError as exc:
        raise BundleError(f"{url}: HTTP {exc.code}: {exc.read().decode(errors='replace')[:2000]}") from None


def smoke(target: Path, timeout: float = 120.0) -> dict[str, Any]:
    """Start ``tritonserver`` from ``target`` on loopback with a trivial python-backend model (the
    launcher's command line and environment), wait for ``/v2/health/ready``, run one inference
    over HTTP and check its outputs, stop the server. -> timings and what the stub reported."""
    dist = target / "pytriton" / "tritonserver"
    stub = this_stub(target)
    if not stub.is_file():
        raise BundleError(f"{target} has no python backend stub for Python {stub.parent.name}")
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="gpu-bundle-smoke-") as tmp:
        work = Path(tmp)
        model = work / "models" / SMOKE_MODEL
        (model / "1").mkdir(parents=True)
        (model / "config.pbtxt").write_text(SMOKE_CONFIG)
        (model / "1" / "model.py").write_text(SMOKE_PY)
        shutil.copyfile(SERVING_ENV, model / "1" / SERVING_ENV.name)
        python_dir = work / "backends" / "python"
        python_dir.mkdir(parents=True)
        for item in (dist / "backends" / "python").iterdir():
            shutil.copy2(item, python_dir / item.name)
        (python_dir / STUB).symlink_to(stub)  # keeps the stub's $ORIGIN-relative library path
        http, grpc, metrics = free_ports()
        shm_prefix = f"gpu_bundle_smoke_{os.getpid()}_"
        cmd = [str(dist / "bin" / "tritonserver"), f"--model-repository={work / 'models'}",
               f"--backend-directory={work / 'backends'}", "--http-address=127.0.0.1", "--grpc-address=127.0.0.1",
               "--metrics-address=127.0.0.1", f"--http-port={http}", f"--grpc-port={grpc}",
               f"--metrics-port={metrics}", "--exit-timeout-secs=20",
               f"--backend-config=python,shm-region-prefix-name={shm_prefix}"]
        site_dirs = [sysconfig.get_paths()[kind] for kind in ("purelib", "platlib")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(target), *site_dirs])),
               "LD_LIBRARY_PATH": os.pathsep.join(library_path())}
        log_path = work / "server.log"
        start = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        url = f"http://127.0.0.1:{http}"
        try:
            while True:
                if proc.poll() is not None:
                    raise BundleError(f"tritonserver exited with code {proc.returncode}:\n{_tail(log_path)}")
                if time.perf_counter() - start > timeout:
                    raise BundleError(f"tritonserver not ready after {timeout:.0f} s:\n{_tail(log_path)}")
                try:
                    if _http(f"{url}/v2/health/ready", timeout=2)[0] == 200:
                        break
                except (urllib.error.URLError, OSError):
                    pass
                time.sleep(0.2)
            result["ready_s"] = round(time.perf_counter() - start, 2)
            say(f"tritonserver ready on 127.0.0.1:{http} in {result['ready_s']} s")
            x = [0.5, -1.0, 2.25, 1e6]
            body = {"inputs": [{"name": "X", "shape": [len(x)], "datatype": "FP32", "data": x},
                               {"name": "S", "shape": [2], "datatype": "BYTES", "data": ["lita", "Triton"]}]}
            step = time.perf_counter()
            _, answer = _http(f"{url}/v2/models/{SMOKE_MODEL}/infer", body, timeout=30)
            outputs = {o["name"]: o["data"] for o in answer["outputs"]}
            result["infer_ms"] = round((time.perf_counter() - step) * 1e3, 1)
            result["stub_numpy"] = outputs["NUMPY"][0]
            if outputs["Y"] != [v * 2 + 1 for v in x] or outputs["T"] != ["LITA", "TRITON"]:
                raise BundleError(f"wrong outputs from the stub: {outputs}")
            say(f"one inference in {result['infer_ms']} ms: outputs right (numpy {result['stub_numpy']} in the stub)")
        except BundleError as exc:
            raise BundleError(f"{exc}\nserver log:\n{_tail(log_path)}") from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
            for region in Path("/dev/shm").glob(f"{shm_prefix}*"):
                region.unlink(missing_ok=True)
        result["exit_code"] = proc.returncode
    return result


def _tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.is_file() else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--out", type=Path, help="make the bundle in this folder (needs pip and PyPI)")
    mode.add_argument("--check", type=Path, metavar="BUNDLE", help="check a bundle's files against its manifest")
    mode.add_argument("--install", type=Path, metavar="BUNDLE", help="unpack a bundle into --target (offline)")
    parser.add_argument("--target", type=Path, help="with --install: the folder to unpack into")
    parser.add_argument("--parts", nargs="+", help="with --install: only these parts (default: all)")
    parser.add_argument("--decoder", choices=DECODERS, default="av", help="video decoder wheel (default: av, "
                        "which the serving path needs)")
    parser.add_argument("--stub-version", action="append", dest="stub_versions", metavar="X.Y",
                        help=f"python backend stubs to keep (repeatable; default {PYTHON})")
    parser.add_argument("--cache", type=Path, default=None, help=f"downloads and archives (default {default_cache()})")
    parser.add_argument("--no-probe", action="store_true", help="with --install: skip the library and import checks")
    parser.add_argument("--smoke", action="store_true", help="with --install: then serve a trivial python-backend "
                        "model from the target through tritonserver (loopback HTTP)")
    args = parser.parse_args(argv)
    try:
        if args.out is not None:
            build(args.out, args.cache, args.decoder, args.stub_versions or [PYTHON])
        elif args.check is not None:
            problems = check(args.check)
            for line in problems or [f"{args.check}: every file matches {MANIFEST}"]:
                say(line)
            return 1 if problems else 0
        elif args.install is not None:
            if args.target is None:
                parser.error("--install needs --target")
            manifest = install(args.install, args.target, args.parts)
            if not args.no_probe and not probe(args.target, manifest, args.parts):
                return 1
            if args.smoke:
                smoke(args.target)
    except BundleError as exc:
        say(f"gpu-bundle: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
