"""``lita``: build, serve, demo and evaluate LITA on Triton Inference Server.

Each subcommand is a plain function; the argument parser is built from a small table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lita_serve.errors import LitaError
from lita_serve.adapters.layout import ENCODER_ENGINES
from lita_serve.llm.trtllm_release import DEFAULT_RELEASE, RELEASES
from lita_serve.logs import setup_logging
from lita_serve.engine.quantization_names import ALL_QUANTIZATIONS, NO_QUANTIZATION

DEFAULT_REPOSITORY = Path("model_repository")


def cmd_serve(args: argparse.Namespace) -> int:
    """Start tritonserver on a model repository (127.0.0.1 unless --host says otherwise)."""
    from lita_serve.serving.launcher import GrpcTls, Ports, TritonServer, serve_forever

    tls = None
    if args.grpc_server_cert or args.grpc_server_key:
        if not (args.grpc_server_cert and args.grpc_server_key):
            raise LitaError("--grpc-server-cert and --grpc-server-key go together")
        tls = GrpcTls(args.grpc_server_cert, args.grpc_server_key, args.grpc_root_cert)
    server = TritonServer(args.repository, ports=Ports(args.http_port, args.grpc_port, args.metrics_port),
                          host=args.host, log_path=args.log_file, log_verbose=args.log_verbose, tls=tls)
    print(f"serving {args.repository} on grpc {server.grpc_url}{' (TLS)' if tls else ''}, http {server.http_url}",
          file=sys.stderr)
    frontend = _openai_frontend(args, server) if args.openai_port else None
    try:
        return serve_forever(server, timeout=args.timeout, supervise=args.supervise)
    finally:
        if frontend is not None:
            frontend.stop()


def _openai_frontend(args: argparse.Namespace, server):
    """Start the OpenAI-compatible endpoint beside tritonserver (``--openai-port``)."""
    if server.tls is not None:
        raise LitaError("--openai-port forwards over plain gRPC on loopback; it cannot be combined with gRPC TLS")
    from lita_serve.openai_api import FrontendSettings, OpenAIFrontend
    from lita_serve.openai_api.frontend_settings import api_key_from, limits_of

    settings = FrontendSettings(server.grpc_url, api_key=api_key_from(args.api_key),
                                allowed_media_path=args.allowed_media_path,
                                allow_remote_media=args.allow_remote_media, timeout_s=args.openai_timeout,
                                limits=limits_of(args.repository))
    frontend = OpenAIFrontend(settings, host=args.host, port=args.openai_port).start()
    print(f"OpenAI-compatible endpoint on {frontend.url}{' (API key required)' if settings.api_key else ''}",
          file=sys.stderr)
    return frontend


def cmd_tokenizer_convert(args: argparse.Namespace) -> int:
    """Add LITA's time tokens and extra ids to a SentencePiece model."""
    from lita_serve.text.tokenizer import convert_tokenizer

    added = convert_tokenizer(args.input, args.output, args.version, args.num_time_tokens)
    print(f"{args.output}: added {len(added)} tokens ({args.version} order)")
    return 0


