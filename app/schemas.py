"""Request and response bodies. Every field is described and every model carries an example,
so /docs and /openapi.json document the API completely."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.engine import Prediction as PredictionResult
from core.engine import Predictions

# --- /predict -------------------------------------------------------------------------------------

SINGLE_EXAMPLE = {"text": "A gorgeous, witty, seductive movie."}
BATCH_EXAMPLE = {
    "texts": [
        "A gorgeous, witty, seductive movie.",
        "The plot is nothing but boilerplate clichés from start to finish.",
    ]
}


# "Exactly one of text and texts" for schema validators and fuzzers, matching `_exactly_one` below: a
# branch matches when its field is present and not null (an explicit null counts as absent), and
# `oneOf` rejects a body that matches both branches or neither. The full field schemas stay under
# `properties`, so /docs still documents every field once.
EXACTLY_ONE_OF_TEXT_AND_TEXTS: list[dict[str, Any]] = [
    {"title": "one text", "required": ["text"], "properties": {"text": {"type": "string"}}},
    {"title": "several texts", "required": ["texts"], "properties": {"texts": {"type": "array"}}},
]


class PredictRequest(BaseModel):
    """One text (`text`) or several (`texts`); exactly one of the two."""

    model_config = ConfigDict(
        extra="forbid",
        # No coercion: the server accepts exactly what the schema says (`"explain": 1` or `"true"` is
        # not a boolean), so schema-driven clients and fuzzers agree with it.
        strict=True,
        json_schema_extra={
            "examples": [SINGLE_EXAMPLE, BATCH_EXAMPLE],
            "oneOf": EXACTLY_ONE_OF_TEXT_AND_TEXTS,
        },
    )

    text: str | None = Field(
        None,
        description="One text to classify. Must contain a non-whitespace character.",
        examples=["A gorgeous, witty, seductive movie."],
    )
    texts: list[str] | None = Field(
        None,
        min_length=1,
        description="Several texts to classify; predictions come back in the same order.",
        examples=[BATCH_EXAMPLE["texts"]],
    )
    long_text: Literal["truncate", "chunk"] | None = Field(
        None,
        description="What to do with a text longer than the model's maximum length (`max_length` in /info): "
        "`truncate` scores only its first max_length tokens; `chunk` splits it on sentence boundaries into "
        "pieces of at most max_length tokens, scores them all and combines them: the mean of their "
        "calibrated logits weighted by token count. Omitted: the server's default (SENTIMENT_LONG_TEXT, "
        "shown in /info).",
        examples=["chunk"],
    )
    sentences: bool = Field(
        False,
        description="Also score every sentence of the scored part of each text on its own: each prediction "
        "then has a `sentences` list with character offsets into the text.",
        examples=[True],
    )
    explain: bool = Field(
        False,
        description="Also explain each prediction: every prediction then has an `explanation` with the "
        "contribution of each token to the predicted label, by occlusion (the first "
        "SENTIMENT_MAX_EXPLAIN_TOKENS tokens of each text; each explained token costs one more model "
        "sequence, so explained requests are slower and are queued separately).",
        examples=[True],
    )

    @model_validator(mode="after")
    def _exactly_one(self) -> PredictRequest:
        if self.text is None and self.texts is None:
            raise ValueError('give "text" (one string) or "texts" (a list of strings)')
        if self.text is not None and self.texts is not None:
            raise ValueError('give either "text" or "texts", not both')
        return self

    def as_list(self) -> list[str]:
        return [self.text] if self.text is not None else self.texts  # type: ignore[return-value]


class ModelIdentity(BaseModel):
    name: str = Field(
        description="model name from the artifact's meta.json", examples=["sentiment-lstm-sst2"]
    )
    version: str = Field(description="artifact version (its run name)", examples=["sst2-20250101-120000"])


class SentenceScore(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "text": "The plot is a mess.",
                    "start": 22,
                    "end": 41,
                    "label": "negative",
                    "score": 0.93,
                    "polarity": -0.91,
                    "probabilities": {"negative": 0.93, "neutral": 0.05, "positive": 0.02},
                }
            ]
        }
    )

    text: str = Field(description="the sentence as it appears in the text", examples=["The plot is a mess."])
    start: int = Field(ge=0, description="offset of its first character in the text (Python/Unicode code "
                       "points, as `text[start:end]`)", examples=[22])  # fmt: skip
    end: int = Field(ge=0, description="offset just after its last character", examples=[41])
    label: str = Field(description="the sentence's most probable label", examples=["negative"])
    score: float = Field(ge=0, le=1, description="calibrated probability of `label`", examples=[0.93])
    polarity: float | None = Field(
        ge=-1, le=1, description="p(positive) - p(negative), as the prediction's `polarity`", examples=[-0.9]
    )
    probabilities: dict[str, float] = Field(
        description="calibrated probability of every label",
        examples=[{"negative": 0.93, "neutral": 0.05, "positive": 0.02}],
    )


class ExplainedToken(BaseModel):
    token: str = Field(
        description="the token as the model read it: normalised and lower-cased, `[UNK]` for a word outside "
        "its vocabulary",
        examples=["great"],
    )
    start: int = Field(ge=0, description="offset of the token's first character in the original text "
                       "(Unicode code points, as `text[start:end]`)", examples=[10])  # fmt: skip
    end: int = Field(ge=0, description="offset just after its last character", examples=[15])
    score: float = Field(
        description="signed contribution to the probability of `target`: p(target | text) − p(target | text "
        "without this token), p scored as the prediction was (with `long_text: chunk`, the token is deleted "
        "from its chunk and the chunks are combined again). Positive: the token pushed the prediction "
        "towards `target`",
        examples=[0.41],
    )


class Explanation(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "method": "occlusion",
                    "target": "positive",
                    "tokens": [
                        {"token": "a", "start": 0, "end": 1, "score": 0.002},
                        {"token": "great", "start": 2, "end": 7, "score": 0.41},
                        {"token": "film", "start": 8, "end": 12, "score": -0.01},
                    ],
                    "explained_tokens": 3,
                    "total_tokens": 3,
                }
            ]
        }
    )

    method: Literal["occlusion"] = Field(
        description="how scores are computed: `occlusion` deletes one token at a time and re-scores the text",
        examples=["occlusion"],
    )
    target: str = Field(
        description="the label explained: the prediction's `label`",
        examples=["positive"],
    )
    tokens: list[ExplainedToken] = Field(description="the explained tokens in text order")
    explained_tokens: int = Field(ge=0, description="how many tokens are explained (the length of `tokens`)",
                                  examples=[3])  # fmt: skip
    total_tokens: int = Field(
        ge=0,
        description="tokens in the whole text; when larger than `explained_tokens`, the later tokens are not "
        "explained (beyond SENTIMENT_MAX_EXPLAIN_TOKENS, the model's max length or the scored part)",
        examples=[3],
    )


class Prediction(BaseModel):
    label: str = Field(
        description="the most probable of the model's labels (`/info` lists them; the default model's are "
        "negative, neutral and positive), or `unknown` when the model cannot read the text (see "
        "`warnings`)",
        examples=["positive"],
    )
    score: float | None = Field(
        description="calibrated probability of `label` (temperature-scaled softmax); null when `label` is "
        "`unknown`",
        ge=0,
        le=1,
        examples=[0.97],
    )
    polarity: float | None = Field(
        description="one signed number for ranking and charts, in [-1, 1]: p(positive) - p(negative) (for "
        "five classes, the expected rating rescaled); null when `label` is `unknown` or the model's labels "
        "are not sentiment names",
        ge=-1,
        le=1,
        examples=[0.95],
    )
    warnings: list[Literal["unreadable"]] = Field(
        description="`unreadable`: too few of the text's words are known to the model (gibberish, or a "
        "language it was not trained on), so it gives no label (`unknown`) rather than a guess; the "
        "`probabilities` are still the model's. Empty for a normal prediction",
        examples=[[]],
    )
    probabilities: dict[str, float] = Field(
        description="calibrated probability of every label; they sum to 1",
        examples=[{"negative": 0.01, "neutral": 0.02, "positive": 0.97}],
    )
    truncated: bool = Field(
        description="true when part of the text was not scored: it was longer than the model's maximum "
        "length in `truncate` mode, or needed more than SENTIMENT_MAX_CHUNKS_PER_TEXT chunks in `chunk` mode",
        examples=[False],
    )
    chunks: int = Field(
        ge=1,
        description="how many pieces of at most max_length tokens were scored and averaged for this text "
        "(1 unless `long_text` is `chunk` and the text is longer than max_length)",
        examples=[1],
    )
    sentences: list[SentenceScore] | None = Field(
        None,
        description='only with `"sentences": true`: every sentence of the scored part of the text, in '
        "order (a sentence longer than max_length tokens is split into several entries)",
    )
    explanation: Explanation | None = Field(
        None,
        description='only with `"explain": true`: the contribution of each token to the predicted label',
    )


def render_predictions(result: Predictions) -> dict[str, Any]:
    """The engine's results as the PredictResponse body, in plain dicts for orjson (no pydantic per
    request; tests/test_engine.py checks the body against PredictResponse)."""
    labels = result.model.labels
    return {
        "model": result.model.identity,
        "predictions": [_prediction(p, labels) for p in result.predictions],
    }


def _prediction(p: PredictionResult, labels: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "label": p.label,
        "score": p.score,
        "polarity": p.polarity,
        "probabilities": dict(zip(labels, p.probabilities, strict=True)),
        "truncated": p.truncated,
        "chunks": p.chunks,
        "warnings": p.warnings,
    }
    if p.sentences is not None:
        out["sentences"] = [
            {
                "text": s.text,
                "start": s.start,
                "end": s.end,
                "label": s.label,
                "score": s.score,
                "polarity": s.polarity,
                "probabilities": dict(zip(labels, s.probabilities, strict=True)),
            }
            for s in p.sentences
        ]
    if p.explanation is not None:
        e = p.explanation
        out["explanation"] = {
            "method": e.method,
            "target": labels[e.target],
            "tokens": [
                {"token": t.token, "start": t.start, "end": t.end, "score": t.score} for t in e.tokens
            ],
            "explained_tokens": len(e.tokens),
            "total_tokens": e.total_tokens,
        }
    return out


class PredictResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "sentiment-lstm-sst2", "version": "sst2-20250101-120000"},
                    "predictions": [
                        {
                            "label": "positive",
                            "score": 0.9712,
                            "polarity": 0.9603,
                            "probabilities": {"negative": 0.0109, "neutral": 0.0179, "positive": 0.9712},
                            "truncated": False,
                            "chunks": 1,
                            "warnings": [],
                        },
                        {
                            "label": "unknown",
                            "score": None,
                            "polarity": None,
                            "probabilities": {"negative": 0.2, "neutral": 0.5, "positive": 0.3},
                            "truncated": False,
                            "chunks": 1,
                            "warnings": ["unreadable"],
                        },
                    ],
                }
            ]
        }
    )

    model: ModelIdentity = Field(description="the model that produced the predictions")
    predictions: list[Prediction] = Field(description="one prediction per input text, in input order")


# --- errors ---------------------------------------------------------------------------------------


class ErrorDetail(BaseModel):
    loc: list[str | int] = Field(
        description="where in the request the problem is", examples=[["body", "texts", 0]]
    )
    msg: str = Field(description="what is wrong", examples=["String should have at least 1 character"])
    type: str = Field(description="machine-readable kind of problem", examples=["string_too_short"])


class Error(BaseModel):
    code: str = Field(
        description="machine-readable error kind: validation_error, payload_too_large, not_found, "
        "method_not_allowed, overloaded, not_ready, shutting_down, timeout, internal_error",
        examples=["validation_error"],
    )
    message: str = Field(
        description="what went wrong and how to fix it",
        examples=["body.texts: 80 texts given; at most 64 per request (SENTIMENT_MAX_TEXTS_PER_REQUEST=64)"],
    )
    id: str = Field(description="request id; quote it when reporting a problem (it is in the logs)")
    details: list[ErrorDetail] | None = Field(
        None, description="for validation errors: one entry per problem found"
    )


class ErrorResponse(BaseModel):
    """The body of every 4xx and 5xx response."""

    error: Error = Field(description="what went wrong")


def error_example(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "id": "3f2a9c1e7b4d4e0a"}}


# --- ops ------------------------------------------------------------------------------------------


class HealthResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "ok"}]})
    status: str = Field(description="always `ok` while the process can answer", examples=["ok"])


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"ready": True, "status": "ready"}, {"ready": False, "status": "draining"}]
        }
    )
    ready: bool = Field(description="whether /predict is being served")
    status: str = Field(description="starting, ready or draining", examples=["ready"])


class Limits(BaseModel):
    max_texts_per_request: int = Field(description="most texts in one request")
    max_chars_per_text: int = Field(description="most characters in one text")
    max_body_bytes: int = Field(description="largest accepted request body in bytes")
    request_timeout_s: float = Field(description="requests waiting longer get 504")
    long_text: str = Field(description="default `long_text` mode: truncate or chunk", examples=["chunk"])
    max_chunks_per_text: int = Field(description="most chunks scored per text in chunk mode")
    max_explain_sequences: int = Field(
        description="most sequences one explain request may cost (one per explained token); more get 422"
    )


class BatchingSettings(BaseModel):
    max_batch_size: int = Field(description="most texts per forward pass")
    max_batch_tokens: int = Field(
        description="most tokens per forward pass (a quarter of them for pieces of large requests)"
    )
    max_wait_ms: float = Field(description="how long a non-full batch may wait for more texts")
    max_queue_texts: int = Field(description="queue capacity in texts; beyond it requests get 503")
    max_bulk_queue_texts: int = Field(
        description="capacity of the lane of large requests (more pieces than a request may have texts: "
        "chunks, sentences, explanations), in pieces; beyond it such requests get 503"
    )
    torch_threads: int = Field(description="intra-op threads of the backend used for inference")


class Backend(BaseModel):
    name: Literal["torchscript", "onnxruntime"] = Field(
        description="where the forward passes run: the artifact's TorchScript model, or ONNX Runtime on a "
        "graph derived from its weights and checked against it at load"
    )
    requested: Literal["auto", "torchscript", "onnxruntime"] = Field(description="SENTIMENT_BACKEND")


class InfoResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "sentiment-lstm-sst2", "version": "sst2-20250101-120000"},
                    "labels": ["negative", "neutral", "positive"],
                    "max_length": 128,
                    "temperature": 1.31,
                    "created_at": "2025-01-01T12:00:00+00:00",
                    "metrics": {"test": {"n": 1821, "accuracy": 0.85, "macro_f1": 0.85}},
                    "limits": {
                        "max_texts_per_request": 64,
                        "max_chars_per_text": 32768,
                        "max_body_bytes": 1048576,
                        "request_timeout_s": 30.0,
                        "long_text": "chunk",
                        "max_chunks_per_text": 16,
                        "max_explain_sequences": 2048,
                    },
                    "batching": {
                        "max_batch_size": 64,
                        "max_batch_tokens": 8192,
                        "max_wait_ms": 0.0,
                        "max_queue_texts": 1024,
                        "max_bulk_queue_texts": 2048,
                        "torch_threads": 1,
                    },
                    "backend": {"name": "onnxruntime", "requested": "auto"},
                }
            ]
        }
    )

    model: ModelIdentity = Field(description="the loaded model")
    labels: list[str] = Field(description="the labels the model predicts, in output order")
    max_length: int = Field(
        description="most tokens the model reads in one sequence; a longer text is scored in chunks of at "
        "most this many (`long_text: chunk`, the default) or only its first max_length tokens (`truncate`)"
    )
    temperature: float = Field(description="calibration temperature applied to the logits")
    created_at: str | None = Field(None, description="when the artifact was trained")
    metrics: dict[str, Any] = Field(description="evaluation metrics recorded in the artifact's meta.json")
    limits: Limits = Field(description="request limits")
    batching: BatchingSettings = Field(description="dynamic batching settings")
    backend: Backend = Field(description="the inference backend in use (SENTIMENT_BACKEND)")
