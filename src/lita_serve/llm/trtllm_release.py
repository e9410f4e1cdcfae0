"""What differs between releases of NVIDIA's Triton + TensorRT-LLM container, in one table.

The build step (checkpoint config, ``trtllm-build`` command, the ``tensorrt_llm`` model's
``config.pbtxt``) and the ``llm`` step's BLS request read the names below from the release the
repository was built for (``build.json``), so a name that moved upstream changes in one place.

Facts, with where they were read:

* Container tag -> TensorRT-LLM version: Triton's release compatibility matrix
  (docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/introduction/compatibility.html,
  "Container Name: trtllm-python-py3"): 24.12 ships TensorRT-LLM 0.16.0 (Python 3.12.3,
  TensorRT 10.7.0); 25.12 ships TensorRT-LLM 1.1.0 (Python 3.12.3, TensorRT 10.13.3.9,
  CUDA 13.0.2). 25.12 is the newest release that matrix lists with a TensorRT-LLM version.
* The sampling-seed input: ``randomSeed = "random_seed"`` in
  triton-inference-server/tensorrtllm_backend ``inflight_batcher_llm/src/utils.h``
  (``InputFieldsNames``, the 0.1x backend); ``seed = "seed"`` in NVIDIA/TensorRT-LLM
  ``triton_backend/inflight_batcher_llm/src/utils.h`` and ``seed`` (TYPE_UINT64) in
  ``triton_backend/all_models/inflight_batcher_llm/tensorrt_llm/config.pbtxt`` (1.x).
* Orchestrator mode (one Triton process driving several GPU ranks): the ``executor_worker_path``
  parameter, ``/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker`` in the same
  ``config.pbtxt`` of both lines, enabled with the environment variable ``TRTLLM_ORCHESTRATOR=1``.
"""

from __future__ import annotations

from dataclasses import dataclass

from lita_serve.errors import InvalidInputError


@dataclass(frozen=True)
class TrtllmRelease:
    """One container release and the backend names it expects."""

    container_tag: str  # nvcr.io/nvidia/tritonserver:<tag>-trtllm-python-py3
    trtllm_version: str
    seed_input: str  # the tensorrt_llm model's sampling-seed input
    executor_worker_path: str = "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker"

    @property
    def image(self) -> str:
        return f"nvcr.io/nvidia/tritonserver:{self.container_tag}-trtllm-python-py3"


RELEASES: dict[str, TrtllmRelease] = {
    "24.12": TrtllmRelease("24.12", "0.16.0", seed_input="random_seed"),
    "25.12": TrtllmRelease("25.12", "1.1.0", seed_input="seed"),
}
DEFAULT_RELEASE = "25.12"


def trtllm_release(tag: str | None = None) -> TrtllmRelease:
    """The release ``tag`` (default :data:`DEFAULT_RELEASE`); InvalidInputError naming the known ones."""
    key = tag or DEFAULT_RELEASE
    if key not in RELEASES:
        raise InvalidInputError(f"unknown TensorRT-LLM container release {key!r}; known: {sorted(RELEASES)}")
    return RELEASES[key]
