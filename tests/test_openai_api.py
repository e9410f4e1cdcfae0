"""The OpenAI-compatible endpoint, called with the official ``openai`` package.

``lita serve --openai-port`` runs as a real process on the demo repository (the committed demo
model, which answers "6.1s 14.5s"-style times about the demo video); frontends started in this
process cover a Triton that is down, a timeout and small size limits against the same server.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import http.server
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest

from lita_client import ServerUnavailableError
from lita_serve.config import LitaConfig, ServeLimits
from lita_serve.serving.demo import build_demo_repository, make_demo_video
from lita_serve.serving.launcher import Ports
from lita_serve.loadtest.inputs import distinct_copies
from lita_serve.openai_api import FrontendSettings, OpenAIFrontend
from lita_serve.openai_api.api_errors import from_client_error
from lita_serve.openai_api.frontend_settings import limits_of
from lita_serve.openai_api.media_source import decoded_size
from lita_serve.serving.demo import QUESTION

pytestmark = pytest.mark.server

KEY = "sk-lita-test"
TIME_PAIR = r"^\d+\.\ds \d+\.\ds$"


def unused_port() -> int:
    """A currently free loopback port."""
    return Ports.free().http


def data_url(video: bytes, media_type: str = "video/mp4") -> str:
    return f"data:{media_type};base64," + base64.b64encode(video).decode()


def messages(url: str, question: str = QUESTION) -> list[dict]:
    return [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                         {"type": "text", "text": question}]}]


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float) -> None:
    """Until ``url``/health answers 200 (Triton ready behind it); fails if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"lita serve exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise TimeoutError(f"{url}/health not ready after {timeout:g} s")


@pytest.fixture(scope="module")
def demo_video(tmp_path_factory) -> bytes:
    return make_demo_video(tmp_path_factory.mktemp("openai_video") / "demo.mp4").read_bytes()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """``lita serve --openai-port`` on the demo repository, API key from $LITA_API_KEY:
    (OpenAI base URL, gRPC URL, repository)."""
    root = tmp_path_factory.mktemp("openai_demo")
    repo = build_demo_repository(root / "repo", progress=False)
    ports, port = Ports.free(), unused_port()
    cmd = [sys.executable, "-m", "lita_serve.cli", "serve", "-r", str(repo), "--http-port", str(ports.http),
           "--grpc-port", str(ports.grpc), "--metrics-port", str(ports.metrics), "--openai-port", str(port)]
    log = open(root / "serve.log", "wb")
    proc = subprocess.Popen(cmd, env={**os.environ, "LITA_API_KEY": KEY}, stdout=log, stderr=subprocess.STDOUT)
    try:
        try:
            wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=240)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}:\n{(root / 'serve.log').read_text(errors='replace')[-2000:]}") from exc
        yield f"http://127.0.0.1:{port}/v1", f"127.0.0.1:{ports.grpc}", repo
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[0], api_key=KEY, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def plain(client, demo_video):
    return client.chat.completions.create(model="lita", messages=messages(data_url(demo_video)), max_tokens=32)


def test_plain_answer_has_times_in_seconds_and_lita_fields(plain):
    choice = plain.choices[0]
    assert plain.object == "chat.completion" and plain.model == "lita"
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content.strip() and re.match(TIME_PAIR, choice.message.content)
    extra = choice.model_extra["lita"]
    assert extra["raw_text"].count("<t") == 2 and extra["duration"] == pytest.approx(24.0, abs=0.5)
    (start, end), = extra["segments"]
    assert abs(start - 6.0) <= 24 / 99 + 0.05 and abs(end - 14.5) <= 24 / 99 + 0.05  # one time-token bin
    assert choice.message.content == f"{start:.1f}s {end:.1f}s"
    # The prompt counts the visual tokens (one per sampled frame, 100, plus the pooled ones) besides the words.
    assert plain.usage.prompt_tokens > 100 and 0 < plain.usage.completion_tokens <= 32
    assert plain.usage.total_tokens == plain.usage.prompt_tokens + plain.usage.completion_tokens


def test_streamed_answer_concatenates_to_the_plain_one(client, demo_video, plain):
    stream = client.chat.completions.create(model="lita", messages=messages(data_url(demo_video)), max_tokens=32,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) >= 3  # one event per token: "6.1s", " ", "14.5s"
    assert "".join(pieces) == plain.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    last_choice = [c for c in chunks if c.choices][-1].choices[0]
    assert last_choice.finish_reason == "stop"
    assert last_choice.model_extra["lita"] == plain.choices[0].model_extra["lita"]
    assert not chunks[-1].choices and chunks[-1].usage.model_dump() == plain.usage.model_dump()
    assert len({c.id for c in chunks}) == 1


