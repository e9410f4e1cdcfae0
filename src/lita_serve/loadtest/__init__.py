"""Load testing the ``lita`` ensemble with Triton's real ``perf_analyzer``.

:func:`run_load_test` writes perf_analyzer's ``--input-data`` JSON from real videos, runs it over
streaming gRPC against a server it starts (or a given URL), and saves the CSV and a PNG plot.
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
