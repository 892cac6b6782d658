"""What a run has committed, so `--resume` continues exactly where it stopped.

After each commit of the output (scoring/formats.py) the journal, `<output>.resume.json`, is replaced
atomically (write, then rename) with: how many input records are done (scored or failed), where the
output and the errors file end, the counts so far, and the run's identity (input file, columns, model,
options). A resumed run checks the identity, cuts the output and errors file back to their committed
ends (dropping a half-written tail), skips the records done and appends. A record is in the journal's
count only once its row is committed, so none is lost or written twice. The journal is removed when
the run completes."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

VERSION = 1


class JournalError(Exception):
    """The journal is missing, unreadable or belongs to another run; the message says what to do."""


@dataclass
class Counts:
    read: int = 0
    scored: int = 0
    failed: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # time spent in all runs so far


@dataclass
class State:
    identity: dict[str, Any]
    records: int = 0
    output: dict[str, int] | None = None  # the writer's committed state
    errors_bytes: int = 0
    counts: Counts = field(default_factory=Counts)


def journal_path(output: Path) -> Path:
    return output.with_name(output.name + ".resume.json")


def input_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def save(path: Path, state: State) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"version": VERSION, **asdict(state)}, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def load(path: Path, identity: dict[str, Any]) -> State:
    """The committed state of an earlier run with the same identity."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise JournalError(
            f"{path}: not found, so there is nothing to resume (a finished run removes it); "
            "start again with --overwrite"
        ) from None
    except (OSError, json.JSONDecodeError) as e:
        raise JournalError(f"{path}: unreadable ({e}); start again with --overwrite") from None
    if raw.get("version") != VERSION:
        raise JournalError(
            f"{path}: written by another version of this command; start again with --overwrite"
        )
    theirs = raw["identity"]
    for key in sorted(set(identity) | set(theirs)):
        if identity.get(key) != theirs.get(key):
            raise JournalError(
                f"{path}: the interrupted run had {key} = {theirs.get(key)!r}, this one "
                f"{identity.get(key)!r}; resume with the same input and options, or start again with "
                "--overwrite"
            )
    return State(
        identity=theirs,
        records=raw["records"],
        output=raw["output"],
        errors_bytes=raw["errors_bytes"],
        counts=Counts(**raw["counts"]),
    )
