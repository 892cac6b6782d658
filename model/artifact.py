"""The artifact directory: the contract between training and serving.

    <dir>/model.pt            TorchScript: forward(ids int64[B,T], lengths int64[B]) -> logits[B,C]
    <dir>/tokenizer.json      `tokenizers` file, [PAD]=0, [UNK]=1, truncation = max length
    <dir>/meta.json           identity, labels, temperature, metrics, config, sha256 of every file
    <dir>/MODEL_CARD.md, training_curve.png, metrics.jsonl   for people

Loading verifies every sha256 listed in meta.json before anything is unpickled or
parsed, and only TorchScript and JSON are ever loaded (no pickle).
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
    """The artifact is missing, corrupt or incompatible; the message names the file."""


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
    meta_path = artifact_dir / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise ArtifactError(f"{meta_path}: missing") from e
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ArtifactError(f"{meta_path}: not valid JSON ({e})") from e
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
    return meta


def verify_files(artifact_dir: Path, meta: dict[str, Any]) -> None:
    files: dict[str, str] = meta["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"{artifact_dir / META_FILE}: no sha256 recorded for {name}")
    for name, expected in files.items():
        path = artifact_dir / name
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


def load_artifact(path: str | Path, *, verify: bool = True) -> Artifact:
    """Load and check an artifact; raises ArtifactError naming the offending file."""
    artifact_dir = resolve_artifact_dir(path)
    meta = read_meta(artifact_dir)
    if verify:
        verify_files(artifact_dir, meta)
    try:
        model = torch.jit.load(str(artifact_dir / MODEL_FILE), map_location="cpu")
    except Exception as e:  # torch raises RuntimeError/ValueError with long C++ traces
        raise ArtifactError(f"{artifact_dir / MODEL_FILE}: not a loadable TorchScript file ({e})") from e
    model.eval()
    try:
        tokenizer = load_tokenizer(artifact_dir / TOKENIZER_FILE)
    except ArtifactError:
        raise
    except Exception as e:
        raise ArtifactError(f"{artifact_dir / TOKENIZER_FILE}: cannot be loaded ({e})") from e
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
