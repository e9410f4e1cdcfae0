"""``lita build``: any supported checkpoint layout -> a model repository Triton can serve.

Steps: recognise the layout; (``.nemo``) read and rename the weights; convert the tokenizer in
the order of ``--lita-version``; load and validate the checkpoint, growing and padding the vocabulary
to the tokenizer; check the LITA options; write the engine and the Triton configs; summarise.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from safetensors.torch import save_file
from tqdm import tqdm

from lita_build import nemo, trtllm, trtllm_quant
from lita_build.onnx_export import build_tensorrt_engine, export_encoder_onnx
from lita_build.lita_options import check_lita_options, resolve_hf_overrides
from lita_build.sources import SourceDescription, SourceLayout, describe_source
from lita_build.summary import BuildSummary
from lita_build.checkpoint import load_lita
from lita_serve.config import PromptOptions
from lita_serve.text.conversation import check_prompt_options
from lita_serve.errors import CheckpointError, InvalidInputError
from lita_serve.engine.model import LitaModel
from lita_serve.adapters.layout import BUILD_MANIFEST, ENCODER_ENGINES, ENCODER_ONNX, ENCODER_PLAN, BuildManifest
from lita_serve.llm.trtllm_release import TrtllmRelease, trtllm_release
from lita_build.repository import Deployment, write_model_repository
from lita_serve.engine.torch_engine import DTYPES, export_torch_engine
from lita_serve.llm.weight_quant import require_weight_quantization
from lita_serve.engine.quantization_names import NO_QUANTIZATION, TORCH_QUANTIZATIONS, TRTLLM_QUANTIZATIONS
from lita_serve.text.special_tokens import special_token_order
from lita_serve.text.tokenizer import LitaTokenizer, convert_tokenizer, load_model_proto

log = logging.getLogger(__name__)

ENGINES = ("torch", "tensorrt_llm")
TORCH_DTYPES = DTYPES  # what the PyTorch engine computes in, by name
MANIFEST = BUILD_MANIFEST  # at the repository root, next to lita.json (Triton ignores plain files there)
TRTLLM_CHECKPOINT = "tensorrt_llm_checkpoint"
TRTLLM_MODEL = "tensorrt_llm"


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _hf_source(src: SourceDescription, work: Path) -> tuple[Path, list[str]]:
    """The HF-layout directory to load: the checkpoint itself, or a .nemo rewritten into ``work``."""
    if src.layout is not SourceLayout.NEMO:
        return src.checkpoint, []
    ckpt = nemo.read_nemo(src.checkpoint, work / "nemo")
    hf_cfg, state = nemo.nemo_to_hf(ckpt)
    out = work / "hf"
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(hf_cfg, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"))
    return out, [f".nemo weights: {ckpt.weights_format}, {len(ckpt.state)} tensors"]


def _merged_config(root: Path, projector: Path | None) -> dict[str, Any]:
    merged = _read_json(root / "config.json")
    if projector is not None and projector.is_dir():
        merged.update(_read_json(projector / "config.json"))
    return merged


def convert_checked_tokenizer(source: Path, out: Path, version: str, num_time_tokens: int) -> tuple[LitaTokenizer, int]:
    """Convert ``source`` for ``version`` and check LITA's tokens sit in that version's id order.

    A tokenizer converted before (same order) gains nothing; one converted in the other order is
    refused, since its ids would not match the checkpoint's embedding rows.
    """
    added = convert_tokenizer(source, out, version, num_time_tokens)
    proto = load_model_proto(out)
    ids = {p.piece: i for i, p in enumerate(proto.pieces)}
    order = [ids[t] for t in special_token_order(version, num_time_tokens)]
    if order != list(range(order[0], order[0] + len(order))):
        raise CheckpointError(f"{source} already holds LITA's tokens in an order other than LITA {version}'s: "
                              "pass the base (unconverted) tokenizer or the matching --lita-version")
    return LitaTokenizer(proto, num_time_tokens, source=str(out)), len(added)


def _check_time_token_ids(merged: dict[str, Any], tokenizer: LitaTokenizer) -> None:
    stored = merged.get("time_token_ids")
    if stored and list(stored) != tokenizer.time_token_ids:
        raise CheckpointError(f"the checkpoint's time_token_ids ({stored[0]}..) differ from the converted "
                              f"tokenizer's ({tokenizer.time_token_ids[0]}..): wrong tokenizer or --lita-version")


def _write_torch(model: LitaModel, tokenizer: Path, output: Path, summary: BuildSummary) -> None:
    layout = export_torch_engine(model, tokenizer, output)
    for what, path in (("config", layout.config_path), ("tokenizer", layout.tokenizer_path),
                       ("encoder weights", layout.encoder_weights), ("decoder weights", layout.decoder_weights)):
        summary.add(what, path)


def _write_encoder_engine(model: LitaModel, output: Path, encoder_engine: str, fp16: bool, max_batch_size: int,
                          dry_run: bool, summary: BuildSummary, bar: tqdm) -> dict[str, Any] | None:
    """The ONNX graph (onnxruntime, tensorrt) and the TensorRT plan (tensorrt) of the encoder;
    returns the manifest's ``encoder_plan`` block (a dry run's settings for the plan), else None."""
    if encoder_engine == "torch":
        return None
    bar.set_postfix_str("encoder ONNX")
    onnx_path = export_encoder_onnx(model.encoder.float(), output / ENCODER_ONNX)
    summary.add("encoder ONNX", onnx_path)
    if encoder_engine == "onnxruntime":
        return None
    size = model.config.vision.image_size
    shape = (model.config.lita.sample_frames, 3, size, size)
    if dry_run:
        summary.notes.append(f"dry run: {ENCODER_PLAN} is built from {ENCODER_ONNX} by `lita build` on the GPU")
        return {"frames_shape": list(shape), "max_batch_size": max_batch_size, "fp16": fp16}
    bar.set_postfix_str("encoder TensorRT engine")
    plan = build_tensorrt_engine(onnx_path, output / ENCODER_PLAN, frames_shape=shape,
                                 max_batch_size=max_batch_size, fp16=fp16)
    summary.add("encoder TensorRT engine", plan)
    return None


def _write_tensorrt_llm(model: LitaModel, output: Path, dtype: str, tp_size: int, max_batch_size: int,
                        release: TrtllmRelease, gpus: tuple[int, ...] | None, dry_run: bool,
                        summary: BuildSummary, bar: tqdm, quantization: str = NO_QUANTIZATION,
                        tokenizer: Path | None = None, build_argv: list[str] | None = None) -> dict[str, Any]:
    """TensorRT-LLM checkpoint (quantized by ModelOpt unless ``quantization`` is none or this is a
    dry run), ``trtllm-build`` (skipped by a dry run) and the ``tensorrt_llm`` model's config;
    returns the manifest's ``trtllm`` block (the exact build command among it)."""
    cfg = model.config
    trt_dtype = "float16" if dtype == "float32" else dtype
    ckpt_dir, engine_dir = output / TRTLLM_CHECKPOINT, output / TRTLLM_MODEL / "1" / "engine"
    bar.set_postfix_str("TensorRT-LLM checkpoint")
    quant: dict[str, Any] = {"quantization": quantization}
    if quantization != NO_QUANTIZATION:
        trtllm_quant.check_group_size(quantization, cfg.text.hidden_size, cfg.text.intermediate_size, tp_size)
        plan = trtllm_quant.CalibrationPlan.for_quantization(quantization)
        quant.update(calibration=plan.to_json(), quant_config=trtllm_quant.quant_config(quantization),
                     quantize_api="tensorrt_llm.quantization.quantize_by_modelopt.quantize_model + "
                                  "modelopt.torch.export.export_tensorrt_llm_checkpoint")
        if build_argv:
            quant["quantize_command"] = [a for a in build_argv if a != "--dry-run"]
    if quantization != NO_QUANTIZATION and not dry_run:
        bar.set_postfix_str(f"calibrating + quantizing ({quantization})")
        tok = LitaTokenizer.from_file(tokenizer, cfg.lita.num_time_tokens)
        trtllm_quant.quantize_checkpoint(model, tok, quantization, plan, ckpt_dir, dtype=trt_dtype, tp_size=tp_size)
    else:
        trtllm.write_trtllm_checkpoint(model.decoder, cfg, ckpt_dir, dtype=trt_dtype, tp_size=tp_size,
                                       quantization=trtllm_quant.quant_config(quantization))
        if quantization != NO_QUANTIZATION:
            summary.notes.append(f"dry run: {TRTLLM_CHECKPOINT}/config.json carries the {quantization} settings; its "
                                 "weights are unquantized until the `quantize_command` of "
                                 f"{MANIFEST} runs on a GPU")
    summary.add("TensorRT-LLM checkpoint", ckpt_dir)
    limits = trtllm.EngineLimits.for_config(cfg, max_batch_size)
    command = trtllm.trtllm_build_command(ckpt_dir, engine_dir, limits, trt_dtype, tp_size)
    if dry_run:
        summary.notes.append("dry run: TensorRT-LLM engine not built; run the `trtllm_build_command` of "
                             f"{MANIFEST} in {release.image}")
    else:
        bar.set_postfix_str("trtllm-build")
        log.info("running %s", " ".join(command))
        subprocess.run(command, check=True)
        summary.add("TensorRT-LLM engine", engine_dir)
    model_dir = output / TRTLLM_MODEL
    (model_dir / "1").mkdir(parents=True, exist_ok=True)
    (model_dir / "config.pbtxt").write_text(trtllm.tensorrt_llm_model_config(
        str(engine_dir.resolve()), limits, trt_dtype, tp_size, release=release, gpus=gpus))
    return {"release": release.container_tag, "version": release.trtllm_version, "image": release.image,
            "dtype": trt_dtype, "tp_size": tp_size, "orchestrator": tp_size > 1,
            "trtllm_build_command": command, **quant}


