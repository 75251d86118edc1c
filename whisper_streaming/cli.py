"""The ``whisper-streaming`` command: ``up``, ``gateway``, ``vad-worker``, ``asr-worker``, ``replay``."""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
from pathlib import Path

from shared.settings import Settings, SettingsError, load_settings, unknown_variables

CONFIG_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="whisper-streaming",
        description="Near-real-time speech to text over WebSockets (configuration: environment "
        "variables, see the README).",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="run the whole service here (embedded Redis unless REDIS_URL)")
    up.add_argument("--vad-workers", type=int, default=1)
    up.add_argument(
        "--asr-workers",
        type=lambda v: None if v == "auto" else int(v),
        default=None,
        help="workers of the English pool (or of the ASR_MODEL pool) with the default pools; "
        "auto (default): what the machine affords (one on a GPU, two sharing a CPU's cores)",
    )
    up.add_argument(
        "--pool",
        action="append",
        default=[],
        metavar="NAME=MODEL[:N]",
        help="a model pool to start instead of the defaults (en=tiny.en, multi=base), N workers "
        "of MODEL (tiny.en, base, a directory or a hub name); repeatable",
    )
    up.add_argument("--ready-timeout", type=float, default=120.0)
    up.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="the embedded Redis's AOF directory (default ~/.local/share/whisper-streaming/"
        "redis-PORT): streams survive a restart of Redis or of `up`",
    )
    sub.add_parser("gateway", help="run one gateway (FastAPI on uvicorn)")
    sub.add_parser("vad-worker", help="run one VAD worker")
    sub.add_parser("asr-worker", help="run one ASR worker")
    rp = sub.add_parser("replay", help="stream recorded files through the live WebSocket")
    rp.add_argument("files", nargs="+", help="audio files (anything FFmpeg decodes)")
    rp.add_argument(
        "--url",
        default=None,
        help="WebSocket URL: /v1/listen (the default, ws://HOST:PORT/v1/listen) or the "
        "predecessor-compatible / or /ws",
    )
    rp.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="pace: 1 = real time, 2 = twice as fast, 0 = as fast as the service takes it",
    )
    rp.add_argument("--language", default=None, help="language name or code (default: detect)")
    rp.add_argument("--chunk-ms", type=int, default=100, help="audio per frame")
    rp.add_argument("--format", choices=["txt", "json", "srt", "vtt"], default="txt")
    rp.add_argument(
        "--output",
        "-o",
        default=None,
        help="file, or directory for several inputs (default stdout)",
    )
    rp.add_argument("--timeout", type=float, default=300.0, help="per file, after the last audio")
    cred = rp.add_mutually_exclusive_group()
    cred.add_argument("--api-key", default=None, help="API key (sent as Authorization: Bearer)")
    cred.add_argument("--token", default=None, help="session token from POST /v1/auth/token")
    return p


def version() -> str:
    try:
        return importlib.metadata.version("whisper-streaming")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"


def configuration() -> Settings:
    """The settings, or exit 2 with one ``NAME=value: why`` line per bad value; variables with
    the project's prefixes that are no setting (misspellings) are warned about."""
    for warning in unknown_variables(os.environ):
        print(f"whisper-streaming: warning: {warning}", file=sys.stderr)
    try:
        return load_settings()
    except SettingsError as exc:
        for line in exc.lines:
            print(f"whisper-streaming: {line}", file=sys.stderr)
        print("whisper-streaming: configuration error (see the README's table)", file=sys.stderr)
        raise SystemExit(CONFIG_ERROR) from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    settings = configuration()
    if args.command == "up":
        from whisper_streaming.up import pools_to_start, run_up

        try:
            pools = pools_to_start(args.pool, args.asr_workers, settings.asr_model)
        except ValueError as exc:
            print(f"whisper-streaming up: {exc}", file=sys.stderr)
            return 2
        return run_up(settings, args.vad_workers, pools, args.ready_timeout, args.data_dir)
    if args.command == "gateway":
        from gateway.app import main as gateway_main

        gateway_main(settings)
    elif args.command == "vad-worker":
        from workers.vad_worker import main as vad_main

        vad_main(settings)
    elif args.command == "asr-worker":
        from workers.asr_worker import main as asr_main

        asr_main(settings)
    elif args.command == "replay":
        from whisper_streaming.replay import run_replay

        return run_replay(settings, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
