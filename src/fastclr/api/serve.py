"""``fastclr serve``: an HTTP embedding and search service over an index (FastAPI + uvicorn).

Endpoints (OpenAPI schema at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /embed``: multipart ``image`` -> ``{"vector": [...], "dim": d}``, the L2-normalised vector the index
  stores for that image (same encoder, same evaluation transform, same bad-image handling);
- ``POST /search``: multipart ``image`` or form field ``id`` (an indexed image), ``k`` -> the neighbours with
  cosine scores (an id leaves itself out);
- ``POST /explain``: ``id`` of an indexed image and the query (``image`` or ``query_id``) -> a PNG of the query
  with the map of the regions that make it similar to that image (occlusion, :mod:`fastclr.eval.explain`);
- ``GET /thumb/{id}``: a thumbnail (PNG, at most 128 px) of an indexed image. Only ids of the index resolve,
  each to its own file (or data set row): no other path on the machine can be asked for;
- ``GET /health``: status and the index's facts; ``GET /``: a self-contained page (drop or pick an image,
  see its neighbours as thumbnails with scores and the explanation overlay).

The service follows its index folder: when ``fastclr index --update`` (or :meth:`fastclr.Index.save`) rewrites
it, the next request finds a new ``meta.json`` (written last, by an atomic rename) and loads the new vectors;
requests already running finish on the ones they started with. An index rewritten by another encoder is not
taken (the service keeps the one it has, with a warning): restart it for that.

It listens on the loopback interface by default. Binding any other address needs a token (``--token`` or
``$FASTCLR_SERVE_TOKEN``): every endpoint that reads the index then wants ``Authorization: Bearer TOKEN``
(the page asks for it, or takes it from ``#token=...`` in its address); ``/``, ``/health`` and the docs stay
open. Request bodies are capped (``max_upload_mb``, 413 past it, counted as the bytes arrive, whatever the
headers claim); an upload that is not a readable image gets a 400 JSON error, never a 500 or a traceback.

FastAPI reads the handlers' annotations at run time, so this module does not postpone them (no
``from __future__ import annotations``).
"""

import functools
import hmac
import io
import ipaddress
import json
import os
import socket
import threading
from typing import Any

import numpy as np
import torch
from PIL import Image

from fastclr import __version__, log
from fastclr.api.embedding import embed
from fastclr.api.index import Index
from fastclr.api.page import PAGE
from fastclr.data import datasets, specs
from fastclr.data.images import BadImage, decode, fit, open_rgb
from fastclr.errors import UserError
from fastclr.eval import explain
from fastclr.eval import index as store

MAX_UPLOAD_MB = 10.0
THUMB = 128
TOKEN_ENV = "FASTCLR_SERVE_TOKEN"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request whose body passes ``limit`` bytes gets 413 (JSON), checked on the declared
    Content-Length and again on the bytes as they arrive (chunked uploads declare none)."""

    def __init__(self, app: Any, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen, over, started = 0, False, False

        async def counted() -> dict:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True
                    raise _TooLarge  # the application's body parser turns it into its own error: replaced below
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            if over:  # whatever the application answers to the cut-off body, the client gets 413
                if message["type"] == "http.response.start" and not started:
                    started = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            pass
        if over and not started:
            await self._refuse(send)

    async def _refuse(self, send: Any) -> None:
        body = json.dumps({"detail": f"upload larger than {self.limit} bytes"}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class Images:
    """The pixels behind each id of an index: its file, or the row of an in-memory data set (digits, cifar10,
    prepared:DIR) loaded on first use. Only ids of the index resolve."""

    def __init__(self, index: Index):
        self.index = index
        self._rows: dict[str, tuple[Any, int]] | None = None
        self._lock = threading.Lock()

    def _data_rows(self) -> dict[str, tuple[Any, int]]:
        with self._lock:
            if self._rows is None:
                self._rows = {}
                size = int((self.index.store.meta.get("encoder") or {}).get("image_size") or 32)
                for spec in self.index.store.meta.get("data", []):
                    if specs.parse(spec)[0] not in ("folder", "list"):
                        images = datasets.load(spec, size).pretrain
                        for i, name in enumerate(getattr(images, "ids", [])):
                            self._rows[str(name)] = (images, i)
            return self._rows

    def image(self, id: str) -> Image.Image:
        """The RGB image of an indexed id; KeyError for an id not in the index, BadImage if it cannot be read."""
        if id not in self.index.store.rows:
            raise KeyError(id)
        if os.path.isabs(id):
            return open_rgb(id, draft=2 * THUMB)[0]
        found = self._data_rows().get(id)
        if found is None:
            raise BadImage(id, "no image behind this id (its data set is not readable here)")
        images, i = found
        return Image.fromarray(np.asarray(images.images[i]).transpose(1, 2, 0))

    def pixels(self, id: str, size: int) -> np.ndarray:
        """The encoder's input pixels uint8 [3, S, S] of an indexed id (as when it was indexed)."""
        if os.path.isabs(id) and id in self.index.store.rows:
            return decode(id, size)[0]
        return fit(self.image(id), size)


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, "PNG", optimize=False)
    return out.getvalue()


