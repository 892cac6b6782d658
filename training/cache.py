"""Stage cache: each expensive training stage writes its outputs to CACHE/<stage>-<key>/, where the
key is a hash of everything the stage depends on (input checksums, settings, the keys of earlier
stages). A rerun with the same inputs reuses the outputs; a stopped stage resumes from the
checkpoint it left in its directory; a finished stage whose files no longer match their recorded
checksums is refused, naming the file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from model.checksums import sha256_file

MANIFEST = "stage.json"


class CacheError(Exception):
    """A cached stage is corrupt; the message names the file and what to do."""


def stage_key(stage: str, inputs: dict[str, Any]) -> str:
    blob = json.dumps({"stage": stage, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _sha256(path: Path) -> str:
    return sha256_file(path)


class Stage:
    """One cached stage: `done()` says whether valid outputs exist; `finish()` records them."""

    def __init__(self, root: str | Path, name: str, inputs: dict[str, Any]) -> None:
        self.name = name
        self.inputs = inputs
        self.key = stage_key(name, inputs)
        self.dir = Path(root) / f"{name}-{self.key}"

    @property
    def manifest(self) -> Path:
        return self.dir / MANIFEST

    def done(self) -> bool:
        """True when the stage finished earlier and every output still matches its checksum."""
        if not self.manifest.exists():
            return False
        try:
            manifest = json.loads(self.manifest.read_text(encoding="utf-8"))
            files = manifest["files"]
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(
                f"{self.manifest}: unreadable stage manifest ({e}); delete {self.dir} to rebuild the "
                f"{self.name} stage"
            ) from e
        for rel, digest in files.items():
            path = self.dir / rel
            if not path.is_file():
                raise CacheError(f"{path}: missing from the cached {self.name} stage; delete {self.dir}")
            if _sha256(path) != digest:
                raise CacheError(
                    f"{path}: checksum does not match the cached {self.name} stage's manifest (corrupt or "
                    f"edited); delete {self.dir} to rebuild it"
                )
        return True

    def info(self) -> dict[str, Any]:
        return json.loads(self.manifest.read_text(encoding="utf-8")).get("info", {})

    def checksums(self) -> dict[str, str]:
        return json.loads(self.manifest.read_text(encoding="utf-8"))["files"]

    def start(self) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        return self.dir

    def finish(self, files: list[str], info: dict[str, Any] | None = None) -> None:
        """Record the outputs (paths relative to the stage directory) with their checksums."""
        manifest = {
            "stage": self.name,
            "key": self.key,
            "inputs": self.inputs,
            "files": {rel: _sha256(self.dir / rel) for rel in sorted(files)},
            "info": info or {},
        }
        tmp = self.manifest.with_suffix(".tmp")
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, self.manifest)


def content_hash(texts: list[str], labels: list[int] | None = None) -> str:
    """sha256 of a list of texts (and labels): identifies the data a stage saw, slices included."""
    h = hashlib.sha256()
    for i, t in enumerate(texts):
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\x00" if labels is None else f"\x00{labels[i]}\x01".encode())
    return h.hexdigest()


def finished_stages(root: str | Path, name: str) -> list[Stage]:
    """Every finished stage of this name under root (not verified; call done() before trusting it)."""
    out = []
    for manifest in sorted(Path(root).glob(f"{name}-*/{MANIFEST}")):
        try:
            inputs = json.loads(manifest.read_text(encoding="utf-8"))["inputs"]
        except (ValueError, KeyError, TypeError):
            continue
        stage = Stage(root, name, inputs)
        if stage.dir == manifest.parent:
            out.append(stage)
    return out
