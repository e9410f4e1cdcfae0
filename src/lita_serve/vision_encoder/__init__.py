"""The vision_encoder step: CLIP vision tower, projector and LITA's visual-token layouts.

Entry point: :class:`lita_serve.vision_encoder.cached.CachedEncoder` over the runtime that
:func:`lita_serve.vision_encoder.runtimes.load_encoder_runtime` picks (PyTorch, ONNX Runtime, TensorRT).
"""