DEVICES = ("cpu", "cuda")


def check_dtype(dtype: str) -> None:
    if dtype not in TORCH_DTYPES:
        raise InvalidInputError(f"--dtype must be one of {sorted(TORCH_DTYPES)}, got {dtype!r}")


def check_device(device: str) -> None:
    if device not in DEVICES:
        raise InvalidInputError(f"--device must be one of {list(DEVICES)}, got {device!r}")


def deployment(engine: str, encoder_engine: str, device: str, max_batch_size: int,
               gpus: tuple[int, ...] | None) -> Deployment:
    """Where each model runs: GPU instances for TensorRT engines and for PyTorch with ``device=cuda``."""
    on_gpu = device == "cuda"
    gpu_models = on_gpu or engine == "tensorrt_llm" or encoder_engine == "tensorrt"
    # the torch decoder goes to the GPU with --device cuda or next to a TensorRT encoder; a
    # TensorRT-LLM one only forwards (BLS) and stays on the CPU
    llm_gpu = engine == "torch" and (on_gpu or encoder_engine == "tensorrt")
    return Deployment(max_batch_size=max_batch_size, kind="KIND_GPU" if gpu_models else "KIND_CPU",
                      llm_kind="KIND_GPU" if llm_gpu else "KIND_CPU", gpus=gpus)


