"""Load testing the ``lita`` ensemble with Triton's real ``perf_analyzer``.

:func:`run_load_test` measures two regimes, cold (a video the server has never seen in every
request) and warm (cached features), one concurrency level at a time over streaming gRPC against
a server it starts (or a given URL), with the cache hit ratio of every level; it saves a CSV, a
PNG plot and ``summary.json``.
"""

from lita_serve.loadtest.inputs import encode_bytes_b64, make_videos, write_input_data
from lita_serve.loadtest.perf import PerfAnalyzerError, find_perf_analyzer, perf_env, read_csv
from lita_serve.loadtest.run import run_load_test

__all__ = [
    "PerfAnalyzerError",
    "encode_bytes_b64",
    "find_perf_analyzer",
    "make_videos",
    "perf_env",
    "read_csv",
    "run_load_test",
    "write_input_data",
]