def _http(code: int, detail: str) -> Exception:
    from fastapi import HTTPException

    return HTTPException(code, detail)


class Service:
    """What the endpoints do, over one index: decode an upload, embed it, search, explain, make thumbnails.
    Every error is an HTTP error with a JSON detail (4xx); forward passes take turns (one lock)."""

    def __init__(self, index: Index):
        self.index = index
        self.encoder = index.encoder  # loaded now: a missing or changed checkpoint stops the start
        self.size = self.encoder.image_size
        self.lock = threading.Lock()  # one forward pass at a time: the CPU threads are shared by every request
        self.images = Images(index)
        self.facts = {**index.store.facts(), "projection": index.projection, "image_size": self.size}
        self.stamp = _stamp(index.folder)
        self.reload_lock = threading.Lock()
        enc = self.encoder
        self.fn = (lambda x: enc.project(enc(x).float())) if index.projection else enc.forward

    def follow(self) -> None:
        """Load the index folder again when it was rewritten since (a new ``meta.json``); every request calls it."""
        folder, stamp = self.index.folder, _stamp(self.index.folder)
        if folder is None or stamp == self.stamp:
            return
        with self.reload_lock:
            if stamp == self.stamp:  # another request has just loaded it
                return
            self.stamp = stamp
            try:
                fresh = store.VectorIndex.load(folder)
                store.check_same_encoder(self.index.store.meta.get("encoder") or {}, fresh.meta.get("encoder") or {},
                                         str(folder))  # fmt: skip
            except UserError as e:
                log.warn(f"serve: {folder} changed but was not reloaded ({e}); serving the index loaded before")
                return
            self.index.store, self.images = fresh, Images(self.index)
            self.facts = {**fresh.facts(), "projection": self.index.projection, "image_size": self.size}
            log.info(f"serve: reloaded {folder}: {len(fresh)} vectors")

    def known(self, id: str) -> str:
        if id not in self.index.store.rows:
            raise _http(404, "no such id in the index")
        return id

    def pixels_of(self, upload: Any) -> np.ndarray:
        """An upload's evaluation view uint8 [3, S, S], decoded like every data set's files; 400 if unreadable."""
        name = upload.filename or "upload"
        try:
            return decode(name, self.size, data=upload.file.read())[0]
        except BadImage as e:
            raise _http(400, f"{name}: {e.reason}") from None

    def pixels_of_id(self, id: str) -> np.ndarray:
        try:
            return self.images.pixels(self.known(id), self.size)
        except BadImage as e:
            raise _http(404, f"{id}: {e.reason}") from None

    def vector_of(self, pixels: np.ndarray) -> np.ndarray:
        with self.lock, torch.no_grad():
            rows, _ = embed(self.encoder, torch.tensor(pixels)[None], projection=self.index.projection)
        return store.normalise(rows)

    def search(self, pixels: np.ndarray | None, id: str | None, k: int) -> list[dict]:
        st = self.index.store
        if pixels is not None:
            scores, rows = st.search(self.vector_of(pixels), k)
        else:
            if str(id) not in st.rows:  # this request's index (a reload may swap the service's meanwhile)
                raise _http(404, "no such id in the index")
            row = st.rows[str(id)]
            scores, rows = st.search(np.asarray(st.vectors[row : row + 1]), k, exclude=np.array([row]))
        return [{"id": st.ids[r], "score": round(float(s), 6)} for s, r in zip(scores[0], rows[0]) if r >= 0]

    def explain(self, a: np.ndarray, b: np.ndarray) -> bytes:
        """The query ``a`` with the occlusion map of its similarity to ``b`` over it, as a PNG."""
        with self.lock:
            heat, _ = explain.similarity_map(self.fn, torch.tensor(a), torch.tensor(b), "occlusion")
        picture = Image.fromarray(explain.overlay(a, heat)).resize((2 * THUMB, 2 * THUMB), Image.Resampling.BICUBIC)
        return png(picture)

    def thumb(self, id: str) -> bytes:
        try:
            return _cached_thumb(self.images, self.known(id))
        except BadImage as e:
            raise _http(404, f"{id}: {e.reason}") from None


def create_app(index: Index, token: str | None = None, max_upload_mb: float = MAX_UPLOAD_MB) -> Any:
    """The FastAPI application over ``index`` (module docstring), wrapped in the upload cap.

    Args:
        index: a loaded :class:`fastclr.Index` (its encoder is used for uploads).
        token: when given, the data endpoints want ``Authorization: Bearer TOKEN``.
        max_upload_mb: the largest request body, in MiB.
    """
    try:
        from fastapi import Depends, FastAPI, HTTPException, Request
        from fastapi.responses import JSONResponse
    except ImportError:
        raise UserError(f"fastclr serve needs FastAPI and uvicorn: {store.INSTALL}") from None

    def authorised(request: Request) -> None:
        given = request.headers.get("authorization", "")
        if token is not None and not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    service = Service(index)
    description = f"Embedding and similarity search over an index of {len(index)} images (fastclr serve)."
    app = FastAPI(title="fastclr", version=__version__, description=description, dependencies=[Depends(service.follow)])

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:  # never a traceback to the client
        log.warn(f"serve: {request.url.path}: {type(exc).__name__}: {exc}")
        return JSONResponse({"detail": "internal error"}, status_code=500)

    _routes(app, service, [Depends(authorised)], {"token": token is not None})
    return BodyLimit(app, int(max_upload_mb * 2**20))


