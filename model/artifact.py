"""The artifact directory: the contract between training and serving.

    <dir>/model.pt            TorchScript: forward(ids int64[B,T], lengths int64[B]) -> logits[B,C]
    <dir>/tokenizer.json      `tokenizers` file, [PAD]=0, [UNK]=1, truncation = max length
    <dir>/meta.json           identity, labels, temperature, metrics, config, sha256 of every file
    <dir>/MODEL_CARD.md, training_curve.png, metrics.jsonl   for people

Loading verifies every sha256 listed in meta.json before anything is unpickled or
parsed, and only TorchScript and JSON are ever loaded (no pickle). Every file is resolved (symlinks
followed) and must stay inside the artifact folder; `files` entries must be plain relative names.

Loading a model runs the model's code: a TorchScript file is a program (its `forward` and
`__setstate__` run inside the server, and TorchScript has operators that read and write files), and
the checksums in meta.json, which sits in the same folder, prove integrity, not origin. An allow-list
of model.pt digests kept outside the model folder (SENTIMENT_MODEL_ALLOWLIST, `read_allowlist`) is
checked before torch.jit.load: then only models the operator listed are ever loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer

from model.checksums import sha256_file
from model.tokenizer import PAD_ID, UNK_ID, AsciiIds, load_tokenizer, max_length_of, pad, token_ids

SCHEMA_VERSION = 1
MODEL_FILE, TOKENIZER_FILE, META_FILE = "model.pt", "tokenizer.json", "meta.json"
REQUIRED_FILES = (MODEL_FILE, TOKENIZER_FILE)


class ArtifactError(RuntimeError):
    """The artifact is missing, corrupt or incompatible; the message names the file. `detail`: what a
    library said (torch's C++ trace, a JSON parser's position), in str() and the logs but not in
    `message`, which is what an API answer may show."""

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message if detail is None else f"{message} ({detail})")
        self.message = message
        self.detail = detail


def member(artifact_dir: Path, name: object) -> Path:
    """artifact_dir / name for a file the artifact lists: a plain relative name ("model.pt",
    "sub/x.json") that stays inside the folder once every symlink is followed. Refused otherwise,
    before the file is opened: a listed `../../etc/passwd` or a model.pt linking out of the folder
    would make the checksum check an oracle for, or a loader of, files elsewhere."""
    meta_path = artifact_dir / META_FILE
    if (
        not isinstance(name, str)
        or not name
        or any(ord(c) < 32 for c in name)
        or "\\" in name
        or Path(name).is_absolute()
        or ".." in Path(name).parts
    ):
        shown = Path(name).name[:80] if isinstance(name, str) else type(name).__name__
        raise ArtifactError(
            f"{meta_path}: an entry of `files` (…{shown!r}) is not a relative file name inside the artifact "
            "folder (absolute, with '..', or with control characters); refused"
        )
    path = artifact_dir / name
    if not path.resolve().is_relative_to(artifact_dir.resolve()):
        raise ArtifactError(f"{path}: resolves outside the artifact folder (a symlink leading out); refused")
    return path


def read_allowlist(path: Path) -> frozenset[str]:
    """The sha256 digests of the model files that may be loaded: one per line, `sha256sum` output or a
    bare digest; blank lines and `#` comments are skipped. Errors name the file and line."""
    digests = set()
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"{path}: the model allow-list cannot be read", detail=str(e)) from e
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        digest = text.split()[0].lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ArtifactError(
                f"{path}:{number}: expected a sha256 digest (64 hex digits, as `sha256sum model.pt` prints)"
            )
        digests.add(digest)
    if not digests:
        raise ArtifactError(f"{path}: the model allow-list lists no digest; no model could be loaded")
    return frozenset(digests)


def resolve_artifact_dir(path: str | Path) -> Path:
    """Accept an artifact directory, or a parent holding a `latest` pointer to one."""
    p = Path(path)
    if (p / META_FILE).exists():
        return p
    if (p / "latest" / META_FILE).exists():
        return (p / "latest").resolve()
    raise ArtifactError(
        f"{p}: no {META_FILE} here or under {p / 'latest'}; train a model first "
        "(python -m training --out artifacts) or set SENTIMENT_MODEL_DIR"
    )


def read_meta(artifact_dir: Path) -> dict[str, Any]:
    meta_path = member(artifact_dir, META_FILE)
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ArtifactError(f"{meta_path}: missing") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{meta_path}: not valid JSON", detail=str(e)) from e
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: expected a JSON object")
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ArtifactError(
            f"{meta_path}: schema_version {version!r} is not supported (this code reads {SCHEMA_VERSION})"
        )
    for key in ("labels", "temperature", "files", "name", "version"):
        if key not in meta:
            raise ArtifactError(f"{meta_path}: required key {key!r} is missing")
    files = meta["files"]
    if not isinstance(files, dict) or not all(isinstance(v, str) for v in files.values()):
        raise ArtifactError(f"{meta_path}: `files` must map file names to sha256 strings")
    return meta


def verify_files(artifact_dir: Path, meta: dict[str, Any]) -> None:
    files: dict[str, str] = meta["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"{artifact_dir / META_FILE}: no sha256 recorded for {name}")
    paths = {name: member(artifact_dir, name) for name in files}  # every name checked before any is read
    for name, expected in files.items():
        path = paths[name]
        if not path.is_file():
            raise ArtifactError(f"{path}: missing (listed in {META_FILE})")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactError(
                f"{path}: sha256 {actual[:12]}… does not match {expected[:12]}… in {META_FILE}; "
                "the file is corrupt or was changed after export"
            )


@dataclass
class Artifact:
    path: Path
    meta: dict[str, Any]
    model: torch.jit.ScriptModule
    tokenizer: Tokenizer
    ascii_ids: AsciiIds | None = None  # the tokenizer's ids for short ASCII texts, without it

    @property
    def labels(self) -> list[str]:
        return list(self.meta["labels"])

    @property
    def temperature(self) -> float:
        return float(self.meta["temperature"])

    @property
    def max_length(self) -> int:
        return max_length_of(self.tokenizer)

    def tokenize(self, texts: list[str]) -> tuple[list[list[int]], list[bool]]:
        return token_ids(self.tokenizer, texts, self.ascii_ids)

    @torch.inference_mode()
    def probabilities(self, ids: list[list[int]]) -> torch.Tensor:
        """Calibrated probabilities [B, C] for already tokenized texts (any order, any lengths)."""
        padded, lengths = pad(ids)
        logits = self.model(padded, lengths)
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def predict_proba(self, texts: list[str]) -> torch.Tensor:
        return self.probabilities(self.tokenize(texts)[0])


def check_allowed(model_path: Path, digest: str, allowed: frozenset[str]) -> None:
    if digest not in allowed:
        raise ArtifactError(
            f"{model_path}: sha256 {digest[:12]}… is not in the model allow-list "
            "(SENTIMENT_MODEL_ALLOWLIST); loading a model runs its code, so only listed models are loaded: "
            "add its digest (`sha256sum model.pt`) to the list if you trust where it came from"
        )


def load_artifact(
    path: str | Path, *, verify: bool = True, allowed: frozenset[str] | None = None
) -> Artifact:
    """Load and check an artifact; raises ArtifactError naming the offending file. `allowed`: the
    sha256 digests of the model files that may be loaded (`read_allowlist`), checked before the
    model's code is loaded; None: any."""
    artifact_dir = resolve_artifact_dir(path)
    meta = read_meta(artifact_dir)
    if verify:
        verify_files(artifact_dir, meta)
    model_path = member(artifact_dir, MODEL_FILE)
    if allowed is not None:
        check_allowed(model_path, meta["files"][MODEL_FILE] if verify else sha256_file(model_path), allowed)
    try:
        model = torch.jit.load(str(model_path), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError/ValueError with long C++ traces
        raise ArtifactError(f"{model_path}: not a loadable TorchScript file", detail=str(e)) from e
    model.eval()
    tokenizer_path = member(artifact_dir, TOKENIZER_FILE)
    try:
        tokenizer = load_tokenizer(tokenizer_path)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"{tokenizer_path}: cannot be loaded", detail=str(e)) from e
    vocab = tokenizer.get_vocab_size()
    emb = getattr(model, "embedding", None)
    if emb is not None and int(emb.weight.shape[0]) != vocab:
        raise ArtifactError(
            f"{artifact_dir / TOKENIZER_FILE}: vocabulary has {vocab} tokens but "
            f"{MODEL_FILE} embeds {int(emb.weight.shape[0])}; tokenizer and model are from different runs"
        )
    if meta.get("pad_id", PAD_ID) != PAD_ID or meta.get("unk_id", UNK_ID) != UNK_ID:
        raise ArtifactError(f"{artifact_dir / META_FILE}: pad_id/unk_id must be {PAD_ID}/{UNK_ID}")
    return Artifact(artifact_dir, meta, model, tokenizer, AsciiIds.mirroring(tokenizer))
