"""A visual-feature cache shared by separate processes: a second question about the same video
skips decoding and encoding.

Why files: Triton runs the preprocess and the vision-encoder models in separate python-backend
processes (and may run several instances of each), so an in-memory dict would not be shared.
The cache is one folder of files, private to the user running the server (:func:`private_folder`:
mode 0700, refused when it is a symbolic link, owned by someone else or writable by others).
By default it sits in a per-user runtime folder (:func:`cache_root`: ``$LITA_FEATURE_CACHE_DIR``,
else ``$XDG_RUNTIME_DIR/lita``, else ``<tmp>/lita-<uid>``); ``ServeLimits.feature_cache_dir``
names another (``/dev/shm/...`` keeps it in RAM for sure):

* ``<key>.feat``: one entry, mode 0600. A 4-byte little-endian header length, a JSON header
  (dtype, shape, the key, the :func:`source_id` of what computed it, the video's measured
  duration, ...), then the raw C-order array bytes. Every read checks the header against the
  key and this cache's source: a damaged entry, or one computed by other weights or settings,
  is deleted and counted (``counters.rejected``), never served.
* Writes go to a private temporary file in the same folder, then ``os.replace`` makes the entry
  appear atomically: a reader sees either no entry or a complete one, never a partial one.
* Recency is the file's modification time: a hit touches it (``os.utime``). After each write,
  the writer takes an exclusive ``flock`` on ``.lock``, sums the sizes of all entries and deletes
  the least recently used ones until the total fits in ``capacity_bytes`` (LRU by bytes).
  An entry larger than the whole budget is not stored.
* A reader whose entry is deleted between its lookup and its read simply gets a miss (POSIX
  keeps an already-open file readable after unlink).
* ``<key>.<token>.pin``: a hit handed from one process to another. The preprocess step finds an
  entry and hard-links it under a private name (:meth:`FeatureCache.pin`); eviction never deletes
  pins, so the encoder step reads the features (:meth:`FeatureCache.take_pinned`, which removes
  the pin) even if the entry itself was evicted in between. Only the key travels between the
  steps, never the video. Pins older than :data:`PIN_MAX_AGE_S` (a request cancelled between the
  two steps) are removed at the next eviction.

Keys (:func:`feature_key`) hash the video's bytes together with everything that changes the
features: the frame count, image size, CLIP normalisation, the vision/projector configuration,
the model name and the encoder weights file's identity (size and modification time).

Hit/miss counters are kept per :class:`FeatureCache` object (per process); the Triton encoder
exports them as Prometheus counters and each response's ``stats`` says ``"cache": "hit"|"miss"``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import stat
import struct
import time
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lita_serve.config import LitaConfig
from lita_serve.errors import LitaError
from lita_serve.adapters.layout import RepositoryLayout

logger = logging.getLogger(__name__)

# Request stats that describe the video itself (its timeline, lita_serve.preprocess.request):
# stored in an entry's header, so an answer served from the cache reports them too.
ENTRY_STATS = ("sample_times_s", "frame_spacing_s", "container_duration_s")


def entry_stats(stats: dict[str, Any]) -> dict[str, Any]:
    """The part of a request's (or an entry's) stats that describes the video: :data:`ENTRY_STATS`."""
    return {k: stats[k] for k in ENTRY_STATS if k in stats}
# Where default cache folders go instead of the per-user runtime folder (tests, benchmarks).
CACHE_ROOT_ENV = "LITA_FEATURE_CACHE_DIR"
SUFFIX = ".feat"
PIN_SUFFIX = ".pin"
PIN_MAX_AGE_S = 600.0  # a pin the encoder never took (request cancelled in between) is removed after this
LOCK_FILE = ".lock"
_HEADER_LEN = struct.Struct("<I")


@dataclass(frozen=True)
class CacheEntryInfo:
    """What an entry's header says (readable without loading the array)."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    meta: dict[str, Any]


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    stores: int = 0
    evictions: int = 0
    rejected: int = 0  # entries dropped on read: damaged, or computed by something else


