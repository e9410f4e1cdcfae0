"""Faults: a model that raises mid-batch, a killed python-backend stub, a server that is down then up.

One dedicated server (not the shared fixture: this file kills and restarts it) serves a copy of the
tiny repository whose ``llm`` adapter is wrapped by a faulty one: it raises for any request whose
question contains ``FAULT_MARKER``, and behaves like the real adapter otherwise.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from repo_factory import build_tiny_repository
from triton_calls import request_inputs, run

from lita_client import LitaClient
from lita_client.errors import ServerUnavailableError
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.service import DecodeEvent, DecoderService
from lita_serve.serving.inprocess import LitaPipeline
from lita_serve.serving.launcher import SHM_DIR, Ports, Supervisor, TritonServer
from lita_serve.errors import ServerBusyError
from lita_serve.adapters.resources import adapter_path

pytestmark = pytest.mark.server
QUESTION = "When does the red square appear?"
FAULT_MARKER = "#fault#"

FAULTY_LLM = f'''"""The real llm adapter, made to raise for requests whose question contains {FAULT_MARKER!r}."""
import importlib.util

import triton_python_backend_utils as pb_utils

_spec = importlib.util.spec_from_file_location("real_llm", {str(adapter_path("llm"))!r})
_real = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_real)


class TritonPythonModel(_real.TritonPythonModel):
    def execute(self, requests):
        for request in requests:
            question = pb_utils.get_input_tensor_by_name(request, "QUESTION").as_numpy().reshape(-1)[0]
            if {FAULT_MARKER.encode()!r} in bytes(question):
                raise RuntimeError("injected fault in the llm step")
        return super().execute(requests)
'''


@pytest.fixture(scope="module")
def faulty_repo(tmp_path_factory) -> Path:
    repo = build_tiny_repository(tmp_path_factory.mktemp("faulty"), seed=0)
    (repo / "llm" / "1" / "model.py").write_text(FAULTY_LLM)
    return repo


@pytest.fixture(scope="module")
def server(faulty_repo):
    srv = TritonServer(faulty_repo, ports=Ports.free())
    srv.start(timeout=240)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def pipeline(faulty_repo):
    return LitaPipeline(faulty_repo, device="cpu")


@pytest.fixture(scope="module")
def video(sample_videos) -> bytes:
    return sample_videos["red_3s"].read_bytes()


# --- (a) a model that raises ------------------------------------------------------------------------

def test_raising_model_fails_only_its_requests(server, pipeline, video):
    expected = pipeline.ask(video, QUESTION, SamplingParams(max_tokens=6)).raw_text
    jobs = [QUESTION if i % 3 else f"{QUESTION} {FAULT_MARKER}" for i in range(9)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda q: run(server.grpc_url, request_inputs(video, q, max_tokens=6)), jobs))
    for question, got in zip(jobs, results):
        if FAULT_MARKER in question:
            assert got.error is not None and "injected fault" in str(got.error), got.error
        else:
            assert got.error is None, got.error
            assert got.raw_text == expected
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert all(client.is_model_ready(m) for m in ("llm", "lita"))


def test_decoder_service_batch_failure_fails_that_batch_only(pipeline):
    """A batch whose generation raises (a prompt table of the wrong width) fails its jobs; the worker lives on."""
    service = DecoderService(pipeline.decoder.backend, pipeline.tokenizer, pipeline.cfg, max_batch=4).start()
    try:
        table = np.zeros((service.expected_visual_tokens, pipeline.cfg.text.hidden_size), np.float32)
        done: dict[str, DecodeEvent] = {}
        finished = threading.Event()

        def job(name: str):
            def emit(event: DecodeEvent) -> None:
                if event.final:
                    done[name] = event
                    if len(done) == 2:
                        finished.set()
            return service.prepare(QUESTION, table, 3.0, SamplingParams(max_tokens=4), stream=False, emit=emit)

        broken = job("broken")
        broken.prompt_table = torch.zeros(3, 5)  # corrupt after validation: generation itself fails
        service.run([broken])
        assert done["broken"].error is not None
        service.submit(job("good"))
        assert finished.wait(60)
        assert done["good"].error is None and len(done["good"].ids) > 0
        assert service.in_flight == 0
    finally:
        service.stop()


def test_decoder_service_rejects_beyond_the_concurrency_limit(pipeline):
    """``limits.max_concurrent_requests`` admitted jobs at most; the next one is refused at once."""
    from dataclasses import replace

    cfg = replace(pipeline.cfg, limits=replace(pipeline.cfg.limits, max_concurrent_requests=2))
    service = DecoderService(pipeline.decoder.backend, pipeline.tokenizer, cfg, max_batch=4)  # not started: jobs wait
    table = np.zeros((service.expected_visual_tokens, cfg.text.hidden_size), np.float32)
    events: list[DecodeEvent] = []
    jobs = [service.prepare(QUESTION, table, 3.0, SamplingParams(max_tokens=2), stream=False, emit=events.append)
            for _ in range(3)]
    service.submit(jobs[0])
    service.submit(jobs[1])
    with pytest.raises(ServerBusyError, match="max_concurrent_requests"):
        service.submit(jobs[2])
    service.start()
    try:
        deadline = time.monotonic() + 60
        while service.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
        assert service.in_flight == 0 and len(events) == 2
        service.submit(jobs[2])  # a slot is free again
    finally:
        service.stop()


# --- (b) a killed python-backend stub ---------------------------------------------------------------

def test_killed_stub_is_detected_and_the_supervisor_restarts_the_server(server, pipeline, video):
    expected = pipeline.ask(video, QUESTION, SamplingParams(max_tokens=4)).raw_text
    stubs = {s.instance: s for s in server.stubs}
    assert {"preprocess_0_0", "vision_encoder_0_0", "llm_0_0", "postprocess_0_0"} <= set(stubs)
    victim = stubs["postprocess_0_0"]
    os.kill(victim.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while victim.alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    # Triton 2.51 keeps reporting the model ready but fails every request to it...
    failed = run(server.grpc_url, request_inputs(video, QUESTION, max_tokens=4))
    assert failed.error is not None and "not healthy" in str(failed.error), failed.error
    assert [s.instance for s in server.dead_stubs()] == ["postprocess_0_0"]
    assert not server.healthy()
    # ...so the supervisor restarts it, on the same ports, and the service answers again.
    regions_before = {p.name for p in SHM_DIR.glob(f"{server.shm_prefix}*")}
    assert len(regions_before) >= len(stubs)  # one shared-memory region per stub, the killed one's too
    supervisor = Supervisor(server, interval=0.5, start_timeout=240)
    started = time.monotonic()
    assert supervisor.check() is True and supervisor.restarts == 1
    # The stopped server's regions, the killed stub's included, are gone; the new stubs have theirs.
    regions_after = {p.name for p in SHM_DIR.glob(f"{server.shm_prefix}*")}
    assert regions_before.isdisjoint(regions_after) and len(regions_after) == len(server.stubs)
    got = run(server.grpc_url, request_inputs(video, QUESTION, max_tokens=4))
    assert got.error is None, got.error
    assert got.raw_text == expected
    assert server.healthy() and time.monotonic() - started < 240
    assert supervisor.check() is False


# --- (c) client retries on UNAVAILABLE ----------------------------------------------------------------

def test_client_retries_until_the_server_is_back(server, pipeline, video):
    expected = pipeline.ask(video, QUESTION, SamplingParams(max_tokens=4)).raw_text
    server.stop()
    result: dict[str, object] = {}

    def ask() -> None:
        client = LitaClient(server.grpc_url, retries=30, backoff_s=0.5, timeout=60)
        try:
            result["answer"] = client.ask(video, QUESTION, max_tokens=4)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            result["error"] = exc
        finally:
            client.close()

    thread = threading.Thread(target=ask)
    thread.start()
    time.sleep(1.0)  # the client is already failing and backing off
    assert thread.is_alive()
    server.start(timeout=240)
    thread.join(180)
    assert "error" not in result, result.get("error")
    assert result["answer"].raw_text == expected


def test_client_gives_up_with_a_clear_message():
    closed = Ports.free().grpc  # nothing listens there
    with LitaClient(f"127.0.0.1:{closed}", retries=2, backoff_s=0.05, timeout=5) as client:
        with pytest.raises(ServerUnavailableError) as info:
            client.ask(b"not used", QUESTION)
    message = str(info.value)
    assert f"127.0.0.1:{closed}" in message and "gave up after 3 attempts" in message
