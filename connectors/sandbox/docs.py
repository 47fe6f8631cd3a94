"""Swagger UI served from the files fastapi-offline installs, never from a CDN.

The API's docs page and the sandbox's both come from here. It lives in the
sandbox because the sandbox imports nothing of ours but itself, while the API
may import connectors (DESIGN.md, "Which way imports point").
"""

from __future__ import annotations

import base64
import hashlib
import re
from importlib import resources

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

_INLINE_SCRIPT = re.compile(
    r"<script(?![^>]*\bsrc\s*=)[^>]*>(.*?)</script\s*>", re.DOTALL | re.IGNORECASE
)


def page_policy(html: str) -> str:
    """A Content-Security-Policy for an HTML page that runs this origin's code.

    Allows scripts and style sheets from this origin, each inline `<script>`
    of `html` by its SHA-256 (and no other inline script), fetches to this
    origin (the page reads the app's OpenAPI document), and images from this
    origin or `data:` URLs (Swagger UI's icons are `data:` SVGs in its style
    sheet). Inline style is allowed: Swagger UI writes style attributes, which
    no hash can allow, and with images, fonts and fetches held to this origin a
    style cannot send anything elsewhere. Nothing may frame the page, post a
    form from it, or change its base URL.
    """
    hashes = " ".join(
        "'sha256-"
        + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        + "'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src 'self' {hashes}; "
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def serve_docs(app: FastAPI, page: str, assets: str) -> None:
    """Serves Swagger UI for `app` at `page`, its script and style sheet at `assets`.

    The page's favicon is an empty `data:` URL and its policy is `page_policy`,
    so a browser showing it asks no other host for anything. Create `app` with
    `docs_url=None` and `redoc_url=None`: FastAPI's own pages load from a CDN.

    Raises:
        ValueError: `app` has no OpenAPI document for the page to show.
    """
    openapi_url = app.openapi_url
    if openapi_url is None:
        raise ValueError(f"the docs at {page} need an app with an openapi_url")
    files = resources.files("fastapi_offline") / "static"
    app.mount(assets, StaticFiles(directory=str(files)), name="docs-assets")

    @app.get(page, include_in_schema=False)
    def docs() -> HTMLResponse:
        answer = get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{assets}/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui.css",
            swagger_favicon_url="data:,",
        )
        policy = page_policy(bytes(answer.body).decode())
        answer.headers["Content-Security-Policy"] = policy
        return answer
