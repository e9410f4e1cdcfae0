"""The visual-feature cache: LRU by bytes across processes, keys, and its use by the real server."""

from __future__ import annotations

import json
import os
import queue
import stat
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from triton_calls import request_inputs
from videos import make_mp4

from lita_serve.config import LitaConfig
import lita_serve.feature_cache as feature_cache
from lita_serve.feature_cache import (
    CACHE_ROOT_ENV, PIN_MAX_AGE_S, PIN_SUFFIX, CacheFolderError, FeatureCache, config_fingerprint, default_cache_dir,
    feature_key,
)
from lita_serve.vision_encoder.cached import CachedEncoder, EncodeJob
from lita_serve.serving.inprocess import LitaPipeline
from lita_serve.serving.launcher import Ports, ServerStartError, TritonServer
from lita_serve.preprocess.request import prepare_cached

QUESTION = "What happens in the video?"


def entry(n_floats: int, value: float) -> np.ndarray:
    return np.full((n_floats // 4, 4), value, np.float32)


# --- the store --------------------------------------------------------------------------------
def test_round_trip_keeps_array_and_meta(tmp_path):
    cache = FeatureCache(tmp_path, 1 << 20)
    arr = np.arange(24, dtype=np.float32).reshape(6, 4)
    assert cache.put("ab12", arr, {"duration": 3.5})
    got, meta = cache.get("ab12")
    np.testing.assert_array_equal(got, arr)
    assert meta == {"duration": 3.5}
    assert cache.peek("ab12").shape == (6, 4)
    assert cache.get("cd34") is None
    assert (cache.counters.hits, cache.counters.misses) == (1, 1)


# --- a private, checked store ------------------------------------------------------------------
def test_cache_folders_are_private_and_others_are_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(CACHE_ROOT_ENV, raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    folder = default_cache_dir(tmp_path / "repo")
    assert folder.parent == tmp_path / "run" / "lita" and folder.name.startswith("feature-cache-")
    cache = FeatureCache(folder, 1 << 20)
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    cache.put("ab12", entry(8, 1.0), {})
    assert stat.S_IMODE(os.stat(cache.path("ab12")).st_mode) == 0o600

    open_to_all = tmp_path / "open"
    open_to_all.mkdir()
    open_to_all.chmod(0o777)  # as another user sharing /tmp would leave it
    with pytest.raises(CacheFolderError, match=f"{open_to_all} is writable by its group or others"):
        FeatureCache(open_to_all, 1 << 20)
    link = tmp_path / "link"
    link.symlink_to(folder)
    with pytest.raises(CacheFolderError, match=f"{link} is a symbolic link"):
        FeatureCache(link, 1 << 20)
    if os.geteuid() == 0:  # root can hand a folder to another user; others cannot make one
        foreign = tmp_path / "foreign"
        foreign.mkdir(mode=0o700)
        os.chown(foreign, 4242, 4242)
        with pytest.raises(CacheFolderError, match=f"{foreign} is owned by uid 4242"):
            FeatureCache(foreign, 1 << 20)


def test_planted_corrupted_and_foreign_entries_are_dropped_and_counted(tmp_path):
    cache = FeatureCache(tmp_path / "c", 1 << 20, fingerprint="this encoder")
    other = FeatureCache(tmp_path / "c", 1 << 20, fingerprint="other weights")
    other.put("aa11", entry(8, 5.0), {"duration": 1.0})  # a foreign entry under a key this cache asks for
    cache.path("bb22").write_bytes(b"\x10\x00\x00\x00{not json at all" + os.urandom(64))  # corrupted
    (tmp_path / "secret").write_bytes(b"x" * 64)
    cache.path("cc33").symlink_to(tmp_path / "secret")  # a link where an entry belongs
    renamed = tmp_path / "c" / "dd44.feat"
    cache.put("ee55", entry(8, 2.0), {"duration": 1.0})
    cache.path("ee55").rename(renamed)  # a genuine entry under another key
    assert cache.pin("aa11") is None and cache.get("bb22") is None
    assert cache.peek("cc33") is None and cache.get("dd44") is None
    assert cache.counters.rejected == 4 and cache.counters.hits == 0
    assert not any(cache.path(k).exists() or cache.path(k).is_symlink() for k in ("aa11", "bb22", "cc33", "dd44"))
    assert (tmp_path / "secret").exists(), "the link is removed, not what it points to"
    assert cache.put("aa11", entry(8, 3.0), {"duration": 1.0}) and cache.get("aa11")[0][0, 0] == 3.0


def test_lru_by_bytes_evicts_least_recently_used(tmp_path):
    one = 4096 * 4  # bytes of one entry's array
    cache = FeatureCache(tmp_path, 3 * one + 3 * 200)  # room for three entries and their headers
    for i, key in enumerate(["a1", "b2", "c3"]):
        cache.put(key, entry(4096, i), {})
        os.utime(cache.path(key), ns=(i * 10**9, i * 10**9))  # distinct, ordered recency
    cache.get("a1")  # a1 becomes the most recent
    cache.put("d4", entry(4096, 9), {})
    assert cache.peek("b2") is None  # the least recently used went
    assert all(cache.peek(k) is not None for k in ("a1", "c3", "d4"))
    assert cache.total_bytes() <= cache.capacity_bytes
    assert cache.counters.evictions == 1


def test_entry_larger_than_budget_is_not_stored_and_zero_disables(tmp_path):
    small = FeatureCache(tmp_path / "s", 1000)
    assert not small.put("aa", entry(4096, 1), {})
    assert small.total_bytes() == 0
    off = FeatureCache(tmp_path / "off", 0)
    assert not off.enabled and not off.put("aa", entry(8, 1), {})
    assert off.get("aa") is None and not (tmp_path / "off").exists()


def test_entries_written_by_another_process_are_visible(tmp_path):
    cache = FeatureCache(tmp_path, 1 << 20)
    code = ("import numpy as np, sys; from lita_serve.feature_cache import FeatureCache;"
            "c = FeatureCache(sys.argv[1], 1 << 20);"
            "c.put('feed', np.full((3, 5), 7.0, np.float32), {'duration': 2.0});"
            "print(c.get('cafe')[1]['duration'])")
    cache.put("cafe", entry(16, 1), {"duration": 4.25})
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "4.25"  # the child read the parent's entry
    got, meta = cache.get("feed")  # and the parent reads the child's
    assert got.shape == (3, 5) and float(got[0, 0]) == 7.0 and meta["duration"] == 2.0


def test_key_changes_with_bytes_and_with_config():
    tiny = LitaConfig.from_name("tiny")
    fp = config_fingerprint(tiny)
    assert feature_key(b"video-a", fp) == feature_key(b"video-a", fp)
    assert feature_key(b"video-a", fp) != feature_key(b"video-b", fp)
    fewer = replace(tiny, lita=replace(tiny.lita, sample_frames=50))
    larger = replace(tiny, vision=replace(tiny.vision, image_size=336))
    renamed = replace(tiny, name="other")
    keys = {feature_key(b"video-a", config_fingerprint(c)) for c in (tiny, fewer, larger, renamed)}
    assert len(keys) == 4


# --- preprocess + encoder in one process ------------------------------------------------------
@pytest.fixture(scope="module")
def pipeline(tiny_repo):
    return LitaPipeline(tiny_repo, device="cpu")


def test_hit_skips_decoding_and_a_pinned_hit_survives_eviction(tiny_repo, pipeline, tmp_path):
    video = make_mp4(tmp_path / "v.mp4", seconds=3.0, fps=10, size=(96, 64),
                     color_fn=lambda i: (i * 20 % 256, 10, 90)).read_bytes()
    cfg = pipeline.cfg
    cache = FeatureCache(tmp_path / "cache", 1 << 24, config_fingerprint(cfg))
    encoder = CachedEncoder(pipeline.encoder, cfg, cache)

    cold = prepare_cached(video, cfg, cache)
    assert not cold.cached and cold.frames.shape[0] == cfg.lita.sample_frames
    first = encoder.run([EncodeJob(cold.frames, cold.key, cold.source_duration, cold.pin)])[0]
    assert first.stats["cache"] == "miss"

    warm = prepare_cached(video, cfg, cache)
    assert warm.cached and warm.frames.shape[0] == 0 and warm.duration == pytest.approx(cold.duration)
    hit = encoder.run([EncodeJob(warm.frames, warm.key, warm.source_duration, warm.pin)])[0]
    assert hit.stats["cache"] == "hit"
    np.testing.assert_array_equal(hit.embeddings, first.embeddings)
    assert not list(cache.directory.glob(f"*{PIN_SUFFIX}")), "the encoder removes the pin it read"

    # Evicted between the preprocess lookup and the encoder: the pin still holds the features,
    # and the video never has to reach the encoder.
    raced = prepare_cached(video, cfg, cache)
    cache.remove(raced.key)
    assert cache.peek(raced.key) is None
    after = encoder.run([EncodeJob(raced.frames, raced.key, raced.source_duration, raced.pin)])[0]
    assert after.error is None and after.stats["cache"] == "hit"
    np.testing.assert_array_equal(after.embeddings, first.embeddings)

    # A hit without a pin (it cannot be read) is this request's error, not a wrong answer.
    lost = encoder.run([EncodeJob(raced.frames, raced.key, raced.source_duration, "")])[0]
    assert lost.error is not None and "pinned" in str(lost.error)


def test_stale_pins_are_removed_and_pins_cannot_name_other_files(tmp_path, monkeypatch):
    cache = FeatureCache(tmp_path / "cache", 1 << 20)
    key = "ab" * 20
    assert cache.put(key, np.ones((2, 3), np.float32), {"duration": 1.0})
    pin, info = cache.pin(key)
    assert info.shape == (2, 3) and pin.startswith(key) and pin.endswith(PIN_SUFFIX)
    assert cache.pin("cd" * 20) is None  # absent entry: no pin, a miss
    with pytest.raises(ValueError, match="bad cache pin"):
        cache.take_pinned("../../etc/passwd")
    cache.evict()
    assert (cache.directory / pin).exists(), "a pin younger than PIN_MAX_AGE_S is kept for its encoder"
    # A pin's age is its ctime, which cannot be set back: move the clock forward instead.
    monkeypatch.setattr(feature_cache.time, "time", lambda real=time.time: real() + PIN_MAX_AGE_S + 5)
    cache.evict()
    assert not (cache.directory / pin).exists()
    assert cache.peek(key) is not None, "removing stale pins never touches entries within the budget"


# --- through the real server ------------------------------------------------------------------
def ask(url: str, video: bytes, question: str = QUESTION, max_tokens: int = 8) -> dict:
    """One request over a gRPC stream; -> {"text", "stats"} of the final response."""
    client = grpcclient.InferenceServerClient(url)
    responses: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer("lita", request_inputs(video, question, max_tokens=max_tokens))
        while True:
            result, error = responses.get(timeout=120)
            if error is not None:
                raise AssertionError(f"request failed: {error}")
            if result.as_numpy("is_final")[0][0]:
                return {"text": result.as_numpy("raw_text_output")[0][0].decode(),
                        "stats": json.loads(result.as_numpy("stats")[0][0].decode())}
    finally:
        client.stop_stream()
        client.close()


def metric_values(server) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{server.host}:{server.ports.metrics}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line.startswith("lita_feature_cache_lookups_total")}


@pytest.mark.server
def test_server_second_question_hits_and_answers_like_cold(triton_server, tiny_repo, tmp_path):
    video = make_mp4(tmp_path / "s.mp4", seconds=4.0, fps=10, size=(96, 64),
                     color_fn=lambda i: (30, i * 13 % 256, 200)).read_bytes()
    url = triton_server.grpc_url
    cold = ask(url, video)
    assert cold["stats"]["cache"] == "miss" and "decode_ms" in cold["stats"]
    warm = ask(url, video)
    assert warm["stats"]["cache"] == "hit" and "decode_ms" not in warm["stats"]
    assert warm["text"] == cold["text"]
    metrics = metric_values(triton_server)
    assert metrics.get('lita_feature_cache_lookups_total{result="hit"}', 0) >= 1
    assert metrics.get('lita_feature_cache_lookups_total{result="miss"}', 0) >= 1

    # An entry evicted since it was stored: the request decodes again and still answers the same.
    cfg = LitaConfig.load(Path(tiny_repo) / "lita.json")
    cache = FeatureCache(default_cache_dir(tiny_repo), cfg.limits.feature_cache_bytes)
    cache.clear()
    again = ask(url, video)
    assert again["stats"]["cache"] == "miss" and again["text"] == cold["text"]


@pytest.mark.server
def test_server_never_serves_planted_entries(triton_server, tiny_repo, tmp_path):
    """Replace the server's genuine entries with a foreign one (other weights) and a corrupted one:
    both requests are answered from the video again, as they were cold."""
    cfg = LitaConfig.load(Path(tiny_repo) / "lita.json")
    served = FeatureCache.for_repository(tiny_repo, cfg)  # the server's folder and fingerprint
    videos = [make_mp4(tmp_path / f"p{i}.mp4", seconds=3.0, fps=10, size=(96, 64),
                       color_fn=lambda k, i=i: (60 * i + 40, k * 9 % 256, 120)).read_bytes() for i in range(2)]
    cold = [ask(triton_server.grpc_url, v) for v in videos]
    keys = [feature_key(v, served.fingerprint) for v in videos]
    shape = served.peek(keys[0]).shape
    intruder = FeatureCache(served.directory, cfg.limits.feature_cache_bytes, fingerprint="someone else's encoder")
    intruder.put(keys[0], np.random.default_rng(0).normal(size=shape).astype(np.float32), {"duration": 3.0})
    served.path(keys[1]).write_bytes(b"\x08\x00\x00\x00garbage!" + os.urandom(256))
    again = [ask(triton_server.grpc_url, v) for v in videos]
    for before, after in zip(cold, again):
        assert after["stats"]["cache"] == "miss" and after["text"] == before["text"]
    assert all(served.peek(k) is not None for k in keys), "genuine entries were stored in their place"


@pytest.mark.server
def test_server_refuses_a_cache_folder_others_can_write(tiny_repo, tmp_path, monkeypatch):
    root = tmp_path / "runtime"
    root.mkdir(mode=0o700)
    monkeypatch.setenv(CACHE_ROOT_ENV, str(root))  # the server started below inherits it
    folder = default_cache_dir(tiny_repo)
    folder.mkdir()
    folder.chmod(0o777)  # created first by someone else sharing the machine
    server = TritonServer(tiny_repo, ports=Ports.free())
    try:
        with pytest.raises(ServerStartError) as refused:
            server.start(timeout=240)
    finally:
        server.stop()
    assert f"feature cache folder {folder} is writable by its group or others" in str(refused.value)
