"""The postprocess step: generated token ids -> text with times in seconds, and segments.

Entry point: :class:`lita_serve.postprocess.render.Renderer`. No torch in this process.
"""
