"""The ``gradwatch`` command: ``serve`` runs the server, ``export`` downloads a run, ``sync`` uploads run files,
``demo`` the demo."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from pathlib import Path

from .protocol import ACTION_SEVERITIES


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the gradwatch server (dashboard + trainer endpoint)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; others print a warning)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 picks a free one)")
    p.add_argument("--db", type=Path, default=None, help="SQLite file (default ~/.gradwatch/gradwatch.db)")
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="where a generated token is written (default $GRADWATCH_TOKEN_FILE or ~/.gradwatch/token); "
        "the token itself comes from $GRADWATCH_TOKEN when set",
    )
    p.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="Host header to accept; repeat for several. Replaces the default names "
        "(localhost, 127.0.0.1, ::1); the --host address stays allowed; '*' accepts any",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument(
        "--webhook",
        default=None,
        metavar="URL",
        help="POST raised and re-opened alerts here as JSON (Slack-compatible 'text'; docs/alerts.md)",
    )
    p.add_argument(
        "--webhook-min-severity",
        default="warning",
        choices=list(ACTION_SEVERITIES),
        help="post only alerts at least this severe (default warning: all)",
    )
    p.add_argument(
        "--webhook-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="per POST before it counts as failed and is retried with backoff (default 5)",
    )


def serve(args: argparse.Namespace) -> int:
    from gradwatch.server.config import ServerConfig
    from gradwatch.server.serve import GradwatchServer

    kwargs: dict[str, object] = {
        "host": args.host,
        "port": args.port,
        "log_level": args.log_level,
        "webhook_url": args.webhook,
        "webhook_min_severity": args.webhook_min_severity,
        "webhook_timeout": args.webhook_timeout,
    }
    if args.db is not None:
        kwargs["db_path"] = args.db
    if args.token_file is not None:
        kwargs["token_file"] = args.token_file
    if args.allowed_host:
        kwargs["allowed_hosts"] = tuple(args.allowed_host)
    try:
        config = ServerConfig(**kwargs)
    except ValueError as e:
        print(f"gradwatch serve: {e}", file=sys.stderr)
        return 2
    with contextlib.suppress(KeyboardInterrupt):
        GradwatchServer(config).serve()
    return 0


def _export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("export", help="download a run's steps as Parquet or CSV (one row per step)")
    p.add_argument("run_id", type=int, metavar="RUN_ID", help="the run's id (GET /api/runs lists them)")
    p.add_argument("--format", choices=["parquet", "csv"], default="parquet", help="file format (default parquet)")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        metavar="FILE",
        help="where to write (default: run-<RUN_ID>.<format> in the current folder; '-' for stdout)",
    )
    p.add_argument(
        "--server",
        default=None,
        help="the server (default $GRADWATCH_SERVER, else http://127.0.0.1:8765 once it proved it knows the token)",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="token file (default $GRADWATCH_TOKEN_FILE or ~/.gradwatch/token); $GRADWATCH_TOKEN wins",
    )


def export(args: argparse.Namespace) -> int:
    from gradwatch.export_client import ExportError, download

    try:
        path = download(args.server, args.run_id, args.format, args.output, args.token_file)
    except ExportError as e:
        print(f"gradwatch export: {e}", file=sys.stderr)
        return 2
    if path is not None:
        print(f"wrote {path}", file=sys.stderr)
    return 0


def _sync_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("sync", help="upload run files (offline runs, spooled reports) into a server")
    p.add_argument(
        "paths",
        type=Path,
        nargs="+",
        metavar="PATH",
        help="run files (*.gwrun.jsonl) or folders holding them (e.g. ~/.gradwatch/runs)",
    )
    p.add_argument("--server", default=None, help="the server (default $GRADWATCH_SERVER, else http://127.0.0.1:8765)")
    # Refused, not taken: a token on the command line is visible to every user of the machine (ps).
    p.add_argument("--token", default=None, help=argparse.SUPPRESS)
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="token file (default $GRADWATCH_TOKEN_FILE or ~/.gradwatch/token); $GRADWATCH_TOKEN wins",
    )


def sync(args: argparse.Namespace) -> int:
    from gradwatch.runfile import RunFileError, find_run_files
    from gradwatch.sync import SyncError, sync_file
    from gradwatch.tokens import configured_server, proves_token, resolve_server, resolve_token, untrusted

    if args.token is not None:
        print(
            "gradwatch sync: --token is not taken (any user of this machine could read it with ps); "
            "set $GRADWATCH_TOKEN or pass --token-file FILE",
            file=sys.stderr,
        )
        return 2
    server = resolve_server(args.server)
    token = resolve_token(None, args.token_file)
    if token is not None and not configured_server(args.server) and not proves_token(server, token):
        print(f"gradwatch sync: {untrusted(server)}", file=sys.stderr)
        return 2
    try:
        files = find_run_files(args.paths)
    except RunFileError as e:
        print(f"gradwatch sync: {e}", file=sys.stderr)
        return 2
    if not files:
        print(f"gradwatch sync: no run files (*.gwrun.jsonl) under {' '.join(map(str, args.paths))}", file=sys.stderr)
        return 2
    failed = 0
    for path in files:
        try:
            done = sync_file(path, server, token)
        except (SyncError, ValueError) as e:
            print(f"gradwatch sync: {e}", file=sys.stderr)
            failed += 1
            continue
        print(
            f"{path}: run {done.run_id} ({done.run_name}): sent {done.steps} steps in {done.messages} messages "
            "(the server adds only what it did not have)"
        )
        for why in done.skipped:
            print(f"{path}: skipped {why}", file=sys.stderr)
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "demo":  # everything after 'demo' belongs to the demo's own parser
        from gradwatch.demo import main as demo_main  # type: ignore[import-not-found,unused-ignore]

        return int(demo_main(argv[1:]) or 0)
    parser = argparse.ArgumentParser(prog="gradwatch", description="Live gradient-health monitoring for Keras.")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _export_parser(sub)
    _sync_parser(sub)
    sub.add_parser("demo", help="train a small model with a live dashboard (options: gradwatch demo --help)")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "export":
        return export(args)
    if args.command == "sync":
        return sync(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
