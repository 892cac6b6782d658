"""/docs and /redoc work offline: the pages load nothing from another origin, and every script,
stylesheet and icon they name is served by the service itself with the right content type."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from starlette.testclient import TestClient

from app.main import create_app
from app.settings import Settings

BASE = "http://testserver"
CONTENT_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


class _Resources(HTMLParser):
    """The URLs a page makes the browser load: script src, link href (stylesheet, icon), img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src", "iframe": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


@pytest.fixture(scope="module")
def client() -> TestClient:
    # No lifespan (no `with`): the pages need no model.
    return TestClient(create_app(Settings()), base_url=BASE)


@pytest.mark.parametrize(("page", "marker"), [("/docs", "SwaggerUIBundle"), ("/redoc", "<redoc")])
def test_docs_pages_load_only_same_origin_assets(client: TestClient, page: str, marker: str) -> None:
    r = client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), r.text
    assert marker in r.text
    # nothing from another origin anywhere in the page, not even inside its inline script
    assert not re.search(r"(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", r.text), r.text
    parser = _Resources()
    parser.feed(r.text)
    assert len(parser.urls) >= 2, parser.urls  # the bundle and at least a stylesheet or the icon
    for url in parser.urls:
        absolute = urlsplit(urljoin(BASE + page, url))
        assert (absolute.scheme, absolute.netloc) == ("http", "testserver"), f"{page} loads {url}"
        asset = client.get(absolute.path)
        assert asset.status_code == 200, (url, asset.status_code)
        suffix = re.search(r"\.\w+$", absolute.path)
        assert suffix and suffix[0] in CONTENT_TYPES, url
        media_type = asset.headers["content-type"].split(";")[0].strip()
        assert media_type in CONTENT_TYPES[suffix[0]], (url, media_type)
        assert len(asset.content) > 100, url


def test_swagger_ui_points_at_the_openapi_document_and_sends_it_nowhere(client: TestClient) -> None:
    page = client.get("/docs").text
    assert "url: '/openapi.json'" in page
    assert '"validatorUrl": null' in page  # no badge from validator.swagger.io
    assert client.get("/openapi.json").status_code == 200


def test_docs_assets_are_not_in_the_api_schema_and_unknown_ones_are_404(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not [p for p in paths if p.startswith(("/docs", "/redoc"))], list(paths)
    r = client.get("/docs/assets/no-such-file.js")
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text


def test_docs_urls_follow_the_root_path() -> None:
    """Behind a path prefix (uvicorn --root-path, or a proxy that strips it), the page's URLs keep it."""
    with_prefix = TestClient(create_app(Settings()), base_url=BASE, root_path="/sentiment")
    page = with_prefix.get("/docs").text
    assert "/sentiment/docs/assets/swagger-ui-bundle.js" in page
    assert "url: '/sentiment/openapi.json'" in page
