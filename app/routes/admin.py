"""Administration: POST /admin/reload swaps the serving model without downtime (core/model_swap.py).

Admin routes need the API key. Without SENTIMENT_API_KEY they are off (403): a source-address rule
such as "localhost only" would open them to everyone behind a reverse proxy on the same host."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import Response

from app.deps import ReadyEngineDep
from app.errors import ApiError, request_id
from app.openapi import error_responses
from app.responses import OrjsonResponse
from app.schemas import ErrorResponse, ModelIdentity, error_example
from core.model_swap import reload_model

router = APIRouter(prefix="/admin", tags=["admin"])

ADMIN_DISABLED_MESSAGE = (
    "the admin endpoints are off because no API key is configured; set SENTIMENT_API_KEY and send "
    "'Authorization: Bearer <key>'"
)


async def admin_disabled() -> None:
    """Attached instead of the API-key check when no key is configured."""
    raise ApiError(403, "admin_disabled", ADMIN_DISABLED_MESSAGE)


def _doc(status: int, description: str, examples: dict[str, tuple[str, str]]) -> dict[int | str, Any]:
    content = {k: {"value": error_example(code, msg)} for k, (code, msg) in examples.items()}
    return {
        status: {
            "model": ErrorResponse,
            "description": description,
            "content": {"application/json": {"examples": content}},
        }
    }


ADMIN_DISABLED_RESPONSE = _doc(
    403,
    "SENTIMENT_API_KEY is not set, so the admin endpoints are off.",
    {"admin_disabled": ("admin_disabled", ADMIN_DISABLED_MESSAGE)},
)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{}, {"model_dir": "sst2-20250102-090000"}]},
    )

    model_dir: str | None = Field(
        None,
        min_length=1,
        max_length=4096,
        description="the artifact folder to serve, relative to the model root (SENTIMENT_MODEL_DIR, or its "
        "parent when it is itself an artifact) or absolute inside it; a folder holding a `latest` pointer "
        "also works. Omitted: SENTIMENT_MODEL_DIR, with its `latest` pointer resolved again now.",
        examples=["sst2-20250102-090000"],
    )


class ReloadSeconds(BaseModel):
    load: float = Field(description="verifying checksums and loading the artifact", examples=[1.2])
    smoke: float = Field(description="the smoke prediction", examples=[0.004])
    warmup: float = Field(
        description="running the batch shapes (0 with SENTIMENT_WARMUP=false)", examples=[2.5]
    )


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "model": {"name": "sentiment-lstm-sst2", "version": "sst2-20250102-090000"},
                    "previous": {"name": "sentiment-lstm-sst2", "version": "sst2-20250101-120000"},
                    "changed": True,
                    "path": "/models/sst2-20250102-090000",
                    "seconds": {"load": 1.2, "smoke": 0.004, "warmup": 2.5},
                }
            ]
        }
    )

    model: ModelIdentity = Field(description="the model serving now")
    previous: ModelIdentity = Field(description="the model that served before this reload")
    changed: bool = Field(
        description="false when that artifact (same folder, same checksums) was already serving: nothing "
        "was loaded",
        examples=[True],
    )
    path: str = Field(
        description="the artifact folder loaded, symlinks resolved", examples=["/models/sst2-20250102-090000"]
    )
    seconds: ReloadSeconds = Field(description="time spent in each step; requests were served throughout")


_ARTIFACT_ERRORS = _doc(
    422,
    "The request body is invalid (a path outside the model root, once symlinks are followed, or one no file "
    "system takes), or the artifact cannot be served: missing, corrupt (a sha256 differs), a file leading "
    "out of its folder, a model.pt not in SENTIMENT_MODEL_ALLOWLIST, an unknown schema version, a tokenizer "
    "from another run, or a failing smoke prediction. `message` names the file (relative to the model "
    "root) and the problem; the current model keeps serving.",
    {
        "corrupt": (
            "invalid_artifact",
            "sst2-2/model.pt: sha256 3f2a9c1e7b4d… does not match 9c1e7b4d3f2a… in meta.json; "
            "the file is corrupt or was changed after export; the current model keeps serving",
        ),
        "schema": (
            "invalid_artifact",
            "sst2-2/meta.json: schema_version 7 is not supported (this code reads 1); the current "
            "model keeps serving",
        ),
        "not_allowed": (
            "invalid_artifact",
            "sst2-2/model.pt: sha256 3f2a9c1e7b4d… is not in the model allow-list "
            "(SENTIMENT_MODEL_ALLOWLIST); loading a model runs its code, so only listed models are loaded: "
            "add its digest (`sha256sum model.pt`) to the list if you trust where it came from; the current "
            "model keeps serving",
        ),
        "outside_root": (
            "validation_error",
            "body.model_dir: '/etc' is outside the model root; give an artifact folder inside the model "
            "root (the folder of SENTIMENT_MODEL_DIR), relative to it or absolute",
        ),
    },
)
_INCOMPATIBLE = _doc(
    409,
    "The artifact's labels differ from the serving model's; changing labels needs a restart.",
    {
        "labels": (
            "incompatible_artifact",
            "x/meta.json: labels ['neg', 'pos'] differ from the serving model's ['negative', "
            "'positive']; clients rely on the labels, so changing them needs a restart. The current model "
            "keeps serving",
        )
    },
)


@router.post(
    "/reload",
    response_model=ReloadResponse,
    summary="Swap the serving model without downtime",
    description="Loads an artifact beside the serving model (checksums verified), runs a smoke prediction "
    "and the warm-up, then swaps between batches: requests in flight finish with the model that tokenized "
    "them, later ones get the new model, none fails. Responses and /info name the version serving them. "
    "Reloads run one at a time. Needs the API key; without SENTIMENT_API_KEY it answers 403. With several "
    "workers per server, only the worker that answers reloads.",
    response_description="the model now serving and the one before it",
    responses={**_INCOMPATIBLE, **_ARTIFACT_ERRORS, **error_responses(413, 500, 503)},
)
async def reload(
    engine: ReadyEngineDep,
    request: Request,
    body: Annotated[ReloadRequest | None, Body()] = None,
) -> Response:
    # Who asked, for the reload's log line: the peer (behind a proxy, its X-Forwarded-For as given; the
    # JSON log line escapes whatever it holds) and the request id.
    client = request.client.host if request.client else "-"
    forwarded = request.headers.get("x-forwarded-for")
    who = f"{client} (forwarded for {forwarded[:200]})" if forwarded else client
    who += f", request {request_id(request.scope)}"
    return OrjsonResponse(await reload_model(engine, body.model_dir if body is not None else None, who))
