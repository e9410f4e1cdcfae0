"""The requests the llm model sends to a tensorrt_llm model match that model's generated config."""

from __future__ import annotations

import re

import numpy as np
import pytest

from lita_serve.build.trtllm import EngineLimits, tensorrt_llm_model_config
from lita_serve.config import LitaConfig
from lita_serve.decode.sampling import SamplingParams
from lita_serve.decode.trtllm_bls import request_tensors

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
