"""``lita-client``: ask a LITA server about a video, answer a prompt file, check health.

    lita-client [connection flags] ask VIDEO QUESTION [--stream] [--json] [sampling flags] [connection flags]
    lita-client batch PROMPTS.jsonl --media-base-path DIR --output OUT.jsonl [--concurrency N]
    lita-client health [--json]

The sampling flags are generated from the server's table of sampling inputs; a flag left out
is not sent, so the server's default applies.

Exit codes: 0 success; 1 error (one line on stderr: server unreachable, model not ready,
invalid request, timeout, ...; for ``health``: not ready); 2 bad command line (argparse);
3 ``batch`` finished but some lines failed (every line is still in the output, the failed
ones with an ``error`` field, and each failure is listed on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

from lita_client.batch import run_batch
from lita_client.contract import SAMPLING_RANGES
from lita_client.errors import LitaClientError
from lita_client.options import URL_ENV, ConnectionOptions, RetryPolicy, default_url
from lita_client.wire import SAMPLING_NAMES, sampling_dtype
from lita_client.sdk import LitaClient

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
PROG = "lita-client"
_FLAG_TYPES = {"INT32": int, "INT64": int, "FP32": float}


def _connection_parser(defaults: bool) -> argparse.ArgumentParser:
    """Connection flags. They are accepted before the subcommand (``defaults``: the top level,
    which holds the defaults) and after it (no defaults, so they never undo a flag given before)."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("connection (before or after the subcommand)")
    group.add_argument("-u", "--url", default=default(None),
                       help=f"gRPC address of the server, or several: a,b (requests spread over the ready "
                            f"ones) or dns:///name:port (every address of the name) "
                            f"(default: ${URL_ENV} or {default_url()})")
    group.add_argument("-t", "--client-timeout", type=float, default=default(ConnectionOptions.timeout),
                       help=f"seconds allowed for one request (default: {ConnectionOptions.timeout})")
    group.add_argument("--retries", type=int, default=default(RetryPolicy.retries),
                       help=f"retries with exponential backoff while the server is unavailable "
                            f"(default: {RetryPolicy.retries})")
    group.add_argument("-s", "--ssl", action="store_true", default=default(False), help="connect with TLS")
    group.add_argument("--root-certificates", default=default(None), help="PEM file of the root certificates (with --ssl)")
    group.add_argument("--private-key", default=default(None), help="PEM file of the client's private key (with --ssl)")
    group.add_argument("--certificate-chain", default=default(None),
                       help="PEM file of the client's certificate chain (with --ssl)")
    return parser


def _sampling_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    group = parser.add_argument_group("sampling (left out: the server's default)")
    for name in SAMPLING_NAMES:
        flag, dtype = "--" + name.replace("_", "-"), sampling_dtype(name)
        if dtype == "BOOL":
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None)
        elif name == "logprobs":  # `--logprobs` alone: the chosen tokens' only; `--logprobs 5`: and 5 alternatives
            group.add_argument(flag, dest=name, type=int, nargs="?", const=0, default=None, metavar="N",
                               help=f"token log-probabilities and a confidence for every time; N alternatives "
                                    f"per token, {SAMPLING_RANGES[name].describe()}")
        else:
            group.add_argument(flag, dest=name, type=_FLAG_TYPES[dtype], default=None, metavar=dtype,
                               help=SAMPLING_RANGES[name].describe() if name in SAMPLING_RANGES else None)
    return parser


def build_parser() -> argparse.ArgumentParser:
    conn, sampling = _connection_parser(defaults=False), _sampling_parser()
    parser = argparse.ArgumentParser(prog=PROG, description="Client of a LITA video-LLM server on Triton.",
                                     parents=[_connection_parser(defaults=True)])
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", parents=[conn, sampling], help="ask one question about one video")
    ask.add_argument("video", help="path of the video file")
    ask.add_argument("question", help="the question")
    ask.add_argument("--stream", action="store_true", help="print text as it is generated")
    ask.add_argument("--json", action="store_true",
                     help="print the answer as one JSON object (with --stream: one {\"delta\": ...} line per piece first)")
    ask.add_argument("--duration", type=float, default=None, help="video duration in seconds (default: from the file)")

    batch = sub.add_parser("batch", parents=[conn, sampling], help="answer a JSONL prompt file")
    batch.add_argument("prompts", help="prompt file: one JSON per line with video, text[, duration, category, question_id]")
    batch.add_argument("--media-base-path", required=True, help="directory the prompt file's video paths are under")
    batch.add_argument("-o", "--output", required=True, help="answers file to write (JSONL, input order)")
    batch.add_argument("-c", "--concurrency", type=int, default=4, help="requests in flight (default: %(default)s)")
    batch.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")

    health = sub.add_parser("health", parents=[conn], help="print server and model readiness")
    health.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def _client_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return dict(url=args.url, timeout=args.client_timeout, retries=args.retries, ssl=args.ssl,
                root_certificates=args.root_certificates, private_key=args.private_key,
                certificate_chain=args.certificate_chain)


def _sampling(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in SAMPLING_NAMES if getattr(args, name) is not None}


def _print(text: str = "", end: str = "\n") -> None:
    sys.stdout.write(text + end)
    sys.stdout.flush()


def cmd_ask(args: argparse.Namespace) -> int:
    with LitaClient(**_client_kwargs(args)) as client:
        if not args.stream:
            answer = client.ask(args.video, args.question, duration=args.duration, **_sampling(args))
            _print(answer.to_json() if args.json else answer.text)
            if not args.json:
                for line in answer.confidence_lines():
                    _print(line)
            return EXIT_OK
        stream = client.stream(args.video, args.question, duration=args.duration, **_sampling(args))
        for piece in stream:
            _print(json.dumps({"delta": piece}, ensure_ascii=False) if args.json else piece,
                   end="\n" if args.json else "")
        _print(stream.answer.to_json() if args.json else "")
    return EXIT_OK


def cmd_batch(args: argparse.Namespace) -> int:
    summary = run_batch(args.prompts, args.media_base_path, args.output, client_kwargs=_client_kwargs(args),
                        concurrency=args.concurrency, sampling=_sampling(args), progress=not args.no_progress)
    for question_id, message in summary.failures:
        print(f"{PROG}: question {question_id}: {message}", file=sys.stderr)
    print(f"{PROG}: {summary.succeeded}/{summary.total} answered, {len(summary.failures)} failed; "
          f"wrote {summary.output}", file=sys.stderr)
    if summary.servers:
        spread = ", ".join(f"{s['address']} {s['requests']}{'' if s['up'] else ' (down)'}" for s in summary.servers)
        print(f"{PROG}: requests per server: {spread}", file=sys.stderr)
    return EXIT_PARTIAL if summary.failures else EXIT_OK


def cmd_health(args: argparse.Namespace) -> int:
    with LitaClient(**_client_kwargs(args)) as client:
        health = client.health()
    if args.json:
        _print(json.dumps(health.to_dict()))
    else:
        for line in health.lines():
            _print(line)
    if health.ok:
        return EXIT_OK
    reason = health.error or f"model {health.model!r} is not ready"
    print(f"{PROG}: error: {reason}", file=sys.stderr)
    return EXIT_ERROR


COMMANDS = {"ask": cmd_ask, "batch": cmd_batch, "health": cmd_health}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lita-client`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except LitaClientError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except OSError as exc:  # e.g. the output file cannot be written
        print(f"{PROG}: error: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
