"""Several servers behind one client: round-robin over ready replicas, failover, rejoin.

The replica-set rules are checked on their own (a fake clock and a fake resolver); the rest runs
against real tritonservers of the tiny repository on loopback: the session's shared server is
replica A, and this module starts replica B, which it kills and restarts. Requests are counted
on each replica from Triton's own ``nv_inference_request_success{model="lita"}`` counter.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from lita_client import AsyncLitaClient, LitaClient
from lita_client.batch import Prompt, run_batch_async
from lita_client.answer import Chunk
from lita_client.errors import InvalidRequestError, ModelNotReadyError, ServerUnavailableError
from lita_client.replicas import MAX_RECHECK_S, RECHECK_S, ReplicaSet, resolve_target, split_targets
from lita_serve.serving.launcher import Ports
from lita_serve.loadtest.run import answered_requests
from conftest import serving

QUESTION = "When does the colour change?"
MAX_TOKENS = 4


# --- the replica set on its own -------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_targets_are_split_and_checked():
    assert split_targets("a:8001, b:9001,dns:///lita-grpc.ns.svc:8001") == [
        "a:8001", "b:9001", "dns:///lita-grpc.ns.svc:8001"]
    for bad in ("a:8001,", "a", "a:x", ":8001", "dns:///name"):
        with pytest.raises(InvalidRequestError, match="invalid server address"):
            split_targets(bad)


def test_dns_target_resolves_to_every_address():
    # localhost is in /etc/hosts: no name server needed.
    assert "127.0.0.1:8001" in resolve_target("dns:///localhost:8001")
    assert resolve_target("10.0.0.1:8001") == ["10.0.0.1:8001"]
    assert resolve_target("dns:///no-such-host.invalid:8001") == []


def test_round_robin_skips_down_replicas_until_their_check_is_due():
    clock = FakeClock()
    rs = ReplicaSet("a:1,b:1,c:1", clock=clock)
    assert not rs.single and ReplicaSet("a:1").single
    assert [rs.pick().address for _ in range(4)] == ["a:1", "b:1", "c:1", "a:1"]
    b = rs.replicas[1]
    assert rs.mark_down(b) is True
    assert [rs.pick().address for _ in range(4)] == ["c:1", "a:1", "c:1", "a:1"]
    assert rs.pick(exclude={"a:1", "c:1"}) is None
    assert rs.due() == []
    clock.now += RECHECK_S
    assert rs.due() == [b]
    # A failed check backs off (doubling, capped); a good one puts it back in rotation.
    for _ in range(10):
        assert rs.mark_down(b) is False
    assert b.next_check - clock.now == MAX_RECHECK_S
    rs.mark_up(b)
    assert {rs.pick().address for _ in range(3)} == {"a:1", "b:1", "c:1"}


def test_all_down_falls_back_to_the_replica_checked_soonest():
    clock = FakeClock()
    rs = ReplicaSet("a:1,b:1", clock=clock)
    rs.mark_down(rs.replicas[0])
    clock.now += 0.5
    rs.mark_down(rs.replicas[1])
    assert rs.pick() is None
    assert rs.fallback().address == "a:1"


def test_dns_answers_add_and_drop_replicas_keeping_state():
    clock = FakeClock()
    answers = {"dns:///svc:8001": ["10.0.0.1:8001", "10.0.0.2:8001"]}
    rs = ReplicaSet("dns:///svc:8001", clock=clock, resolver=lambda t: list(answers[t]))
    first = rs.replicas[0]
    rs.mark_down(first)
    answers["dns:///svc:8001"] = ["10.0.0.1:8001", "10.0.0.3:8001"]
    assert rs.refresh() == []  # not due yet
    clock.now += rs.resolve_every_s
    dropped = rs.refresh()
    assert [r.address for r in dropped] == ["10.0.0.2:8001"]
    assert [r.address for r in rs.replicas] == ["10.0.0.1:8001", "10.0.0.3:8001"]
    assert rs.replicas[0] is first and not first.up  # known replicas keep their state
    answers["dns:///svc:8001"] = []  # a DNS hiccup does not empty the set
    clock.now += rs.resolve_every_s
    assert rs.refresh() == [] and len(rs) == 2


def test_a_name_that_resolves_to_nothing_is_a_clear_error():
    with pytest.raises(InvalidRequestError, match="resolved to nothing"):
        ReplicaSet("dns:///no-such-host.invalid:8001")


# --- the client's placement decisions (scripted replicas, no server) --------------------------

class ScriptedClient(LitaClient):
    """A LitaClient whose attempts follow a script per address instead of going over gRPC:
    ``"ok"`` answers, ``"down"`` fails with UNAVAILABLE at once, ``"drop"`` sends one piece and
    then fails with UNAVAILABLE, ``"loading"`` answers that the model is not ready."""

    def __init__(self, url: str, script: dict[str, str], **kwargs) -> None:
        super().__init__(url, **kwargs)
        self.script = script
        self.placed: list[str] = []
        self.slept: list[float] = []

    def _attempt(self, replica, arrays):
        self.placed.append(replica.address)
        replica.requests += 1
        behaviour = self.script[replica.address]
        if behaviour == "down":
            raise ServerUnavailableError(f"cannot reach the LITA server at {replica.address}: connection refused")
        if behaviour == "loading":
            raise ModelNotReadyError(f"model not available on {replica.address}: model 'lita' is not ready")
        yield Chunk("a", "a", [], 1.0, 3, 1, behaviour == "ok", {})
        if behaviour == "drop":
            raise ServerUnavailableError(f"cannot reach the LITA server at {replica.address}: socket closed")

    def _check(self, replica, timeout=None):  # readiness as the script says
        if self.script[replica.address] == "ok":
            self.replicas.mark_up(replica)
        else:
            self.replicas.mark_down(replica)


@pytest.fixture
def no_sleep(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("lita_client.sdk.time.sleep", slept.append)
    return slept


def test_failover_is_immediate_and_a_failed_server_is_skipped(no_sleep):
    client = ScriptedClient("a:1,b:1,c:1", {"a:1": "ok", "b:1": "down", "c:1": "ok"}, retries=0)
    answers = [client.ask(b"video", QUESTION).raw_text for _ in range(4)]
    assert answers == ["a"] * 4 and no_sleep == []  # no retry budget, no wait: another server took it
    assert client.placed == ["a:1", "b:1", "c:1", "a:1", "c:1"]


def test_a_request_that_already_streamed_is_never_sent_again(no_sleep):
    client = ScriptedClient("a:1,b:1", {"a:1": "drop", "b:1": "ok"}, retries=5)
    with pytest.raises(ServerUnavailableError, match="socket closed"):
        "".join(client.stream(b"video", QUESTION))
    assert client.placed == ["a:1"]
    assert not client.replicas.replicas[0].up  # and the server that dropped it leaves the rotation
    assert client.ask(b"video", QUESTION).raw_text == "a" and client.placed[-1] == "b:1"


def test_model_not_ready_moves_to_another_server_but_is_reported_for_a_single_one(no_sleep):
    client = ScriptedClient("a:1,b:1", {"a:1": "loading", "b:1": "ok"}, retries=0)
    assert client.ask(b"video", QUESTION).raw_text == "a" and client.placed == ["a:1", "b:1"]
    single = ScriptedClient("a:1", {"a:1": "loading"}, retries=5)
    with pytest.raises(ModelNotReadyError):
        single.ask(b"video", QUESTION)
    assert single.placed == ["a:1"] and no_sleep == []


def test_all_servers_down_backs_off_then_gives_up(no_sleep):
    client = ScriptedClient("a:1,b:1", {"a:1": "down", "b:1": "down"}, retries=2, backoff_s=0.5)
    with pytest.raises(ServerUnavailableError, match="gave up after 6 attempts"):
        client.ask(b"video", QUESTION)
    # Each round tries every server, then waits (exponential backoff) before the next round.
    assert no_sleep == [0.5, 1.0] and len(client.placed) == 6


# --- real servers --------------------------------------------------------------------------------

def lita_successes(server) -> int:
    """Requests the ``lita`` ensemble answered on ``server`` since it started (Triton's own counter)."""
    return answered_requests(f"http://{server.host}:{server.ports.metrics}/metrics")


@pytest.fixture(scope="module")
def replica_b(tiny_repo):
    """A second server of the tiny repository; the tests here kill and restart it."""
    with serving(tiny_repo) as server:
        yield server


@pytest.fixture(scope="module")
def expected(triton_server, sample_videos) -> str:
    """The greedy answer every replica gives (same repository, same weights)."""
    with LitaClient(triton_server.grpc_url) as client:
        return client.ask(sample_videos["red_3s"], QUESTION, max_tokens=MAX_TOKENS).raw_text


def write_prompts(path: Path, video: Path, n: int) -> Path:
    path.write_text("".join(json.dumps({"video": video.name, "text": QUESTION, "question_id": i}) + "\n"
                            for i in range(n)))
    return path


@pytest.mark.server
def test_cli_batch_spreads_over_both_replicas(triton_server, replica_b, sample_videos, expected, tmp_path):
    video = sample_videos["red_3s"]
    prompts = write_prompts(tmp_path / "prompts.jsonl", video, 12)
    out = tmp_path / "answers.jsonl"
    before = {s.grpc_url: lita_successes(s) for s in (triton_server, replica_b)}
    proc = subprocess.run(
        [sys.executable, "-m", "lita_client.cli", "batch", str(prompts), "--media-base-path", str(video.parent),
         "--output", str(out), "--concurrency", "4", "--max-tokens", str(MAX_TOKENS), "--no-progress",
         "--url", f"{triton_server.grpc_url},{replica_b.grpc_url}"],
        capture_output=True, text=True, timeout=180, env={**os.environ, "LITA_URL": ""})
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == list(range(12))
    assert all(a["raw_answer"] == expected for a in answers), answers
    served = {s.grpc_url: lita_successes(s) - before[s.grpc_url] for s in (triton_server, replica_b)}
    # Round-robin with nothing failing: an even split, and every request counted once.
    assert served == {triton_server.grpc_url: 6, replica_b.grpc_url: 6}, served
    assert "requests per server" in proc.stderr, proc.stderr


@pytest.mark.server
def test_a_replica_where_nothing_listens_is_skipped(triton_server, sample_videos, expected):
    closed = f"127.0.0.1:{Ports.free().grpc}"
    before = lita_successes(triton_server)
    with LitaClient(f"{closed},{triton_server.grpc_url}", retries=0) as client:
        answers = [client.ask(sample_videos["red_3s"], QUESTION, max_tokens=MAX_TOKENS) for _ in range(3)]
        stream = client.stream(sample_videos["red_3s"], QUESTION, max_tokens=MAX_TOKENS)
        pieces = list(stream)
        answers.append(stream.answer)
        state = {r["address"]: r for r in client.replicas.state()}
        health = client.health()
    assert all(a.raw_text == expected for a in answers) and len(pieces) > 1
    assert lita_successes(triton_server) - before == 4
    # One attempt found the closed address down (no retry budget needed: failover is immediate);
    # it was not asked again while its re-check was not due.
    assert state[closed]["up"] is False and state[closed]["requests"] == 1
    assert health.ok and [r.ok for r in health.replicas] == [False, True]
    with LitaClient(f"{closed},127.0.0.1:{Ports.free().grpc}", retries=1, backoff_s=0.05, timeout=5) as client:
        with pytest.raises(ServerUnavailableError, match="gave up after"):
            client.ask(b"not used", QUESTION)


@pytest.mark.server
def test_dns_name_and_cli_health_over_several_servers(triton_server, sample_videos, expected):
    port = triton_server.ports.grpc

    async def ask() -> tuple:
        async with AsyncLitaClient(f"dns:///localhost:{port}", wait_ready=30) as client:
            answer = await client.ask(sample_videos["red_3s"], QUESTION, max_tokens=MAX_TOKENS)
            return answer, [r.address for r in client.replicas.replicas]

    answer, addresses = asyncio.run(ask())
    assert answer.raw_text == expected and f"127.0.0.1:{port}" in addresses

    def health(url: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "lita_client.cli", "health", "--json", "--url", url,
                               "-t", "5"], capture_output=True, text=True, timeout=60, env={**os.environ, "LITA_URL": ""})

    closed = [f"127.0.0.1:{Ports.free().grpc}" for _ in range(2)]
    proc = health(f"{triton_server.grpc_url},{closed[0]}")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["ok"], proc.stderr
    assert [(r["url"], r["ok"]) for r in report["replicas"]] == [(triton_server.grpc_url, True), (closed[0], False)]
    proc = health(",".join(closed))
    assert proc.returncode == 1 and not json.loads(proc.stdout)["ok"]
    assert closed[0] in proc.stderr and closed[1] in proc.stderr


