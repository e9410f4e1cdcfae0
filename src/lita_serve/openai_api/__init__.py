"""An OpenAI-compatible chat-completions endpoint in front of the ``lita`` ensemble.

Teams that already call vLLM, SGLang, ``trtllm-serve`` or NIM through the OpenAI API point the
same client at ``lita serve --openai-port PORT``: a video goes in as a ``video_url`` content part
(a ``data:video/...;base64,`` URL, as vLLM takes it), the answer comes back with its times in
seconds, and LITA's raw ``<tK>`` text, segments and duration ride in an extra ``lita`` field of
the choice. Every request is forwarded to Triton over gRPC with :class:`lita_client.AsyncLitaClient`.

Only ``lita serve --openai-port`` imports this package (it needs the ``serve`` extra's FastAPI
and uvicorn); the Triton model processes never do.
"""

from lita_serve.openai_api.http_app import create_app
from lita_serve.openai_api.frontend_settings import FrontendSettings
from lita_serve.openai_api.uvicorn_thread import OpenAIFrontend

__all__ = ["FrontendSettings", "OpenAIFrontend", "create_app"]
