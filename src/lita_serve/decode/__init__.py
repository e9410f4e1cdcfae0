"""LLaMA decoding: the decoder with its KV cache, sampling and the generation loops."""

from lita_serve.decode.generate import GenerationRequest, generate, generate_batch
from lita_serve.decode.llama import KVCache, LlamaDecoder
from lita_serve.decode.sampling import SamplingParams, make_generator, sample_next

__all__ = ["GenerationRequest", "KVCache", "LlamaDecoder", "SamplingParams", "generate", "generate_batch",
           "make_generator", "sample_next"]