def _check_quantization(engine: str, quantization: str, dry_run: bool) -> None:
    known = TORCH_QUANTIZATIONS if engine == "torch" else TRTLLM_QUANTIZATIONS
    if quantization not in known:
        raise InvalidInputError(f"--quantization {quantization!r} does not apply to --engine {engine}; "
                                f"it takes {list(known)}")
    if engine == "torch":
        require_weight_quantization(quantization)
    elif quantization != NO_QUANTIZATION and not dry_run:
        trtllm_quant.require_modelopt()


def _check_args(engine: str, encoder_engine: str, dtype: str, tp_size: int, max_batch_size: int,
                gpus: tuple[int, ...] | None, dry_run: bool) -> None:
    if engine not in ENGINES:
        raise InvalidInputError(f"--engine must be one of {list(ENGINES)}, got {engine!r}")
    if encoder_engine not in ENCODER_ENGINES:
        raise InvalidInputError(f"--encoder-engine must be one of {list(ENCODER_ENGINES)}, got {encoder_engine!r}")
    check_dtype(dtype)
    if tp_size < 1 or max_batch_size < 1:
        raise InvalidInputError("--tp-size and --max-batch-size must be >= 1")
    if engine == "torch" and tp_size != 1:
        raise InvalidInputError("--tp-size applies to --engine tensorrt_llm only")
    if gpus is not None and (not gpus or min(gpus) < 0 or len(set(gpus)) != len(gpus)):
        raise InvalidInputError(f"--gpus must list distinct GPU indices >= 0, got {list(gpus)}")
    if engine == "tensorrt_llm" and gpus is not None and len(gpus) < tp_size:
        raise InvalidInputError(f"--gpus lists {len(gpus)} GPUs; a {tp_size}-rank engine (--tp-size) needs {tp_size}")
    if engine == "tensorrt_llm" and not dry_run:
        trtllm.require_tensorrt_llm()