@pytest.mark.server
def test_killing_a_replica_mid_run_loses_nothing_and_the_restarted_one_rejoins(
        triton_server, replica_b, sample_videos, expected, tmp_path):
    video = sample_videos["red_3s"]
    prompts = [Prompt(i + 1, i, video.name, QUESTION) for i in range(32)]
    urls = f"{triton_server.grpc_url},{replica_b.grpc_url}"
    out = tmp_path / "answers.jsonl"
    killed_at: list[int] = []

    async def scenario() -> tuple:
        # One long-lived client throughout, as a service holding it would.
        async with AsyncLitaClient(urls, retries=3, backoff_s=0.2, timeout=120, wait_ready=30) as client:
            async def killer() -> None:
                while sum(r.requests for r in client.replicas.replicas) < 12:
                    await asyncio.sleep(0.05)
                killed_at.append(sum(r.requests for r in client.replicas.replicas))
                os.killpg(replica_b.process.pid, signal.SIGKILL)  # the server and its python stubs

            kill = asyncio.create_task(killer())
            summary = await run_batch_async(client, prompts, video.parent, out, concurrency=8,
                                            sampling={"max_tokens": MAX_TOKENS}, progress=False)
            await kill
            state = {r["address"]: r for r in client.replicas.state()}
            # Restarted on the same ports, the replica is found ready again and takes requests.
            replica_b.stop()
            await asyncio.to_thread(replica_b.start, 240)
            restarted_count = lita_successes(replica_b)
            # A down replica is re-checked when a request is placed, at most MAX_RECHECK_S after the
            # last check: by then the next request finds it ready again.
            await asyncio.sleep(MAX_RECHECK_S + 1)
            again = [await client.ask(video, QUESTION, max_tokens=MAX_TOKENS) for _ in range(6)]
            return summary, state, restarted_count, again

    summary, state, restarted_count, again = asyncio.run(scenario())
    assert killed_at and replica_b.process is not None
    assert summary.failures == [] and summary.succeeded == 32
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == list(range(32))
    assert all(a["raw_answer"] == expected for a in answers)
    assert state[replica_b.grpc_url]["up"] is False  # taken out of rotation when it died
    # Requests in flight on the killed replica were placed again on the other one.
    assert sum(r["requests"] for r in state.values()) > 32, state
    assert restarted_count == 0  # a fresh process: its counter starts at zero
    assert all(a.raw_text == expected for a in again)
    assert lita_successes(replica_b) >= 2  # back in the round-robin: about every other request
