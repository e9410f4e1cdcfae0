"""The requests the llm model sends to a tensorrt_llm model match that model's generated config."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from lita_build.trtllm import EngineLimits, tensorrt_llm_model_config
from lita_serve.config import LitaConfig
from lita_serve.llm.sampling_params import SamplingParams
from lita_serve.llm.trtllm_bls import request_tensors, triton_type
from lita_serve.llm.trtllm_release import RELEASES, trtllm_release



def declared_inputs(pbtxt: str) -> dict[str, str]:
    block = pbtxt.split("input [", 1)[1].split("output [", 1)[0]
    return dict(re.findall(r'name: "(\w+)"\s+data_type: TYPE_(\w+)', block))


@pytest.mark.parametrize("release", sorted(RELEASES))
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("greedy", [True, False])
def test_request_tensors_are_declared_with_matching_dtypes(greedy, dtype, release):
    """Every tensor the llm model sends is an input of the generated tensorrt_llm config, in its
    declared type: the prompt table in the engine's dtype (BF16 has no numpy type), the seed under
    the release's name."""
    cfg = LitaConfig.from_name("tiny")
    pbtxt = tensorrt_llm_model_config("/engines/llm", EngineLimits.for_config(cfg, 4), dtype,
                                      release=trtllm_release(release))
    declared = declared_inputs(pbtxt)
    table = np.random.default_rng(0).standard_normal((356, cfg.text.hidden_size)).astype(np.float32)
    params = SamplingParams(max_tokens=7, greedy=greedy, temperature=0.7, top_k=5, top_p=0.9, seed=3)
    tensors = request_tensors([1, 2, 3, 512, 513], table, params, eos_id=2, pad_id=0, dtype=dtype,
                              release=trtllm_release(release))
    for name, value in tensors.items():
        assert name in declared, f"{name} is not an input of the tensorrt_llm model"
        assert triton_type(value) == declared[name], name
        assert value.shape[0] == 1, f"{name} must carry the batch dimension"
    assert declared["prompt_embedding_table"] == {"float16": "FP16", "bfloat16": "BF16"}[dtype]
    assert tensors["prompt_embedding_table"].shape == (1, 356, cfg.text.hidden_size)
    assert torch.allclose(tensors["prompt_embedding_table"][0].float(), torch.from_numpy(table), rtol=1e-2, atol=1e-2)
    assert int(tensors["prompt_vocab_size"][0, 0]) == 356
    assert int(tensors["request_output_len"][0, 0]) == 7
    assert ("temperature" in tensors) is (not greedy)
    assert int(tensors[trtllm_release(release).seed_input][0, 0]) == 3


def test_seed_input_name_follows_the_release():
    """random_seed in the 0.16 backend (tensorrtllm_backend inflight_batcher_llm/src/utils.h,
    InputFieldsNames::randomSeed), seed from TensorRT-LLM 1.x (TensorRT-LLM
    triton_backend/inflight_batcher_llm/src/utils.h, InputFieldsNames::seed; the 1.x
    all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt declares `seed` TYPE_UINT64)."""
    assert trtllm_release("24.12").seed_input == "random_seed"
    assert trtllm_release("25.12").seed_input == "seed" and trtllm_release().container_tag == "25.12"
    cfg = LitaConfig.from_name("tiny")
    current = declared_inputs(tensorrt_llm_model_config("/e", EngineLimits.for_config(cfg, 2), "float16"))
    assert "seed" in current and "random_seed" not in current


def test_bf16_table_crosses_as_dlpack():
    """A BF16 table reaches pb_utils through DLPack (numpy cannot hold it); numpy inputs stay numpy."""
    from lita_serve.llm.trtllm_bls import _pb_tensor

    made = []

    class FakeTensor:
        def __init__(self, name, value):
            made.append((name, "numpy", value.dtype))

        @staticmethod
        def from_dlpack(name, capsule):
            made.append((name, "dlpack", torch.utils.dlpack.from_dlpack(capsule).dtype))

    class FakePb:
        Tensor = FakeTensor

    cfg = LitaConfig.from_name("tiny")
    tensors = request_tensors([1, 2], np.zeros((4, cfg.text.hidden_size), np.float32), SamplingParams(max_tokens=2),
                              eos_id=2, pad_id=0, dtype="bfloat16")
    for name, value in tensors.items():
        _pb_tensor(FakePb, name, value)
    assert ("prompt_embedding_table", "dlpack", torch.bfloat16) in made
    assert all(kind == "numpy" for name, kind, _ in made if name != "prompt_embedding_table")


def test_service_runs_on_a_backend_other_than_torch():
    """The decoder service drives any DecodeBackend (the TensorRT-LLM one uses this seam)."""
    from helpers_text import converted_model  # noqa: F401 - real tokenizer below

    import tempfile
    from pathlib import Path

    from lita_serve.llm.service import DecoderService
    from lita_serve.text.tokenizer import LitaTokenizer

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