def config_fingerprint(cfg: LitaConfig, weights: str | Path | None = None) -> str:
    """Everything besides the video that decides the features, as a stable string."""
    parts: dict[str, Any] = {
        "name": cfg.name,
        "vision": dataclasses.asdict(cfg.vision),
        "lita": dataclasses.asdict(cfg.lita),
        "hidden": cfg.text.hidden_size,
    }
    if weights is not None and Path(weights).is_file():
        st = Path(weights).stat()
        parts["weights"] = [str(Path(weights).resolve()), st.st_size, st.st_mtime_ns]
    return json.dumps(parts, sort_keys=True, default=list)


def feature_key(video: bytes | memoryview, fingerprint: str) -> str:
    """Content hash of ``video`` and the config ``fingerprint`` (hex, 40 chars)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(fingerprint.encode())
    h.update(b"\0")
    h.update(video)
    return h.hexdigest()


class CacheFolderError(LitaError):
    """A feature-cache folder that other users could write to or have swapped: it is not used."""


def private_folder(path: str | Path) -> Path:
    """``path`` as a folder only this user can use: created with mode 0700, or checked when it exists.

    Raises :class:`CacheFolderError` naming the folder when it is a symbolic link, not a folder,
    owned by another user, or writable by its group or others: anyone able to write there could
    plant "features" that would be served as answers for the videos they choose.
    """
    path = Path(path)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        raise CacheFolderError(f"feature cache folder {path} is a symbolic link; refusing to use it")
    if not stat.S_ISDIR(info.st_mode):
        raise CacheFolderError(f"feature cache folder {path} exists and is not a folder")
    if info.st_uid != os.geteuid():
        raise CacheFolderError(f"feature cache folder {path} is owned by uid {info.st_uid}, not by this user "
                               f"(uid {os.geteuid()}); refusing to use it")
    if info.st_mode & 0o022:
        raise CacheFolderError(f"feature cache folder {path} is writable by its group or others "
                               f"(mode {stat.S_IMODE(info.st_mode):o}); refusing to use it")
    return path


def cache_root() -> Path:
    """The per-user folder that holds default cache folders (see the module docstring)."""
    named = os.environ.get(CACHE_ROOT_ENV)
    if named:
        return Path(named)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return private_folder(Path(runtime) / "lita")
    return private_folder(Path(tempfile.gettempdir()) / f"lita-{os.geteuid()}")


@contextlib.contextmanager
def temporary_cache_root(prefix: str = "lita-cache-") -> Iterator[Path]:
    """Within the block, default cache folders (of servers started there too: they inherit the
    environment) go to a new private temporary folder, which is removed afterwards."""
    previous = os.environ.get(CACHE_ROOT_ENV)
    with tempfile.TemporaryDirectory(prefix=prefix) as folder:  # mode 0700
        os.environ[CACHE_ROOT_ENV] = folder
        try:
            yield Path(folder)
        finally:
            if previous is None:
                os.environ.pop(CACHE_ROOT_ENV, None)
            else:
                os.environ[CACHE_ROOT_ENV] = previous


def default_cache_dir(repository: str | Path) -> Path:
    """The default cache folder of the model repository at ``repository`` (one per repository)."""
    tag = hashlib.blake2b(str(Path(repository).resolve()).encode(), digest_size=6).hexdigest()
    return cache_root() / f"feature-cache-{tag}"


def source_id(fingerprint: str) -> str:
    """A short digest of :func:`config_fingerprint`: what an entry was computed from."""
    return hashlib.blake2b(fingerprint.encode(), digest_size=10).hexdigest()


class _Rejected(ValueError):
    """An entry that must not be served (see :meth:`FeatureCache._reject`)."""


class FeatureCache:
    """Content-addressed arrays in a folder, LRU-bounded by bytes, safe across processes."""

    def __init__(self, directory: str | Path, capacity_bytes: int, fingerprint: str = "") -> None:
        """``fingerprint``: :func:`config_fingerprint` of the encoder this cache serves; entries
        computed from another are never served."""
        self.directory = Path(directory)
        self.capacity_bytes = int(capacity_bytes)
        self.fingerprint = fingerprint
        self.source = source_id(fingerprint)
        self.counters = CacheCounters()
        if self.enabled:
            self.directory.parent.mkdir(parents=True, exist_ok=True)
            private_folder(self.directory)

    @classmethod
    def for_repository(cls, repository: str | Path, cfg: LitaConfig) -> "FeatureCache":
        """The cache ``cfg.limits`` configures for the repository at ``repository``, serving the
        encoder whose weights and settings it holds (:attr:`fingerprint`)."""
        fingerprint = config_fingerprint(cfg, RepositoryLayout.of(repository).encoder_weights)
        if cfg.limits.feature_cache_bytes <= 0:
            return cls(cfg.limits.feature_cache_dir or ".", 0, fingerprint)
        directory = cfg.limits.feature_cache_dir or default_cache_dir(repository)
        return cls(directory, cfg.limits.feature_cache_bytes, fingerprint)

    @property
    def enabled(self) -> bool:
        return self.capacity_bytes > 0

    def path(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"bad cache key {key!r}")
        return self.directory / f"{key}{SUFFIX}"

    # --- reading --------------------------------------------------------------------------
    def peek(self, key: str) -> CacheEntryInfo | None:
        """The entry's header (no array read), or None when absent."""
        if not self.enabled:
            return None
        try:
            with self._open(self.path(key)) as f:
                return self._read_header(key, f)
        except _Rejected as exc:
            self._reject(self.path(key), exc)
        except OSError:
            pass
        return None

    def get(self, key: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """(array, meta) and a hit, or None and a miss. A hit makes the entry most recent."""
        return self._counted(key, self._load(key) if self.enabled else None)

    def _counted(self, key: str, found: tuple[np.ndarray, dict[str, Any]] | None
                 ) -> tuple[np.ndarray, dict[str, Any]] | None:
        """Count a lookup's hit or miss; a hit makes ``key``'s entry the most recent."""
        if found is None:
            self.counters.misses += 1
            return None
        self.counters.hits += 1
        try:
            os.utime(self.path(key))
        except OSError:  # evicted meanwhile: the data already read is still valid
            pass
        return found

    def _load(self, key: str, path: Path | None = None) -> tuple[np.ndarray, dict[str, Any]] | None:
        path = path or self.path(key)
        try:
            with self._open(path) as f:
                info = self._read_header(key, f)
                data = f.read()
            dtype = np.dtype(info.dtype)
            if len(data) != dtype.itemsize * int(np.prod(info.shape)):
                raise _Rejected(f"{len(data)} data bytes for shape {list(info.shape)} {dtype}")
        except _Rejected as exc:
            self._reject(path, exc)
            return None
        except OSError:
            return None
        return np.frombuffer(data, dtype).reshape(info.shape), info.meta

    @staticmethod
    def _open(path: Path):
        """Open an entry for reading without following a symbolic link; a link planted where an
        entry belongs is :class:`_Rejected`."""
        try:
            return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW), "rb")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise _Rejected("a symbolic link where an entry belongs") from None
            raise

    def _read_header(self, key: str, f) -> CacheEntryInfo:
        """The entry's header; :class:`_Rejected` when it is damaged or not this key's, from this source."""
        try:
            raw = f.read(_HEADER_LEN.size)
            (n,) = _HEADER_LEN.unpack(raw)
            header = json.loads(f.read(n))
            info = CacheEntryInfo(key, str(header["dtype"]), tuple(int(d) for d in header["shape"]),
                                  dict(header.get("meta", {})))
            np.dtype(info.dtype)
        except (struct.error, ValueError, TypeError, KeyError) as exc:
            raise _Rejected(f"unreadable header ({exc})") from None
        if header.get("key") != key:
            raise _Rejected(f"header names key {header.get('key')!r}")
        if header.get("source") != self.source:
            raise _Rejected(f"computed from {header.get('source')!r}, this server's encoder is {self.source!r}")
        return info

    def _reject(self, path: Path, why: Exception) -> None:
        """Delete an entry that must not be served, and count it."""
        self.counters.rejected += 1
        logger.warning("feature cache entry rejected", extra={"entry": path.name, "reason": str(why)})
        try:
            path.unlink()
        except OSError:
            pass

    # --- handing a hit from the preprocess step to the encoder step ------------------------
    def pin(self, key: str) -> tuple[str, CacheEntryInfo] | None:
        """Keep ``key``'s entry readable for the encoder step: (pin name, header), or None when absent."""
        if not self.enabled:
            return None
        name = f"{self.path(key).stem}.{secrets.token_hex(8)}{PIN_SUFFIX}"
        pinned = self.directory / name
        try:
            os.link(self.path(key), pinned, follow_symlinks=False)
            with self._open(pinned) as f:
                return name, self._read_header(key, f)
        except _Rejected as exc:
            pinned.unlink(missing_ok=True)
            self._reject(self.path(key), exc)
        except OSError:
            pinned.unlink(missing_ok=True)
        return None

    def take_pinned(self, pin: str) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The features a :meth:`pin` kept (and a hit), removing the pin; None if it is gone."""
        key, pinned = self._pinned(pin)
        found = self._load(key, pinned)
        pinned.unlink(missing_ok=True)
        return self._counted(key, found)

    def release(self, pin: str) -> None:
        """Drop a :meth:`pin` that will not be read (no lookup is counted)."""
        self._pinned(pin)[1].unlink(missing_ok=True)

    def _pinned(self, pin: str) -> tuple[str, Path]:
        """(key, path) of a pin name; ValueError for anything :meth:`pin` cannot have made."""
        key, token, suffix = (pin.split(".") + ["", ""])[:3]
        if f".{suffix}" != PIN_SUFFIX or not token.isalnum():
            raise ValueError(f"bad cache pin {pin!r}")
        return key, self.path(key).with_name(pin)

    # --- writing --------------------------------------------------------------------------
    def put(self, key: str, array: np.ndarray, meta: dict[str, Any] | None = None) -> bool:
        """Store ``array`` under ``key`` (atomic), then evict LRU entries over the budget.

        Returns False (and stores nothing) when disabled, when the entry alone is over the
        budget, or when the write fails (a full disk never fails a request).
        """
        if not self.enabled:
            return False
        array = np.ascontiguousarray(array)
        header = json.dumps({"dtype": array.dtype.str, "shape": list(array.shape), "key": key,
                             "source": self.source, "meta": meta or {}}).encode()
        size = _HEADER_LEN.size + len(header) + array.nbytes
        if size > self.capacity_bytes:
            return False
        target = self.path(key)
        try:
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(_HEADER_LEN.pack(len(header)))
                    f.write(header)
                    f.write(memoryview(array).cast("B"))
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self.counters.stores += 1
            self.evict()
        except OSError as exc:
            logger.warning("feature cache write failed: %s", exc)
            return False
        return True

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every entry, oldest first."""
        found = []
        with os.scandir(self.directory) as it:
            for e in it:
                if e.name.endswith(SUFFIX):
                    try:
                        st = e.stat()
                    except FileNotFoundError:
                        continue
                    found.append((st.st_mtime_ns, st.st_size, Path(e.path)))
        found.sort()
        return found

    def total_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries()) if self.enabled else 0

    def evict(self) -> int:
        """Delete least recently used entries until the total fits; -> entries deleted."""
        removed = 0
        with open(self.directory / LOCK_FILE, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                self._remove_stale_pins()
                entries = self.entries()
                total = sum(size for _, size, _ in entries)
                for _, size, path in entries:
                    if total <= self.capacity_bytes:
                        break
                    path.unlink(missing_ok=True)
                    total -= size
                    removed += 1
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.counters.evictions += removed
        return removed

    def _remove_stale_pins(self) -> None:
        oldest = time.time() - PIN_MAX_AGE_S
        with os.scandir(self.directory) as it:
            for e in it:
                if e.name.endswith(PIN_SUFFIX):
                    try:
                        if e.stat().st_ctime < oldest:
                            os.unlink(e.path)
                    except FileNotFoundError:
                        continue

    def remove(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def clear(self) -> None:
        if self.enabled:
            for _, _, path in self.entries():
                path.unlink(missing_ok=True)
