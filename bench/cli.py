"""The command line the reliability scripts share: which artifact to serve, which CPUs the server and
the clients run on, and extra server settings."""

from __future__ import annotations

import argparse

from bench import default_model_dir


def script_parser(doc: str, *, server_env: bool = False) -> argparse.ArgumentParser:
    """A parser whose summary and epilog come from the module docstring (summary, usage, details),
    with --model-dir, --server-cpu and --client-cpu; with `server_env`, a repeatable --env KEY=VALUE
    too (read it with `env_settings`)."""
    p = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model-dir",
        default=default_model_dir(),
        help="artifact to serve (default: $SENTIMENT_MODEL_DIR, else the shipped models/default)",
    )
    p.add_argument("--server-cpu", type=int, default=1, help="CPU the server is pinned to (1)")
    p.add_argument("--client-cpu", type=int, default=0, help="CPU the clients are pinned to (0)")
    if server_env:
        p.add_argument(
            "--env",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="extra server environment, e.g. --env SENTIMENT_MAX_QUEUE_TEXTS=512 (repeatable)",
        )
    return p


def env_settings(p: argparse.ArgumentParser, args: argparse.Namespace) -> dict[str, str]:
    """The --env KEY=VALUE pairs as a dict; a pair without '=' is a usage error."""
    for kv in args.env:
        if "=" not in kv:
            p.error(f"--env {kv!r}: expected KEY=VALUE, e.g. SENTIMENT_MAX_QUEUE_TEXTS=512")
    return dict(kv.split("=", 1) for kv in args.env)
