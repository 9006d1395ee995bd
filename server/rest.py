"""TF Serving's REST API on Starlette, plus the page and the image upload.

    GET  /v1/models/NAME[/versions/V|/labels/L]            model_version_status
    GET  /v1/models/NAME[/versions/V|/labels/L]/metadata   signature_def
    POST /v1/models/NAME[/versions/V|/labels/L]:predict    {"instances": ...} or {"inputs": ...}
    POST /v1/models/NAME[/versions/V|/labels/L]:classify   {"examples": [tf.Example as JSON, ...]}
    POST /v1/models/NAME[/versions/V|/labels/L]:regress    the same, answered with one value each
    POST /v1/models/NAME[/versions/V]:upload               image files (multipart/form-data) -> top-k classes
                                                          (also on :classify with a multipart content type)
    POST /v1/models/NAME[/versions/V|/labels/L]:explain    {"instances": ...} or {"inputs": ...} -> heatmaps
                                                          (KServe's verb; this toolkit's exports), or image
                                                          files as for :upload -> top-k classes and heatmaps
    GET  /monitoring/prometheus/metrics
    GET  /                                        a page to drop an image on
    GET  /api/models                              what the page lists

Routes only parse, call ``server.service`` and format.  Every error is ``{"error": "..."}`` with TF
Serving's status code; a bug answers 500 with one line and is logged with its traceback.
"""

from __future__ import annotations

import os
import re
import sys
import time
import traceback

import orjson

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from server.errors import ServingError, invalid
from server.metrics import Metrics
from server.service import Service, Spec
from server.tensors import format_predict, parse_examples, parse_json, parse_predict_body

PATH = re.compile(r"^(?P<name>[^/:]+)(?:/versions/(?P<version>\d+)|/labels/(?P<label>[^/:]+))?"
                  r"(?:(?P<metadata>/metadata)|:(?P<verb>[a-z_]+))?$")
MODELS = "/v1/models/"
PAGE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "page.html")


def _json(document, status: int = 200) -> Response:
    return Response(orjson.dumps(document), status_code=status, media_type="application/json")