def _load(src: SourceDescription, work: Path, tokenizer: Path, overrides: dict[str, Any] | None, dtype: str,
          summary_notes: list[str], bar: tqdm) -> tuple[LitaModel, Path, int]:
    """Steps shared by every engine: source -> converted tokenizer + validated, vocab-padded model."""
    bar.set_postfix_str("reading checkpoint")
    root, notes = _hf_source(src, work)
    summary_notes += notes
    merged = _merged_config(root, src.mm_projector)
    hf_overrides, notes = resolve_hf_overrides(merged, src.lita_version, overrides, src.is_pretrained)
    summary_notes += notes
    bar.update(1)
    bar.set_postfix_str("tokenizer")
    converted = work / "tokenizer.model"
    num_time_tokens = int({**merged, **hf_overrides}["num_time_tokens"])
    tok, added = convert_checked_tokenizer(tokenizer, converted, src.lita_version, num_time_tokens)
    _check_time_token_ids(merged, tok)
    bar.update(1)
    bar.set_postfix_str("loading + validating weights")
    model = load_lita(root, vision_tower_path=src.vision_tower, mm_projector_path=src.mm_projector,
                      tokenizer_size=tok.vocab_size, dtype=TORCH_DTYPES[dtype], hf_overrides=hf_overrides)
    check_lita_options(model.config)
    bar.update(1)
    return model, converted, added


def default_encoder_engine(engine: str) -> str:
    """TensorRT for the encoder next to a TensorRT-LLM decoder, PyTorch otherwise."""
    return "tensorrt" if engine == "tensorrt_llm" else "torch"


@dataclass(frozen=True)
class BuildOptions:
    """What ``lita build`` is asked for besides the checkpoint and the tokenizer.

    ``overrides`` sets LITA options by their :class:`~lita_serve.config.LitaOptions` names
    (``video_arch``, ``visual_token_format``, ``sample_frames``, ``num_spatial_frames``,
    ``spatial_pool``, ``num_time_tokens``, ``projector_type``). ``encoder_engine`` picks what
    serves the vision encoder (:data:`~lita_serve.adapters.layout.ENCODER_ENGINES`; default
    :func:`default_encoder_engine`). ``gpus`` pins the GPU models to those devices (default: Triton
    places instances on every GPU). ``trtllm_release_tag`` names the TensorRT-LLM container release
    the repository is for (:mod:`lita_serve.llm.trtllm_release`). ``dry_run`` writes everything
    but the TensorRT-LLM and TensorRT engines, and needs neither installed. ``prompt`` (template,
    media placement, BOS, tokenization) is stored in ``lita.json``; default: LITA's reference prompt.
    ``quantization``: ``int8_weight_only`` for the PyTorch decoder (:mod:`lita_serve.llm.weight_quant`), or
    ``fp8``/``int4_awq``/``int8_sq`` for TensorRT-LLM (:mod:`lita_build.trtllm_quant`); the
    manifest records it and ``build_argv`` (the command line, kept as the quantize command).
    ``device``: ``cuda`` serves the PyTorch encoder and decoder on GPUs (``KIND_GPU`` instances,
    computing in ``dtype``); ``cpu`` keeps them on the CPU unless a TensorRT engine needs a GPU.
    """

    lita_version: str
    output: Path
    engine: str = "torch"
    vision_tower: Path | None = None
    mm_projector: Path | None = None
    overrides: dict[str, Any] | None = None
    dtype: str = "float32"
    tp_size: int = 1
    max_batch_size: int = 8
    progress: bool = True
    encoder_engine: str | None = None
    gpus: tuple[int, ...] | None = None
    trtllm_release_tag: str | None = None
    dry_run: bool = False
    prompt: PromptOptions | None = None
    quantization: str = NO_QUANTIZATION
    build_argv: list[str] | None = None
    device: str = "cpu"


