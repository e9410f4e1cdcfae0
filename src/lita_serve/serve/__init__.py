"""Serving on Triton Inference Server: model-repository layout, configs, engine export, launcher."""
