"""The requests the llm model sends to a tensorrt_llm model match that model's generated config."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lita_build.trtllm import EngineLimits, tensorrt_llm_model_config
from lita_serve.config import LitaConfig
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.trtllm_bls import request_tensors

TRITON_NP = {"INT32": np.int32, "FP32": np.float32, "FP16": np.float16, "BOOL": np.bool_, "UINT64": np.uint64}


def declared_inputs(pbtxt: str) -> dict[str, str]:
    block = pbtxt.split("input [", 1)[1].split("output [", 1)[0]
    return dict(re.findall(r'name: "(\w+)"\s+data_type: TYPE_(\w+)', block))


@pytest.mark.parametrize("greedy", [True, False])
def test_request_tensors_are_declared_with_matching_dtypes(greedy):
    cfg = LitaConfig.from_name("tiny")
    pbtxt = tensorrt_llm_model_config("/engines/llm", EngineLimits.for_config(cfg, 4), "float16")
    declared = declared_inputs(pbtxt)
    table = np.random.default_rng(0).standard_normal((356, cfg.text.hidden_size)).astype(np.float32)
    params = SamplingParams(max_tokens=7, greedy=greedy, temperature=0.7, top_k=5, top_p=0.9, seed=3)
    tensors = request_tensors([1, 2, 3, 512, 513], table, params, eos_id=2, pad_id=0, table_dtype="FP16")
    for name, value in tensors.items():
        assert name in declared, f"{name} is not an input of the tensorrt_llm model"
        assert value.dtype == TRITON_NP[declared[name]], name
        assert value.shape[0] == 1, f"{name} must carry the batch dimension"
    assert tensors["prompt_embedding_table"].shape == (1, 356, cfg.text.hidden_size)
    assert int(tensors["prompt_vocab_size"][0, 0]) == 356
    assert int(tensors["request_output_len"][0, 0]) == 7
    assert ("temperature" in tensors) is (not greedy)


def test_service_runs_on_a_backend_other_than_torch():
    """The decoder service drives any DecodeBackend (the TensorRT-LLM one uses this seam)."""
    from helpers_text import converted_model  # noqa: F401 - real tokenizer below

    import tempfile
    from pathlib import Path

    from lita_serve.llm.service import DecoderService
    from lita_serve.tokenizer import LitaTokenizer

    class Scripted:
        vocab_size = 512

        def __init__(self):
            self.seen = []

        def table(self, prompt_table):
            return np.asarray(prompt_table, dtype=np.float32)

        def generate(self, requests, eos_id):
            out = []
            for r in requests:
                self.seen.append((r.input_ids, r.prompt_table.shape))
                for t in (5, 6, 7)[: r.params.max_tokens]:
                    r.on_token(t)
                out.append([5, 6, 7][: r.params.max_tokens])
            return out

    with tempfile.TemporaryDirectory() as tmp:
        tok = LitaTokenizer.from_file(converted_model(Path(tmp)))
    cfg = LitaConfig.from_name("tiny")
    backend = Scripted()
    service = DecoderService(backend, tok, cfg)
    events = []
    n_vis = 356
    job = service.prepare("When?", np.zeros((n_vis, cfg.text.hidden_size), np.float32), 10.0,
                          SamplingParams(max_tokens=2), stream=True, emit=events.append)
    service.run([job])
    assert [e.ids for e in events] == [[5], [5, 6], [5, 6]]
    assert events[-1].final and not events[0].final
    ids, shape = backend.seen[0]
    assert sum(1 for i in ids if i >= 512) == n_vis and shape == (n_vis, cfg.text.hidden_size)
