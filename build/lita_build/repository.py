"""Generate (and check) the Triton model repository from a :class:`LitaConfig`.

Every number in a ``config.pbtxt`` that code also uses (frame count, image size, hidden size,
limits) is derived here from the config, so the repository cannot drift from the model. The
``model.py`` adapters are copied from the ones that ship with lita-serve
(:func:`lita_serve.adapters.resources.adapter_path`), each with ``serving_env.py`` beside it, which it
imports first (:func:`lita_serve.adapters.resources.serving_env_path`).

Tensor names: the ensemble's client-facing tensors are lowercase (``text_input``,
``max_tokens``, ``stream``, ``text_output``: what genai-perf-style tools send); tensors between
steps are UPPER_CASE.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from lita_client.contract import ENSEMBLE, SAMPLING_INPUTS, TensorSpec, ensemble_tensors
from lita_serve.config import LitaConfig
from lita_serve.adapters.layout import STEPS, RepositoryLayout
from lita_serve.adapters.resources import SERVING_ENV, adapter_path, serving_env_path
from lita_serve.vision_encoder.visual_tokens import num_visual_tokens


@dataclass(frozen=True)
class Deployment:
    """Per-deployment choices that are not properties of the model."""

    max_batch_size: int = 8
    preprocess_instances: int = 2
    # None: on CPU one encoder per preprocess instance, so that under load every core can encode
    # (one encoder on one thread would hold a 2-core server to one core); one per GPU on GPUs.
    encoder_instances: int | None = None
    postprocess_instances: int = 1
    encoder_max_queue_delay_us: int = 2000
    kind: str = "KIND_CPU"  # KIND_GPU for the encoder when serving on GPUs
    llm_kind: str = "KIND_CPU"  # KIND_GPU for the torch decoder on GPUs; CPU when it only forwards (BLS)
    gpus: tuple[int, ...] | None = None  # pin the GPU instances to these devices; None: every GPU


def step_tensors(cfg: LitaConfig) -> dict[str, tuple[list[TensorSpec], list[TensorSpec]]]:
    """Inputs and outputs of every step, derived from the config."""
    s, h = cfg.vision.image_size, cfg.text.hidden_size
    n_vis = num_visual_tokens(cfg)
    sampling = [TensorSpec(name, dt, (1,), optional=True) for name, dt in SAMPLING_INPUTS.values()]
    # FRAMES are cropped uint8 pixels (the encoder normalises them). Visual-feature cache: on a
    # hit FRAMES is empty ([0, 3, S, S]) and CACHE_PIN names the entry the preprocess step pinned
    # for the encoder (lita_serve.feature_cache); the video itself never reaches the encoder.
    cache_out = [TensorSpec("CACHE_KEY", "STRING", (1,)), TensorSpec("CACHE_PIN", "STRING", (1,)),
                 TensorSpec("SOURCE_DURATION", "FP32", (1,))]
    return {
        "preprocess": (
            # QUESTION: checked here before any decoding; it also keeps a request without a video
            # from reaching this step with no input at all.
            [TensorSpec("VIDEO", "STRING", (1,), optional=True), TensorSpec("DURATION", "FP32", (1,), optional=True),
             TensorSpec("QUESTION", "STRING", (1,), optional=True)],
            [TensorSpec("FRAMES", "UINT8", (-1, 3, s, s)), TensorSpec("VIDEO_DURATION", "FP32", (1,)),
             TensorSpec("STATS", "STRING", (1,)), *cache_out],
        ),
        "vision_encoder": (
            [TensorSpec("FRAMES", "UINT8", (-1, 3, s, s)), TensorSpec("STATS", "STRING", (1,)),
             *[TensorSpec(t.name, t.dtype, t.dims, optional=True) for t in cache_out]],
            [TensorSpec("EMBEDDINGS", "FP32", (n_vis, h)), TensorSpec("STATS_OUT", "STRING", (1,))],
        ),
        "llm": (
            [TensorSpec("QUESTION", "STRING", (1,), optional=True), TensorSpec("PROMPT_EMBEDDING_TABLE", "FP32", (-1, h)),
             TensorSpec("DURATION", "FP32", (1,)), TensorSpec("STATS", "STRING", (1,)), *sampling],
            [TensorSpec("OUTPUT_IDS", "INT32", (-1,)), TensorSpec("NEW_TOKENS", "INT32", (1,)),
             TensorSpec("DURATION_OUT", "FP32", (1,)), TensorSpec("STATS_OUT", "STRING", (1,)),
             TensorSpec("NUM_INPUT_TOKENS", "INT32", (1,)), TensorSpec("IS_FINAL", "BOOL", (1,)),
             TensorSpec("TOKEN_LOGPROBS", "STRING", (1,))],  # JSON, one entry per id ("[]": not asked)
        ),
        "postprocess": (
            [TensorSpec("OUTPUT_IDS", "INT32", (-1,)), TensorSpec("NEW_TOKENS", "INT32", (1,)),
             TensorSpec("DURATION", "FP32", (1,)), TensorSpec("STATS", "STRING", (1,)),
             TensorSpec("NUM_INPUT_TOKENS", "INT32", (1,)), TensorSpec("IS_FINAL", "BOOL", (1,)),
             TensorSpec("TOKEN_LOGPROBS", "STRING", (1,))],
            [TensorSpec("TEXT", "STRING", (1,)), TensorSpec("RAW_TEXT", "STRING", (1,)),
             TensorSpec("SEGMENTS", "STRING", (1,)), TensorSpec("DURATION_OUT", "FP32", (1,)),
             TensorSpec("NUM_INPUT_TOKENS_OUT", "INT32", (1,)), TensorSpec("NUM_OUTPUT_TOKENS", "INT32", (1,)),
             TensorSpec("IS_FINAL_OUT", "BOOL", (1,)), TensorSpec("STATS_OUT", "STRING", (1,)),
             TensorSpec("LOGPROBS", "STRING", (1,))],
        ),
    }


def _io(inputs: list[TensorSpec], outputs: list[TensorSpec]) -> str:
    return ("input [\n" + ",\n".join(t.pbtxt() for t in inputs) + "\n]\n"
            "output [\n" + ",\n".join(t.pbtxt() for t in outputs) + "\n]\n")


def encoder_instances(dep: Deployment) -> int:
    """How many vision_encoder instances ``dep`` runs (see :attr:`Deployment.encoder_instances`)."""
    if dep.encoder_instances is not None:
        return dep.encoder_instances
    return dep.preprocess_instances if dep.kind == "KIND_CPU" else 1


def _instances(count: int, kind: str, gpus: tuple[int, ...] | None = None) -> str:
    """``count`` instances of ``kind``. For KIND_GPU, Triton puts ``count`` on every visible GPU
    unless ``gpus`` names them; each instance learns its device as ``model_instance_device_id``."""
    pinned = f"\n    gpus: [ {', '.join(str(g) for g in gpus)} ]" if gpus and kind == "KIND_GPU" else ""
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}{pinned}\n  }}\n]\n"


def step_config(name: str, cfg: LitaConfig, dep: Deployment) -> str:
    inputs, outputs = step_tensors(cfg)[name]
    text = f'name: "{name}"\nbackend: "python"\nmax_batch_size: {dep.max_batch_size}\n' + _io(inputs, outputs)
    if name == "vision_encoder":
        text += ("dynamic_batching {\n"
                 f"  max_queue_delay_microseconds: {dep.encoder_max_queue_delay_us}\n}}\n")
        text += _instances(encoder_instances(dep), dep.kind, dep.gpus)
    elif name == "llm":
        text += "model_transaction_policy {\n  decoupled: true\n}\n" + _instances(1, dep.llm_kind, dep.gpus)
    elif name == "preprocess":
        text += _instances(dep.preprocess_instances, "KIND_CPU")
    else:
        text += _instances(dep.postprocess_instances, "KIND_CPU")
    return text


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    ins = "".join(f'      input_map {{\n        key: "{k}"\n        value: "{v}"\n      }}\n' for k, v in inputs.items())
    outs = "".join(f'      output_map {{\n        key: "{k}"\n        value: "{v}"\n      }}\n' for k, v in outputs.items())
    return f'    {{\n      model_name: "{model}"\n      model_version: -1\n{ins}{outs}    }}'


def ensemble_config(dep: Deployment) -> str:
    """``lita``: preprocess -> vision_encoder -> llm -> postprocess.

    The duration and timings made before the decoupled ``llm`` step travel *through* it
    (``DURATION`` -> ``DURATION_OUT``): an ensemble cannot join a tensor produced before a
    decoupled step with one produced after it (triton-inference-server/server#7275).
    """
    inputs, outputs = ensemble_tensors()
    sampling = {step: name for name, (step, _) in SAMPLING_INPUTS.items()}
    steps = [
        _step("preprocess", {"VIDEO": "video", "DURATION": "duration", "QUESTION": "text_input"},
              {"FRAMES": "_frames", "VIDEO_DURATION": "_duration", "STATS": "_stats_pre",
               "CACHE_KEY": "_cache_key", "CACHE_PIN": "_cache_pin", "SOURCE_DURATION": "_source_duration"}),
        _step("vision_encoder", {"FRAMES": "_frames", "STATS": "_stats_pre", "CACHE_KEY": "_cache_key",
                                 "CACHE_PIN": "_cache_pin", "SOURCE_DURATION": "_source_duration"},
              {"EMBEDDINGS": "_embeddings", "STATS_OUT": "_stats_enc"}),
        _step("llm", {"QUESTION": "text_input", "PROMPT_EMBEDDING_TABLE": "_embeddings", "DURATION": "_duration",
                      "STATS": "_stats_enc", **sampling},
              {"OUTPUT_IDS": "_ids", "NEW_TOKENS": "_new", "DURATION_OUT": "_duration_llm",
               "STATS_OUT": "_stats_llm", "NUM_INPUT_TOKENS": "_n_in", "IS_FINAL": "_final",
               "TOKEN_LOGPROBS": "_logprobs"}),
        _step("postprocess", {"OUTPUT_IDS": "_ids", "NEW_TOKENS": "_new", "DURATION": "_duration_llm",
                              "STATS": "_stats_llm", "NUM_INPUT_TOKENS": "_n_in", "IS_FINAL": "_final",
                              "TOKEN_LOGPROBS": "_logprobs"},
              {"TEXT": "text_output", "RAW_TEXT": "raw_text_output", "SEGMENTS": "segments",
               "DURATION_OUT": "video_duration", "NUM_INPUT_TOKENS_OUT": "num_input_tokens",
               "NUM_OUTPUT_TOKENS": "num_output_tokens", "IS_FINAL_OUT": "is_final", "STATS_OUT": "stats",
               "LOGPROBS": "token_logprobs"}),
    ]
    return (f'name: "{ENSEMBLE}"\nplatform: "ensemble"\nmax_batch_size: {dep.max_batch_size}\n' + _io(inputs, outputs)
            + "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n")


def render_configs(cfg: LitaConfig, dep: Deployment = Deployment()) -> dict[str, str]:
    """``{model name: config.pbtxt text}`` for every model of the repository."""
    configs = {name: step_config(name, cfg, dep) for name in STEPS}
    configs[ENSEMBLE] = ensemble_config(dep)
    return configs


def write_model_repository(repo: str | Path, cfg: LitaConfig, dep: Deployment = Deployment()) -> RepositoryLayout:
    """Write configs for ``cfg`` and copy the ``model.py`` adapters into ``repo``.

    Weights, ``lita.json`` and the tokenizer are written by the engine export
    (:func:`lita_serve.engine.torch_engine.export_torch_engine`).
    """
    layout = RepositoryLayout.of(repo)
    for name, text in render_configs(cfg, dep).items():
        model_dir = layout.model_dir(name)
        (model_dir / "1").mkdir(parents=True, exist_ok=True)
        (model_dir / "config.pbtxt").write_text(text)
        if name not in STEPS:  # the ensemble has no adapter
            continue
        adapter = adapter_path(name)
        if adapter.resolve() != (model_dir / "1" / "model.py").resolve():
            shutil.copyfile(adapter, model_dir / "1" / "model.py")
        shutil.copyfile(serving_env_path(), model_dir / "1" / SERVING_ENV)  # the adapter's first import
    return layout


def check_model_repository(repo: str | Path, dep: Deployment = Deployment()) -> list[str]:
    """Differences between the configs in ``repo`` and those its ``lita.json`` implies (empty: in sync)."""
    layout = RepositoryLayout.of(repo)
    cfg = layout.load_config()
    problems = []
    for name, text in render_configs(cfg, dep).items():
        path = layout.model_dir(name) / "config.pbtxt"
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.read_text() != text:
            problems.append(f"{path} differs from what {layout.config_path.name} implies")
    return problems