def test_eight_concurrent_streams_all_answer(served, demo_video, plain):
    """Eight streams at once, each a video the server has not seen: every one gives the plain answer."""
    videos = list(itertools.islice(distinct_copies_of(demo_video), 8))

    async def one(aclient: openai.AsyncOpenAI, video: bytes) -> tuple[str, int]:
        stream = await aclient.chat.completions.create(model="lita", messages=messages(data_url(video)),
                                                       max_tokens=32, stream=True)
        text, events = "", 0
        async for chunk in stream:
            events += 1
            text += (chunk.choices[0].delta.content or "") if chunk.choices else ""
        return text, events

    async def main() -> list[tuple[str, int]]:
        aclient = openai.AsyncOpenAI(base_url=served[0], api_key=KEY, max_retries=0, timeout=120)
        try:
            return await asyncio.gather(*(one(aclient, v) for v in videos))
        finally:
            await aclient.close()

    results = asyncio.run(main())
    assert [text for text, _ in results] == [plain.choices[0].message.content] * 8
    assert all(events >= 4 for _, events in results)


def distinct_copies_of(video: bytes):
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"lita-openai-src-{os.getpid()}.mp4"
    path.write_bytes(video)
    try:
        yield from itertools.islice(distinct_copies([path], tag=f"openai-{time.time_ns()}"), 8)
    finally:
        path.unlink(missing_ok=True)


def test_models_and_health(served):
    base = served[0]
    request = urllib.request.Request(f"{base}/models", headers={"Authorization": f"Bearer {KEY}"})
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert [m["id"] for m in json.load(resp)["data"]] == ["lita"]
    with urllib.request.urlopen(base.removesuffix("/v1") + "/health", timeout=10) as resp:
        assert json.load(resp)["ok"] is True


@pytest.mark.parametrize("change, status, words", [
    ({"temperature": -1}, 400, "temperature must be >= 0"),
    ({"top_p": 1.5}, 400, "top_p must be in (0, 1]"),
    ({"max_tokens": 10**6}, 400, "exceeds the server's limit"),
    ({"n": 2}, 400, "n=2 is not supported"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, 400, "tools"),
    ({"model": "gpt-4o"}, 404, "does not exist"),
])
def test_bad_parameters_are_refused_with_a_message(client, demo_video, change, status, words):
    kwargs = {"model": "lita", "messages": messages(data_url(demo_video)), "max_tokens": 8, **change}
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(**kwargs)
    assert info.value.status_code == status and words in info.value.message


@pytest.mark.parametrize("content, words", [
    ([{"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
      {"type": "text", "text": QUESTION}], "images are not supported"),
    (QUESTION, "has no video"),
    ([{"type": "video_url", "video_url": {"url": "http://169.254.169.254/latest"}},
      {"type": "text", "text": QUESTION}], "remote video URLs are refused"),
    ([{"type": "video_url", "video_url": {"url": "file:///etc/passwd"}},
      {"type": "text", "text": QUESTION}], "--allowed-media-path"),
])
def test_requests_without_a_usable_video_are_refused(client, content, words):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="lita", messages=[{"role": "user", "content": content}])
    assert words in info.value.message


def test_a_bad_video_gets_the_servers_message_and_the_server_keeps_serving(client, demo_video, plain):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="lita", messages=messages(data_url(os.urandom(4000))), max_tokens=8)
    assert "video" in info.value.message.lower() and info.value.code == "invalid_request"
    with pytest.raises(openai.BadRequestError):  # streamed: the status comes before any event
        client.chat.completions.create(model="lita", messages=messages(data_url(b"not a video")), stream=True)
    again = client.chat.completions.create(model="lita", messages=messages(data_url(demo_video)), max_tokens=32)
    assert again.choices[0].message.content == plain.choices[0].message.content


