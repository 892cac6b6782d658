"""`python -m app`: serve the API with an existing model (`python -m app --help` lists the settings).

Host, port, workers and everything else come from SENTIMENT_* environment variables (app/settings.py).
Serving never trains: with no model at SENTIMENT_MODEL_DIR it exits and says how to get one.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Literal, get_args, get_origin

from pydantic import ValidationError
from pydantic_core import PydanticUndefined

from app.settings import Settings

USAGE = """\
usage: python -m app [--help]

Serves the sentiment API (docs at /docs). Takes no arguments: every setting comes from an environment
variable (or a .env file in the working directory). Settings, with their defaults:
"""


def settings_help() -> str:
    """USAGE plus one entry per setting: its variable, default and description (from app/settings.py
    and core/settings.py, so the list cannot drift from what is read)."""
    lines = [USAGE]
    for name, field in Settings.model_fields.items():
        if field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = None if field.default is PydanticUndefined else field.default
        shown = "unset" if default is None or default == [] else str(default)
        choices = get_args(field.annotation) if get_origin(field.annotation) is Literal else ()
        if choices:
            shown += f"; one of {', '.join(map(str, choices))}"
        lines.append(f"  SENTIMENT_{name.upper()}  (default: {shown})")
        if field.description:
            pad = " " * 6
            lines.extend(textwrap.wrap(field.description, 104, initial_indent=pad, subsequent_indent=pad))
    return "\n".join(lines) + "\n"


def missing_artifact(model_dir: Path) -> str | None:
    """The message to exit with when `model_dir` holds no artifact (nor a `latest` pointer to one), else
    None. A corrupt artifact is not this case: start-up then fails and names the file."""
    from model.artifact import ArtifactError, resolve_artifact_dir  # imports torch: not for --help

    try:
        resolve_artifact_dir(model_dir)
        return None
    except ArtifactError:
        return (
            f"no artifact at {model_dir} (no meta.json there nor under {model_dir / 'latest'}); set "
            "SENTIMENT_MODEL_DIR to a model folder (default: models/default, shipped with the repository), "
            f"or train one with `python -m training --out {model_dir}` (needs the train extra: "
            "pip install -e '.[train]')"
        )


def port_problem(host: str, port: int) -> str | None:
    """A one-line message when the server could not listen on host:port (taken, or not allowed), else
    None. Checked before uvicorn starts, which would otherwise log a bare `[Errno 98]`."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        return f"cannot listen on {host}:{port}: {e.strerror}; check SENTIMENT_HOST"
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return (
                    f"port {port} on {host} is already in use; stop what listens there or choose another "
                    f"port, e.g. SENTIMENT_PORT={port + 1} python -m app"
                )
            return f"cannot listen on {host}:{port}: {e.strerror}; set SENTIMENT_PORT or SENTIMENT_HOST"
    return None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in ("-h", "--help"):
        print(settings_help(), end="")
        return
    if args:
        sys.exit(f"python -m app takes no arguments (got {' '.join(args)}); settings are SENTIMENT_* "
                 "environment variables: see python -m app --help")
    try:
        settings = Settings()
    except ValidationError as e:
        sys.exit(f"invalid SENTIMENT_* settings:\n{e}")
    problem = missing_artifact(settings.model_dir) or port_problem(settings.host, settings.port)
    if problem:
        sys.exit(problem)

    import uvicorn

    from app.logs import uvicorn_log_config

    if settings.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Each worker has its own metrics; a shared directory lets /metrics report all of them.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sentiment-metrics-")
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    print(
        f"serving {settings.model_dir} on http://{shown}:{settings.port} with {settings.workers} worker(s); "
        f"API docs at http://{shown}:{settings.port}/docs",
        flush=True,
    )
    uvicorn.run(
        "app.main:app",
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        # uvicorn's httptools protocol with a header size limit, header and body timeouts and a
        # connection cap (SENTIMENT_MAX_HEADER_BYTES, ..._TIMEOUT_S, SENTIMENT_MAX_CONNECTIONS)
        http="app.transport:GuardedHttpTools",
        lifespan="on",
        access_log=False,  # the app writes its own JSON line per request
        log_config=uvicorn_log_config(settings.log_level),
        log_level=settings.log_level,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_s),
    )


if __name__ == "__main__":
    main()
