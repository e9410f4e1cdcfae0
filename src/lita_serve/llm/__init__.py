"""LLaMA decoding: the decoder with its KV cache, sampling and the generation loops."""
