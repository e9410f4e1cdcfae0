"""lita-serve: production serving for LITA, the video LLM that says *when* things happen."""

__version__ = "0.1.0"
