"""POST /predict: classify one text or many."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import APIRouter, Body, Request
from starlette.responses import Response
from starlette.types import Receive

from app import long_text
from app.batcher import BatchFailed, Closed, Job, Overloaded
from app.deps import ReadyServiceDep
from app.errors import ApiError, request_id
from app.explain import explain_predictions
from app.openapi import error_responses
from app.responses import OrjsonResponse
from app.schemas import BATCH_EXAMPLE, SINGLE_EXAMPLE, PredictRequest, PredictResponse
from app.service import Service

router = APIRouter(tags=["predict"])
_SURROGATE = re.compile("[\ud800-\udfff]")

_EXAMPLES = {
    "one text": {"summary": "one text", "value": SINGLE_EXAMPLE},
    "several texts": {"summary": "several texts, answered in order", "value": BATCH_EXAMPLE},
    "explained": {
        "summary": "with token contributions",
        "value": {**SINGLE_EXAMPLE, "explain": True},
    },
}


def check_limits(service: Service, body: PredictRequest, texts: list[str]) -> None:
    """Per-request limits from the settings (pydantic checks types; these depend on configuration)."""
    s = service.settings
    if len(texts) > s.max_texts_per_request:
        raise ApiError(
            422,
            "validation_error",
            f"body.texts: {len(texts)} texts given; at most {s.max_texts_per_request} per request "
            f"(SENTIMENT_MAX_TEXTS_PER_REQUEST={s.max_texts_per_request}); split them over several requests",
            details=[{"loc": ["body", "texts"], "msg": "too many texts", "type": "too_many_texts"}],
        )
    problems: list[tuple[list[str | int], str, str]] = []
    limit = s.max_chars_per_text
    for i, text in enumerate(texts):
        loc: list[str | int] = ["body", "text"] if body.text is not None else ["body", "texts", i]
        if len(text) > limit:
            msg = f"{len(text)} characters; at most {limit} per text (SENTIMENT_MAX_CHARS_PER_TEXT={limit})"
            problems.append((loc, msg, "text_too_long"))
        elif not text or text.isspace():
            problems.append((loc, "the text is empty or only whitespace; send some words", "empty_text"))
        elif not text.isascii() and _SURROGATE.search(text):
            # A "\ud800" escape is valid JSON but not Unicode; the tokenizer would raise (a 500).
            msg = "contains an unpaired surrogate (a \\ud800-\\udfff escape); send valid Unicode text"
            problems.append((loc, msg, "invalid_unicode"))
    if problems:
        raise ApiError(
            422,
            "validation_error",
            "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg, _ in problems),
            details=[{"loc": loc, "msg": msg, "type": kind} for loc, msg, kind in problems],
        )


async def _watch_disconnect(receive: Receive, job: Job) -> None:
    # After the body is read, receive() only returns once the client has gone (or the response is
    # complete, by when this task is cancelled): drop the job so its texts never reach the model.
    while (await receive())["type"] != "http.disconnect":
        pass
    job.drop()


async def _await_job(request: Request, service: Service, job: Job) -> list[list[float]]:
    timeout = service.settings.request_timeout_s
    watcher = asyncio.get_running_loop().create_task(_watch_disconnect(request.receive, job))
    try:
        async with asyncio.timeout(timeout):
            return await job.future
    except TimeoutError:
        job.drop()
        raise ApiError(
            504,
            "timeout",
            f"no result within {timeout:g} s (SENTIMENT_REQUEST_TIMEOUT_S={timeout:g}); the server is busy, "
            "retry later",
        ) from None
    except asyncio.CancelledError:
        job.drop()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # the server is cancelling us: not ours to swallow
        # 499 (client closed request, as nginx logs it): nobody receives it, but logs and metrics do.
        raise ApiError(
            499, "client_closed_request", "the client disconnected before the result was ready"
        ) from None
    except BatchFailed as e:
        raise ApiError(
            500,
            "internal_error",
            f"inference failed for the batch holding this request (batch {e.batch_id}); "
            f"quote id {request_id(request.scope)} when reporting it",
        ) from e
    except Closed as e:
        raise ApiError(
            503, "shutting_down", str(e), headers={"Retry-After": str(service.settings.retry_after_s)}
        ) from e
    finally:
        watcher.cancel()


@router.post(
    "/predict",
    response_model=PredictResponse,
    summary="Classify the sentiment of one or more texts",
    description="Send one text as `text` or several as `texts`; the answer always holds a list of "
    "predictions in input order, each with the label, its calibrated probability, the probability of "
    "every label, whether the text was truncated and how many chunks a long text was scored in. Options: "
    "`long_text` (`chunk` scores a long text in pieces, `truncate` only its start), `sentences` (a score "
    "per sentence) and `explain` (a signed contribution per token, by occlusion). Texts from concurrent "
    "requests are batched together on the server.",
    response_description="one prediction per text, in input order",
    responses=error_responses(413, 422, 500, 503, 504),
)
async def predict(
    request: Request,
    body: Annotated[PredictRequest, Body(openapi_examples=_EXAMPLES)],
    service: ReadyServiceDep,
) -> Response:
    texts = body.as_list()
    check_limits(service, body, texts)
    s = service.settings
    # Read once: a reload may swap the model while this request waits; it is scored and labelled by
    # the model that tokenized it.
    active = service.active
    assert active is not None
    # Tokenize here, not in the batch worker: both cost the same CPU per text (within 2%, see
    # bench/results/tokenize_placement.md), and here the batcher gets the exact token counts its
    # budget, length sort and split need, while the inference thread only runs forward passes.
    # A text becomes one piece, or several (chunks of a long text, sentences): one job for all.
    plan = long_text.plan(
        active.artifact.tokenizer,
        texts,
        max_length=active.artifact.max_length,
        mode=body.long_text or s.long_text,
        sentences=body.sentences,
        max_chunks=s.max_chunks_per_text,
    )
    long_text.check_pieces(plan, s.max_queue_texts)
    try:
        job = service.batcher.submit(plan.ids, active.infer)  # type: ignore[union-attr]
    except Overloaded as e:
        raise ApiError(
            503,
            "overloaded",
            f"the server is at capacity ({e}; SENTIMENT_MAX_QUEUE_TEXTS={s.max_queue_texts}); retry after "
            f"{s.retry_after_s} s",
            headers={"Retry-After": str(s.retry_after_s)},
        ) from None
    except Closed:
        raise ApiError(
            503,
            "shutting_down",
            "the server is shutting down; retry on another instance",
            headers={"Retry-After": str(service.settings.retry_after_s)},
        ) from None
    rows = await _await_job(request, service, job)
    state = request.scope["state"]
    state["batch_ids"] = job.batch_ids
    state["texts"] = len(texts)
    results = long_text.reassemble(plan, rows)
    out = service.render(
        [r.row for r in results],
        [r.truncated for r in results],
        model=active,
        chunks=[r.chunks for r in results],
        extra=long_text.sentence_fields(results, texts, active.labels) if body.sentences else None,
    )
    if body.explain:  # after the plain rows: occlusion sequences go through their own lane (app/explain.py)
        await explain_predictions(request, service, texts, plan, out["predictions"], _await_job, active)
    return OrjsonResponse(out)
