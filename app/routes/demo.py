"""GET /: the demo page (app/static/demo.html), one self-contained file: no build step, no CDN, no
remote fonts. It calls POST /predict with `"explain": true` from the browser, so it needs no server
state and works behind the optional API key (the page has a field for it).

The page is not part of the API, so it is left out of the OpenAPI document. It is served with a
Content-Security-Policy that allows only its own inline script and style (by hash) and requests to
this origin: a page that renders user text must not be able to run or load anything else."""

from __future__ import annotations

import base64
import hashlib
import re
from importlib.resources import files

from fastapi import APIRouter
from starlette.responses import Response

router = APIRouter(include_in_schema=False)

PAGE = files("app").joinpath("static", "demo.html").read_bytes()


def _hashes(tag: str) -> str:
    blocks = re.findall(rb"<%s>(.*?)</%s>" % (tag.encode(), tag.encode()), PAGE, re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'" for b in blocks)


CSP = (
    f"default-src 'none'; script-src {_hashes('script')}; style-src {_hashes('style')}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@router.get("/")
async def demo_page() -> Response:
    return Response(PAGE, media_type="text/html; charset=utf-8", headers=HEADERS)