def _routes(app: Any, service: Service, guard: list, extra: dict) -> None:
    """The endpoints: each checks its input and hands the work to ``service``."""
    from fastapi import File, Form, UploadFile
    from fastapi.responses import HTMLResponse, Response

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> str:
        return PAGE

    @app.get("/health", summary="status and the index's facts")
    def health() -> dict:
        return {"status": "ok", **service.facts, **extra}

    @app.post("/embed", dependencies=guard, summary="an image's L2-normalised vector, as the index stores it")
    def embed_image(image: UploadFile = File(..., description="an image file")) -> dict:
        vector = service.vector_of(service.pixels_of(image))[0]
        return {
            "vector": [round(float(x), 7) for x in vector],
            "dim": len(vector),
            "projection": service.index.projection,
        }

    @app.post("/search", dependencies=guard, summary="the k nearest indexed images of an upload or an id")
    def search(
        image: UploadFile | None = File(None, description="an image file (or give id)"),
        id: str | None = Form(None, description="an indexed image's id: its stored vector, itself left out"),
        k: int = Form(10, ge=1, le=1000),
    ) -> dict:
        if image is None and id is None:
            raise _http(422, "give an image file or an id")
        found = service.search(service.pixels_of(image) if image is not None else None, id, k)
        return {"query": id if image is None else image.filename, "neighbours": found}

    @app.post("/explain", dependencies=guard, response_class=Response, summary="saliency of the query for an id")
    def explain_pair(
        id: str = Form(..., description="the indexed image the query is compared with"),
        image: UploadFile | None = File(None, description="the query image (or give query_id)"),
        query_id: str | None = Form(None, description="an indexed image as the query"),
    ) -> Response:
        if image is None and query_id is None:
            raise _http(422, "give an image file or a query_id")
        b = service.pixels_of_id(id)
        a = service.pixels_of(image) if image is not None else service.pixels_of_id(str(query_id))
        return Response(service.explain(a, b), media_type="image/png")

    @app.get("/thumb/{id:path}", dependencies=guard, response_class=Response, summary="an indexed image, small")
    def thumb(id: str) -> Response:
        return Response(service.thumb(id), media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@functools.lru_cache(maxsize=1024)
def _cached_thumb(images: Images, id: str) -> bytes:
    im = images.image(id)
    im.thumbnail((THUMB, THUMB), Image.Resampling.BICUBIC)
    return png(im)


def _stamp(folder: Any) -> tuple[int, int, int] | None:
    """(inode, mtime_ns, size) of an index folder's meta.json: a rewrite (an atomic rename) changes the inode."""
    if folder is None:
        return None
    try:
        st = os.stat(os.path.join(folder, "meta.json"))
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise UserError(f"--host {host} --port {port}: cannot listen there ({e.strerror})") from None


def serve(
    index: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
) -> dict:
    """``fastclr serve``: an HTTP embedding and search service over an index, with a web page (FastAPI, uvicorn).

    POST /embed (image -> vector), POST /search (image or id -> neighbours), POST /explain (which regions of the
    query make it similar to a neighbour), GET /thumb/ID (thumbnails of indexed images only), GET /health, the
    OpenAPI docs at /docs, and at / a page: drop or pick an image, see its neighbours with scores and the
    explanation overlay. Loopback only by default; any other --host needs --token (or $FASTCLR_SERVE_TOKEN), and
    requests then need Authorization: Bearer TOKEN. Uploads are capped (413) and decoded like every data set
    (a file that is not an image: 400). Stop it with Ctrl-C. Needs pip install 'fastclr[search]'.

    Args:
        index: an index folder written by fastclr index.
        host: address to listen on (127.0.0.1: this machine only).
        port: TCP port.
        token: bearer token the data endpoints require (default: $FASTCLR_SERVE_TOKEN, else none).
        max_upload_mb: the largest request body in MiB.
    """
    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and not token:
        raise UserError(f"--host {host}: listening beyond this machine needs --token (or ${TOKEN_ENV})")
    if not 0 < port < 65536:
        raise UserError(f"--port {port}: must be in 1..65535")
    if max_upload_mb <= 0:
        raise UserError(f"--max-upload-mb {max_upload_mb}: must be > 0")
    try:
        import uvicorn
    except ImportError:
        raise UserError(f"fastclr serve needs FastAPI and uvicorn: {store.INSTALL}") from None
    loaded = Index.load(index)
    app = create_app(loaded, token, max_upload_mb)
    _port_free(host, port)
    shown = f"[{host}]" if ":" in host else host
    log.info(f"serving {index} ({len(loaded)} images) on http://{shown}:{port}/ (API docs: /docs); Ctrl-C stops")
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return {"index": index, "host": host, "port": port, "stopped": True}