def build(checkpoint: Path, tokenizer: Path, options: BuildOptions | None = None, /, **fields: Any) -> BuildSummary:
    """Build the model repository at ``options.output`` from ``checkpoint`` (any layout of
    :mod:`.sources`). ``options`` (a :class:`BuildOptions`), or its fields as keywords.

    Raises CheckpointError for a checkpoint that does not match its config, InvalidInputError for
    bad arguments and MissingDependencyError when an engine needs a package that is missing.
    """
    o = options if options is not None else BuildOptions(**fields)
    encoder_engine = o.encoder_engine or default_encoder_engine(o.engine)
    gpus = tuple(o.gpus) if o.gpus is not None else None
    _check_args(o.engine, encoder_engine, o.dtype, o.tp_size, o.max_batch_size, gpus, o.dry_run)
    check_device(o.device)
    _check_quantization(o.engine, o.quantization, o.dry_run)
    release = trtllm_release(o.trtllm_release_tag)
    prompt = o.prompt or PromptOptions()
    check_prompt_options(prompt)
    src = describe_source(Path(checkpoint), lita_version=o.lita_version, vision_tower=o.vision_tower,
                          mm_projector=o.mm_projector)
    output = Path(o.output)
    output.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    manifest = BuildManifest(engine=o.engine, encoder_engine=encoder_engine, source=src.label, layout=src.layout.value,
                             dtype=o.dtype, tp_size=o.tp_size, max_batch_size=o.max_batch_size,
                             gpus=list(gpus) if gpus else None, dry_run=o.dry_run, quantization=o.quantization,
                             device=o.device, notes=notes)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=".lita-build-") as tmp, \
            tqdm(total=4, desc=f"lita build ({src.label})", unit="step", disable=not o.progress) as bar:
        model, converted, added = _load(src, Path(tmp), Path(tokenizer), o.overrides, o.dtype, notes, bar)
        model.config.prompt = prompt
        if prompt != PromptOptions():
            notes.append(f"prompt options {asdict(prompt)}")
        summary = BuildSummary(src.label, o.engine, output.resolve(), model.config, added, notes=notes)
        bar.set_postfix_str(f"writing {o.engine} repository")
        _write_torch(model, converted, output, summary)
        fp16 = o.dtype != "float32" or o.engine == "tensorrt_llm"
        manifest.encoder_plan = _write_encoder_engine(model, output, encoder_engine, fp16, o.max_batch_size, o.dry_run,
                                                      summary, bar)
        if o.engine == "tensorrt_llm":
            manifest.trtllm = _write_tensorrt_llm(model, output, o.dtype, o.tp_size, o.max_batch_size, release,
                                                  gpus[:o.tp_size] if gpus else None, o.dry_run, summary, bar,
                                                  o.quantization, converted, o.build_argv)
        write_model_repository(output, model.config, deployment(o.engine, encoder_engine, o.device, o.max_batch_size, gpus))
        bar.update(1)
    summary.add("build manifest", manifest.write(output))
    return summary
