"""``saywhy serve``: the views of :mod:`saywhy.web.views` as a local web app (Starlette + uvicorn).

Routes (every one a stable GET URL, but uploading):

- ``/explain?image=ID`` or ``?upload=ID``, with ``&other=CLASS`` (the contrast, "why not")
  and ``&attribute=NAME`` (that attribute's heatmap); ``POST /upload`` (a form's file) answers
  with a redirect to ``/explain?upload=ID``; ``/random`` to a random test image;
- ``/browse?class=CLASS&page=N``, ``/classes?class=CLASS``, ``/search?q=A,B``, ``/debug?page=N``,
  ``/evaluation``;
- ``/media/ID`` the pictures of the pages (kept in memory by content id), ``/static/...`` the
  CSS and JavaScript; ``/api/explain`` (POST an image's bytes, or GET ``?image=ID``): the
  explanation as JSON.

Nothing in a request is ever used as a path: images are dataset ids, uploads and pictures
content ids, classes and attributes names the explainer checks. A request body over the
upload limit is refused before it is read whole. Errors are one line on the page (JSON
``{"error": ...}`` under ``/api``), never a traceback.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from saywhy.errors import SaywhyError
from saywhy.web.render import STATIC, render
from saywhy.web.uploads import MAX_UPLOAD_BYTES, UploadError
from saywhy.web.views import Site

log = logging.getLogger(__name__)
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the file
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes (by its Content-Length, or while
    it streams in), so a large upload never fills memory or disk."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await _too_large(scope, receive, send, self.limit)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise BodyTooLarge(self.limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge:
            await _too_large(scope, receive, send, self.limit)


class BodyTooLarge(UploadError):
    """A request body that grew past the limit while it streamed in (no Content-Length to check first)."""

    def __init__(self, limit: int):
        super().__init__(_too_large_line(limit), 413)


def _too_large_line(limit: int) -> str:
    return (f"the upload is larger than the limit of {limit - FORM_OVERHEAD:,} bytes: shrink the image "
            "or start the server with a larger --max-upload-mb")


async def _too_large(scope, receive, send, limit):
    from starlette.responses import HTMLResponse, JSONResponse

    message = _too_large_line(limit)
    if scope.get("path", "").startswith("/api/"):
        response = JSONResponse({"error": message}, status_code=413)
    else:
        response = HTMLResponse(render("error.html", title="error", error=message), status_code=413)
    await response(scope, receive, send)


def create_app(site: Site, max_upload_bytes: int = MAX_UPLOAD_BYTES, title: str = ""):
    """The Starlette app serving ``site``; ``max_upload_bytes`` caps an upload."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    label = title or site.explainer.metadata_.get("dataset_root", "")
    limit_text = f"{max_upload_bytes / 2**20:.0f} MB and {_pixels()} pixels"

    def page(template: str, current: str, compute: Callable[[Any], dict], **extra) -> Callable:
        def endpoint(request):
            try:
                context = compute(request.query_params)
                status, error = 200, None
            except Exception as exc:  # noqa: BLE001 - every failure becomes one line on the page
                context, status, error = None, *_status_and_line(exc)
            common = dict(title=current, current=current.capitalize(), explainer_name=label, max_upload=limit_text,
                          vocabulary=site.explainer.vocabulary_, classes=site.class_names(), **extra)
            try:
                html = render(template if error is None else "error.html", v=context, error=error, **common)
            except Exception as exc:  # noqa: BLE001 - a template that cannot show these values
                status, error = _status_and_line(exc)
                html = render("error.html", v=None, error=error, **common)
            return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)
        return endpoint

    def explain(params) -> dict | None:
        ref = site.ref(params.get("image"), params.get("upload"))
        return None if ref is None else site.explain(ref, params.get("other"), params.get("attribute"))

    async def upload(request):
        try:
            form = await request.form(max_files=1, max_fields=4)
            file = form.get("file")
            if file is None or isinstance(file, str):
                raise UploadError("no file in the form: choose an image file to upload")
            data = await file.read(max_upload_bytes + 1)
            key = await run_in_threadpool(site.uploads.add, data, max_upload_bytes)
        except Exception as exc:  # noqa: BLE001
            status, error = _status_and_line(exc)
            return HTMLResponse(render("error.html", title="explain", error=error, explainer_name=label),
                                status_code=status, headers=SECURITY_HEADERS)
        return RedirectResponse(site.links.page("explain", upload=key), status_code=303)

    def random_image(request):
        return RedirectResponse(site.links.page("explain", image=site.random_image()), status_code=303)

    def media(request):
        found = site.media.get(request.path_params["key"])
        if found is None:
            return Response("no such picture (pictures are kept in memory for a while: reload the page)",
                            status_code=404, media_type="text/plain")
        data, mime = found
        return Response(data, media_type=mime, headers={"cache-control": "private, max-age=3600", **SECURITY_HEADERS})

    async def api_explain(request):
        try:
            if request.method == "POST":
                data = await request.body()
                key = await run_in_threadpool(site.uploads.add, data, max_upload_bytes)
                ref = site.ref(upload=key)
            else:
                ref = site.ref(request.query_params.get("image"))
                if ref is None:
                    raise SaywhyError("give ?image=ID, or POST the image's bytes")
            return JSONResponse(await run_in_threadpool(site.explain_json, ref))
        except Exception as exc:  # noqa: BLE001
            status, error = _status_and_line(exc)
            return JSONResponse({"error": error}, status_code=status)

    def home(request):
        return RedirectResponse("/explain", status_code=303)

    routes = [
        Route("/", home),
        Route("/explain", page("explain.html", "explain", explain)),
        Route("/upload", upload, methods=["POST"]),
        Route("/random", random_image),
        Route("/browse", page("browse.html", "browse",
                              lambda p: site.browse(p.get("class"), _page_number(p)))),
        Route("/classes", page("classes.html", "classes", lambda p: site.classes(p.get("class")))),
        Route("/search", page("search.html", "search", lambda p: site.search(p.get("q")))),
        Route("/debug", page("debug.html", "debug", lambda p: site.debug(_page_number(p)))),
        Route("/evaluation", page("evaluation.html", "evaluation", lambda p: site.evaluation())),
        Route("/media/{key}", media),
        Route("/api/explain", api_explain, methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
    ]
    return Starlette(routes=routes, middleware=[Middleware(BodyLimit, limit=max_upload_bytes + FORM_OVERHEAD)])


def _page_number(params) -> int:
    text = params.get("page", "1")
    if not text.isdigit():
        raise SaywhyError(f"page must be a whole number, got {text!r}")
    return int(text)


def _pixels() -> str:
    from saywhy.data.images import max_pixels

    return f"{max_pixels():,}"


def _status_and_line(error: BaseException) -> tuple[int, str]:
    """The HTTP status and the one line to show for an exception (no traceback reaches the page)."""
    if isinstance(error, UploadError):
        return error.status, _one_line(str(error))
    if isinstance(error, SaywhyError):
        return 400, _one_line(str(error))
    name = type(error).__name__
    if name == "DecompressionBombError":
        return 413, f"an image is too large to open safely ({_one_line(str(error))}): shrink it"
    log.exception("internal error")
    return 500, _one_line(f"internal error, {name}: {error} (please report it)")


def _one_line(text: str) -> str:
    return " ".join(text.split())