def error_response(error: ServingError) -> Response:
    return _json({"error": str(error)}, error.http_status)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it passes ``limit`` (declared or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ServingError("RESOURCE_EXHAUSTED", f"Request body of {int(declared):,} bytes is over the limit "
                                                 f"of {limit:,} (--max-body-mb)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ServingError("RESOURCE_EXHAUSTED", f"Request body is over the limit of {limit:,} bytes "
                                                     "(--max-body-mb)")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(service: Service, metrics: Metrics):
    """The ASGI application: TF Serving's routes under /v1/models/, Starlette for the rest."""
    settings = service.settings

    async def status(spec, request):
        return {"model_version_status": service.status(spec.name, spec.version, spec.label)}

    async def metadata(spec, request):
        servable = service.servable(spec.name, spec.version, spec.label)
        from google.protobuf import json_format

        defs = json_format.MessageToDict(servable.signature_defs, preserving_proto_field_name=True,
                                         always_print_fields_with_no_presence=True)
        return {"model_spec": {"name": spec.name, "signature_name": "", "version": str(servable.version)},
                "metadata": {"signature_def": defs}}

    async def predict(spec, request):
        servable = service.servable(spec.name, spec.version, spec.label)  # its signatures guide the parse
        body = await read_body(request, settings.max_body_bytes)
        signature, inputs, columnar = parse_predict_body(body, servable.signatures, settings.max_instances)
        _, _, outputs = await service.predict(spec, inputs, servable=servable, signature=signature)
        return format_predict(outputs, columnar)

    async def examples(spec, request):
        body = await read_body(request, settings.max_body_bytes)
        signature_name, serialized = parse_examples(parse_json(body), settings.max_instances)
        return Spec(spec.name, spec.version, spec.label, signature_name), serialized

    async def classify(spec, request):
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            return await upload(spec, request)  # the page's image upload, told apart by its content type
        _, _, results = await service.classify(*await examples(spec, request))
        return {"results": [[[label, score] for label, score in pairs] for pairs in results]}

    async def regress(spec, request):
        _, _, values = await service.regress(*await examples(spec, request))
        return {"results": values}

    async def explain(spec, request):
        """TF Serving's request shapes in, ``{"predictions": [{"heatmaps", "class_ids", "classes",
        "probabilities"}]}`` out (or ``{"outputs": ...}`` for columnar input), as :predict answers; the query's
        ``class_index`` and ``method`` pick the class and the method.  Image files (multipart) answer as :upload
        does, each prediction with its heatmap."""
        method = request.query_params.get("method", "gradcam")
        if request.headers.get("content-type", "").startswith("multipart/form-data"):
            files, top_k = await read_upload(request)
            return await service.upload_explain(spec.name, spec.version, files, top_k, label=spec.label,
                                                method=method)
        servable = service.explainable(spec.name, spec.version, spec.label)
        body = await read_body(request, settings.max_body_bytes)
        _, inputs, columnar = parse_predict_body(body, servable.signatures, settings.max_instances)
        class_index = request.query_params.get("class_index")
        if class_index is not None and not class_index.isdigit():
            raise invalid(f"class_index must be a class number, got {class_index!r}")
        if "images" not in inputs:
            raise invalid(f"{spec.name} explains its 'images' input; the request gives {', '.join(inputs)}")
        _, outputs = await service.explain(spec, inputs["images"], method=method, servable=servable,
                                           class_index=None if class_index is None else int(class_index))
        return format_predict(outputs, columnar)

    async def read_upload(request):
        """(files, top_k) of a multipart upload, checked against the limits."""
        content_type = request.headers.get("content-type", "")
        if not content_type.startswith("multipart/form-data"):
            raise invalid("POST image files as multipart/form-data (curl -F file=@photo.jpg); for arrays of "
                          "pixels use :predict")
        declared = request.headers.get("content-length")
        if declared is None or not declared.isdigit():
            raise ServingError("FAILED_PRECONDITION", "An upload needs a Content-Length header")
        if int(declared) > settings.max_body_bytes:
            raise ServingError("RESOURCE_EXHAUSTED", f"Upload of {int(declared):,} bytes is over the limit of "
                                                     f"{settings.max_body_bytes:,} (--max-body-mb)")
        try:
            form = await request.form(max_files=settings.max_images, max_fields=settings.max_images + 8)
        except Exception as error:  # starlette's MultiPartException and malformed multipart bodies
            raise invalid(f"Malformed upload: {str(error).splitlines()[0] if str(error) else 'unreadable'}") \
                from None
        try:
            files = [(value.filename or key, await value.read()) for key, value in form.multi_items()
                     if hasattr(value, "read")]
        finally:
            await form.close()
        top_k = request.query_params.get("top_k")
        if top_k is not None and not top_k.isdigit():
            raise invalid(f"top_k must be a positive integer, got {top_k!r}")
        return files, None if top_k is None else int(top_k)

    async def upload(spec, request):
        files, top_k = await read_upload(request)
        return await service.upload(spec.name, spec.version, files, top_k, label=spec.label)

    handlers = {("GET", None, False): status, ("GET", None, True): metadata,
                ("POST", "predict", False): predict, ("POST", "classify", False): classify,
                ("POST", "regress", False): regress, ("POST", "upload", False): upload,
                ("POST", "explain", False): explain}

    async def models_route(request: Request) -> Response:
        start = time.perf_counter()
        method, name, code = request.method, "?", "OK"
        metrics.in_flight.inc()
        try:
            match = PATH.match(request.url.path[len(MODELS):])
            if not match:
                raise ServingError("NOT_FOUND", f"Malformed request: {request.method} {request.url.path}")
            name = match["name"]
            spec = Spec(name, int(match["version"]) if match["version"] else None, match["label"])
            handler = handlers.get((request.method, match["verb"], bool(match["metadata"])))
            if handler is None:
                raise ServingError("NOT_FOUND", f"Malformed request: {request.method} {request.url.path}")
            method = handler.__name__
            return _json(await handler(spec, request))
        except ServingError as error:
            code = error.code
            return error_response(error)
        except Exception as error:  # a bug, not the caller's fault: one line out, the traceback to the log
            code = "INTERNAL"
            traceback.print_exc(file=sys.stderr)
            return error_response(ServingError("INTERNAL", f"Internal error: {type(error).__name__}: {error}"))
        finally:
            metrics.in_flight.dec()
            metrics.observe("rest", name, method, code, time.perf_counter() - start)

    async def page(request: Request) -> Response:
        with open(PAGE, encoding="utf-8") as f:
            return HTMLResponse(f.read())

    async def models_list(request: Request) -> Response:
        return _json({"models": service.models(),
                      "limits": {"max_images": settings.max_images, "max_body_bytes": settings.max_body_bytes}})

    async def prometheus(request: Request) -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    async def http_error(request: Request, error: HTTPException) -> Response:
        # Starlette's own 404 and 405 (an unknown path, PUT on a model) in TF Serving's error format too.
        return _json({"error": f"{error.detail}: {request.method} {request.url.path}"}, error.status_code)

    pages = Starlette(exception_handlers={HTTPException: http_error}, routes=[
        Route("/", page),
        Route("/api/models", models_list),
        Route("/monitoring/prometheus/metrics", prometheus),
        *([Route(settings.monitoring_path, prometheus)]
          if settings.monitoring_path and settings.monitoring_path != "/monitoring/prometheus/metrics" else []),
    ])

    async def app(scope, receive, send):
        # The API's routes go straight to their handler: Starlette's router and middleware stack cost a third of
        # the event loop's time per prediction, and the handler catches every error itself.
        if scope["type"] == "http" and scope["path"].startswith(MODELS):
            request = Request(scope, receive)
            if request.method in ("GET", "POST"):
                response = await models_route(request)
            else:
                response = _json({"error": f"Method Not Allowed: {request.method} {scope['path']}"}, 405)
            await response(scope, receive, send)
        else:
            await pages(scope, receive, send)

    return app