def test_a_wrong_api_key_gets_401(served, demo_video):
    wrong = openai.OpenAI(base_url=served[0], api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="lita", messages=messages(data_url(demo_video)))
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_a_server_that_is_down_gets_503_and_health_says_so(demo_video):
    settings = FrontendSettings(f"127.0.0.1:{unused_port()}", retries=0, timeout_s=10)
    with OpenAIFrontend(settings, port=unused_port()) as frontend:
        down = openai.OpenAI(base_url=frontend.url, api_key="none", max_retries=0)
        with pytest.raises(openai.InternalServerError) as info:
            down.chat.completions.create(model="lita", messages=messages(data_url(demo_video)))
        assert info.value.status_code == 503 and "cannot reach" in info.value.message
        with pytest.raises(urllib.error.HTTPError) as health:
            urllib.request.urlopen(frontend.url.removesuffix("/v1") + "/health", timeout=10)
        assert health.value.code == 503


def test_a_request_over_its_timeout_gets_504(served, demo_video):
    video = next(distinct_copies_of(demo_video))  # not cached: decoding alone takes longer
    with OpenAIFrontend(FrontendSettings(served[1], timeout_s=0.005), port=unused_port()) as frontend:
        slow = openai.OpenAI(base_url=frontend.url, api_key="none", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            slow.chat.completions.create(model="lita", messages=messages(data_url(video)))
        assert info.value.status_code == 504 and "timeout" in info.value.message


def test_size_limits_are_checked_before_decoding_and_files_only_inside_the_allowed_folder(
        served, demo_video, tmp_path, plain):
    limits = ServeLimits(max_video_bytes=len(demo_video) + 10)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "demo.mp4").write_bytes(demo_video)
    (tmp_path / "big.mp4").write_bytes(demo_video * 2)
    settings = FrontendSettings(served[1], limits=limits, allowed_media_path=tmp_path / "media")
    with OpenAIFrontend(settings, port=unused_port()) as frontend:
        small = openai.OpenAI(base_url=frontend.url, api_key="none", max_retries=0)
        # Over the limit and not even base64: refused by its size, so it was never decoded.
        oversized = "data:video/mp4;base64," + "*" * (4 * len(demo_video))
        with pytest.raises(openai.APIStatusError) as info:
            small.chat.completions.create(model="lita", messages=messages(oversized))
        assert info.value.status_code == 413 and f"limit of {limits.max_video_bytes} bytes" in info.value.message
        # A body far over the limit is refused by its length before it is read.
        with pytest.raises(openai.APIStatusError) as body:
            small.chat.completions.create(model="lita", messages=messages(data_url(demo_video * 400)))
        assert body.value.status_code == 413 and "request body" in body.value.message
        # file:// inside the allowed folder works; outside it (or through ..) it does not.
        answer = small.chat.completions.create(model="lita", messages=messages(f"file://{tmp_path}/media/demo.mp4"),
                                               max_tokens=32)
        assert answer.choices[0].message.content == plain.choices[0].message.content
        for url in (f"file://{tmp_path}/big.mp4", f"file://{tmp_path}/media/../big.mp4"):
            with pytest.raises(openai.BadRequestError):
                small.chat.completions.create(model="lita", messages=messages(url))


def test_remote_videos_are_fetched_only_when_allowed_and_within_the_limit(served, demo_video, tmp_path, plain):
    (tmp_path / "demo.mp4").write_bytes(demo_video)
    (tmp_path / "big.mp4").write_bytes(demo_video * 2)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as media:
        threading.Thread(target=media.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{media.server_address[1]}"
        settings = FrontendSettings(served[1], allow_remote_media=True,
                                    limits=ServeLimits(max_video_bytes=len(demo_video) + 10))
        with OpenAIFrontend(settings, port=unused_port()) as frontend:
            remote = openai.OpenAI(base_url=frontend.url, api_key="none", max_retries=0)
            answer = remote.chat.completions.create(model="lita", messages=messages(f"{base}/demo.mp4"), max_tokens=32)
            assert answer.choices[0].message.content == plain.choices[0].message.content
            with pytest.raises(openai.APIStatusError) as info:
                remote.chat.completions.create(model="lita", messages=messages(f"{base}/big.mp4"))
            assert info.value.status_code == 413
        media.shutdown()


def test_limits_come_from_the_repository_and_busy_means_429(served):
    assert limits_of(served[2]) == LitaConfig.load(served[2] / "lita.json").limits
    assert decoded_size(base64.b64encode(b"x" * 10).decode()) == 10
    busy = from_client_error(ServerUnavailableError("cannot reach the LITA server at h:1: server busy: 64 requests"))
    assert busy.status == 429
    assert from_client_error(ServerUnavailableError("cannot reach the LITA server at h:1: refused")).status == 503
