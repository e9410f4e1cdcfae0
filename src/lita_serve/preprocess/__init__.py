"""The preprocess step: user videos -> model inputs (decoding, LITA's frame sampling, the CLIP crop).

Entry point: :func:`lita_serve.preprocess.request.prepare_cached` (what ``model_repository/preprocess``
calls per request: the feature-cache lookup, then :func:`~lita_serve.preprocess.video.sample_video_for`).
No torch in this process.
"""
