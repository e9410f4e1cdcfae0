"""The llm step: the LLaMA decoder with its KV cache, sampling and the generation loops.

Entry point: :class:`lita_serve.llm.service.DecoderService` (prompts in, streamed token ids out),
over the PyTorch decoder or, for TensorRT-LLM repositories, :class:`lita_serve.llm.trtllm_bls.TensorRTLLMBackend`.
"""