def cmd_check_repository(args: argparse.Namespace) -> int:
    """Check that a repository's config.pbtxt files match its lita.json."""
    from lita_build.repository import check_model_repository

    problems = check_model_repository(args.repository)
    for p in problems:
        print(p, file=sys.stderr)
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build a model repository from a LITA checkpoint (HF 1.0/1.5, LLaVA/ShareGPT4V + projector, .nemo)."""
    from lita_build.builder import BuildOptions, build

    overrides = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)  # numbers, booleans
        except ValueError:
            overrides[key] = value  # plain strings such as temporal_spatial_pool
    if (args.checkpoint is None) == (args.dummy_weights is None):
        raise SystemExit("lita build: give --checkpoint, or --dummy-weights PRESET for a repository of that "
                         "preset's shapes with random weights")
    if args.checkpoint is not None and args.lita_version is None:
        raise SystemExit("lita build: --lita-version (1.0 or 1.5) is required with --checkpoint")
    if args.dummy_weights is not None:
        from lita_build.dummy import build_dummy

        print(build_dummy(args.dummy_weights, args.tokenizer, output=args.output, dtype=args.dtype,
                          device=args.device, max_batch_size=args.max_batch_size, overrides=overrides or None).table())
        return 0
    options = BuildOptions(
        lita_version=args.lita_version, output=args.output, engine=args.engine, vision_tower=args.vision_tower,
        mm_projector=args.mm_projector, overrides=overrides or None, dtype=args.dtype, tp_size=args.tp_size,
        max_batch_size=args.max_batch_size, encoder_engine=args.encoder_engine, gpus=args.gpus,
        trtllm_release_tag=args.trtllm_release, dry_run=args.dry_run, prompt=_prompt_options(args),
        quantization=args.quantization, build_argv=["lita", *sys.argv[1:]], device=args.device)
    summary = build(args.checkpoint, args.tokenizer, options)
    print(summary.table())
    return 0


def _add_build(sub) -> None:
    p = sub.add_parser("build", help=cmd_build.__doc__)
    p.add_argument("--checkpoint", type=Path, default=None, help="HF checkpoint directory or .nemo file")
    p.add_argument("--dummy-weights", metavar="PRESET", default=None,
                   help="instead of a checkpoint: a repository of this preset's shapes (lita-13b, lita-1.5-13b, "
                        "tiny) whose weights are drawn at load, for speed measurements (answers are meaningless)")
    p.add_argument("--tokenizer", type=Path, required=True, help="SentencePiece tokenizer.model (LLaMA/LLaVA)")
    p.add_argument("--lita-version", choices=["1.0", "1.5"], default=None,
                   help="the checkpoint's LITA version (required with --checkpoint; a preset names its own)")
    p.add_argument("--engine", choices=["torch", "tensorrt_llm"], default="torch")
    p.add_argument("--output", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--vision-tower", type=Path, default=None, help="separate CLIP vision tower directory")
    p.add_argument("--mm-projector", type=Path, default=None, help="pretrained mm_projector.bin (file or directory)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="LITA option override, e.g. video_arch=temporal_spatial_pool, sample_frames=100")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    p.add_argument("--tp-size", type=int, default=1)
    p.add_argument("--max-batch-size", type=int, default=8)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: serve the PyTorch encoder and decoder on GPUs, in --dtype (default: the CPU)")
    p.add_argument("--encoder-engine", choices=list(ENCODER_ENGINES), default=None,
                   help="what serves the vision encoder (default: tensorrt with --engine tensorrt_llm, else torch)")
    p.add_argument("--gpus", type=_gpu_list, default=None, metavar="0,1",
                   help="pin the GPU models to these GPUs (default: instances on every GPU)")
    p.add_argument("--trtllm-release", choices=sorted(RELEASES), default=DEFAULT_RELEASE,
                   help="the Triton + TensorRT-LLM container release to build for")
    p.add_argument("--dry-run", action="store_true",
                   help="write the repository, the TensorRT-LLM checkpoint and build.json (with the exact "
                        "trtllm-build command) without building engines; needs no TensorRT-LLM")
    _add_prompt_options(p)
    _add_quantization(p)
    p.set_defaults(func=cmd_build)


def _add_quantization(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quantization", default=NO_QUANTIZATION, choices=list(ALL_QUANTIZATIONS),
                   help="decoder quantization: int8_weight_only (torch engine, torchao), or fp8 / int4_awq / "
                        "int8_sq (tensorrt_llm engine, ModelOpt calibrated on LITA prompts)")


def _gpu_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--gpus takes GPU indices such as 0,1; got {text!r}") from None


MEDIA_SEPARATORS = {"newline": "\n", "none": "", "space-newline": " \n"}


def _add_prompt_options(p: argparse.ArgumentParser) -> None:
    """Prompt construction stored in lita.json (defaults: LITA's reference prompt)."""
    from lita_serve.config import CONV_TEMPLATES, MEDIA_PLACEMENTS, PROMPT_TOKENIZATIONS

    g = p.add_argument_group("prompt", "how a question becomes the prompt (NeMo's LITA inference: "
                             "--media-separator none --no-add-bos --prompt-tokenization whole)")
    g.add_argument("--conv-template", choices=CONV_TEMPLATES, default="v1",
                   help="v1: LITA's training template; llava_v1: what LITA's eval and CLI use")
    g.add_argument("--insert-media-token", choices=MEDIA_PLACEMENTS, default="left",
                   help="put the video before (left) or after (right) the question")
    g.add_argument("--media-separator", choices=sorted(MEDIA_SEPARATORS), default="newline",
                   help="text after the video: newline (LITA), none (NeMo), space-newline (NeMo add_media_sep)")
    g.add_argument("--add-bos", action=argparse.BooleanOptionalAction, default=True, help="BOS id first")
    g.add_argument("--prompt-tokenization", choices=PROMPT_TOKENIZATIONS, default="per_chunk",
                   help="per_chunk: LLaVA's tokenizer_image_token; whole: NeMo's one call over the prompt")


def _prompt_options(args: argparse.Namespace):
    from lita_serve.config import PromptOptions

    return PromptOptions(conv_template=args.conv_template, insert_media_token=args.insert_media_token,
                         media_separator=MEDIA_SEPARATORS[args.media_separator], add_bos=args.add_bos,
                         tokenization=args.prompt_tokenization)


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the demo model, serve it, ask about a generated video, print the answer, stop."""
    from lita_serve.serving.demo import build_demo_repository, run_demo

    if args.build_only:
        build_demo_repository(args.repository)
        return 0
    result = run_demo(args.repository, args.workdir)
    return 0 if result.segments else 1


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help=cmd_demo.__doc__)
    p.add_argument("--repository", "-r", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--workdir", type=Path, default=Path("artifacts/demo"))
    p.add_argument("--build-only", action="store_true", help="only build the demo model into the repository")
    p.set_defaults(func=cmd_demo)


def cmd_rss(args: argparse.Namespace) -> int:
    """Serve a repository, answer one question, print each model process's resident memory."""
    from lita_serve.serving.process_memory import main as rss_main

    return rss_main(args.repository, args.workdir, as_json=args.json)


def _add_rss(sub) -> None:
    p = sub.add_parser("rss", help=cmd_rss.__doc__)
    p.add_argument("--repository", "-r", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--workdir", type=Path, default=Path("artifacts/rss"))
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_rss)


def cmd_eval(args: argparse.Namespace) -> int:
    """Score the demo model on a held-out synthetic set through the real server (mIoU, R@0.3/0.5/0.7)."""
    from lita_serve.evaluate.heldout import run_eval

    run_eval(args.repository, args.workdir, num_videos=args.num_videos, build=not args.no_build)
    return 0


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help=cmd_eval.__doc__)
    p.add_argument("--repository", "-r", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--workdir", type=Path, default=Path("artifacts/eval"))
    p.add_argument("--num-videos", type=int, default=60, help="held-out videos (1-3 questions each)")
    p.add_argument("--no-build", action="store_true", help="use the repository as it is")
    p.set_defaults(func=cmd_eval)


def cmd_train_demo(args: argparse.Namespace) -> int:
    """Train the small demo model on synthetic event videos (CPU, minutes) and save it in the HF layout."""
    from lita_serve.train.demo_training import train_demo

    threads = {} if args.threads is None else {"threads": args.threads}
    minutes = {} if args.max_minutes is None else {"max_minutes": args.max_minutes}
    train_demo(args.output, seed=args.seed, **minutes, **threads)
    return 0


def _add_train_demo(sub) -> None:
    p = sub.add_parser("train-demo", help=cmd_train_demo.__doc__)
    p.add_argument("--output", type=Path, default=Path("assets/demo"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-minutes", type=float, default=None,
                   help="cap on the training stages (default: generous; the fixed step counts end them)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads (default: two, as the shipped model); part of what makes a run reproducible")
    p.set_defaults(func=cmd_train_demo)


def cmd_convert_annotations(args: argparse.Namespace) -> int:
    """Convert Charades-STA / ActivityNet(-RTL) / DiDeMo annotations to LITA's train.json."""
    from lita_serve.data.annotations import convert_annotations

    summary = convert_annotations(args.format, args.input, args.output, args.task, args.durations,
                                  args.num_time_tokens, seed=args.seed, tolerance=args.tolerance)
    for problem in summary["problems"]:
        print(problem, file=sys.stderr)
    print(f"{summary['entries']} entries from {summary['records']} records ({summary['problem_count']} skipped) "
          f"-> {args.output}")
    return 0 if summary["entries"] else 1


def _add_convert(sub) -> None:
    p = sub.add_parser("convert-annotations", help=cmd_convert_annotations.__doc__)
    p.add_argument("format", choices=["charades-sta", "activitynet", "didemo"])
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--task", default="event_localization",
                   choices=["event_localization", "dense_captioning", "event_classification", "reasoning"])
    p.add_argument("--durations", type=Path, default=None, help="JSON {video: seconds} or Charades CSV")
    p.add_argument("--num-time-tokens", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=0.0, help="seconds a span may overshoot the duration")
    p.set_defaults(func=cmd_convert_annotations)


def cmd_load_test(args: argparse.Namespace) -> int:
    """Load-test the ensemble with perf_analyzer, cold (a new video every request) and warm (cached)."""
    from lita_serve.loadtest.run import print_summary, run_load_test

    lo, _, hi = args.concurrency.partition(":")
    summary = run_load_test(None if args.url else args.repository, args.output, (int(lo), int(hi or lo)),
                            url=args.url, metrics_url=args.metrics_url)
    print_summary(summary)
    return 0 if summary["cold_valid"] is not False else 1


def _add_load_test(sub) -> None:
    p = sub.add_parser("load-test", help=cmd_load_test.__doc__)
    p.add_argument("--repository", "-r", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--url", default=None, help="host:grpc_port of a running server (default: start one)")
    p.add_argument("--metrics-url", default=None,
                   help="that server's metrics endpoint (http://host:8002/metrics): proves each regime's cache hits")
    p.add_argument("--concurrency", default="1:8", help="A:B concurrency range")
    p.add_argument("--output", type=Path, default=Path("artifacts/load"))
    p.set_defaults(func=cmd_load_test)


def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help=cmd_serve.__doc__)
    p.add_argument("--repository", "-r", type=Path, default=DEFAULT_REPOSITORY)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--log-file", type=Path, default=None)
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for readiness")
    p.add_argument("--grpc-server-cert", type=Path, default=None, help="PEM certificate: serve gRPC over TLS")
    p.add_argument("--grpc-server-key", type=Path, default=None, help="PEM private key of that certificate")
    p.add_argument("--grpc-root-cert", type=Path, default=None, help="CA certificate: require client certificates")
    p.add_argument("--supervise", action="store_true",
                   help="restart the server when it dies or a model process fails (instead of exiting)")
    p.add_argument("--openai-port", type=int, default=None,
                   help="also serve an OpenAI-compatible /v1/chat/completions on this port (off by default)")
    p.add_argument("--api-key", default=None, help="bearer key the OpenAI endpoint requires (default: $LITA_API_KEY)")
    p.add_argument("--allowed-media-path", type=Path, default=None,
                   help="folder the OpenAI endpoint may read file:// video URLs from (default: none)")
    p.add_argument("--allow-remote-media", action="store_true",
                   help="let the OpenAI endpoint fetch http(s) video URLs (off: refused)")
    p.add_argument("--openai-timeout", type=float, default=120.0, help="seconds per OpenAI request")
    p.set_defaults(func=cmd_serve)


def _add_tokenizer(sub) -> None:
    p = sub.add_parser("tokenizer-convert", help=cmd_tokenizer_convert.__doc__)
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument("--version", choices=["1.0", "1.5"], required=True)
    p.add_argument("--num-time-tokens", type=int, default=100)
    p.set_defaults(func=cmd_tokenizer_convert)


def _add_check(sub) -> None:
    p = sub.add_parser("check-repository", help=cmd_check_repository.__doc__)
    p.add_argument("repository", type=Path, nargs="?", default=DEFAULT_REPOSITORY)
    p.set_defaults(func=cmd_check_repository)


COMMANDS = [_add_build, _add_serve, _add_demo, _add_eval, _add_train_demo, _add_convert, _add_load_test, _add_tokenizer, _add_check,
            _add_rss]


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="lita", description=__doc__.splitlines()[0])
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v info, -vv debug)")
    sub = ap.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (LitaError, FileNotFoundError) as exc:
        print(f"lita {args.command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
