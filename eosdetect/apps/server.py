"""``eosdetect serve``: a web page and a REST API over the counting pipeline.

The page (``GET /``) and the API call the same functions as ``eosdetect count``
and ``eosdetect prelabel`` (:func:`eosdetect.analysis.image.analyse`, rendered by
:func:`eosdetect.apps.batch.tables.image_row`, and
:func:`eosdetect.apps.prelabel.prelabel_annotation`), so an upload gets exactly the
answer the command line gives for that file.

Endpoints: ``POST /api/v1/count``, ``POST /api/v1/prelabel``,
``GET /api/v1/models``, ``GET /healthz``, and the OpenAPI schema at
``/openapi.json``. (FastAPI's interactive ``/docs`` page is off: it loads its
scripts from a CDN, which a lab network often cannot reach.)

Resources:

* Models are loaded once, on first use (the default one at start-up), and
  shared by all requests; a lock makes concurrent first uses load it once.
* Inference runs in worker threads, never on the event loop; at most
  ``workers`` run at once and at most ``queue`` more wait. Beyond that the
  answer is 503 with ``Retry-After``, rather than running out of memory.
* Request bodies over ``max_upload_mb`` get 413 before they are read; images
  over ``max_megapixels`` get 413 too, as uploaded or once rescaled to the
  model's pixel size (count those with ``eosdetect count``, which counts them block by block
  and has no time limit).
* An upload is written only into a temporary folder, removed when the request
  ends.
"""

import base64
import logging
import threading
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from fastapi import File, Form, Query, UploadFile
from pydantic import BaseModel, Field, model_serializer

from eosdetect import __version__
from eosdetect.errors import EosdetectError, InputError, ModelError
from eosdetect.io import encode_png, read_image_bytes, safe_filename

log = logging.getLogger(__name__)

API = "/api/v1"


@dataclass
class ServeSettings:
    """Limits and models of one server (``eosdetect serve`` flags)."""

    #: Default model: a bundled name or a model folder (None: the bundled default).
    model: str | None = None
    #: Further model folders offered in the model list.
    model_dirs: list[str] = field(default_factory=list)
    #: Largest request body accepted, megabytes.
    max_upload_mb: float = 30.0
    #: Largest image counted while the client waits, megapixels.
    max_megapixels: float = 30.0
    #: Inferences running at once.
    workers: int = 2
    #: Requests allowed to wait for a worker; more get 503.
    queue: int = 16
    #: Load (and trace) the default model at start-up instead of on the first request.
    preload: bool = True


# --------------------------------------------------------------------------- models


class ModelRegistry:
    """The models a server offers, each loaded once and shared."""

    def __init__(self, default: str | None = None, model_dirs=()):
        from eosdetect.models.store import DEFAULT_MODEL, bundled_names, load_model, resolve_model_dir

        self._load_model = load_model
        self._paths: dict[str, Path] = {}
        for name in bundled_names():
            self._paths[name] = resolve_model_dir(name)
        for d in model_dirs:
            m = load_model(d)  # ModelError for a bad folder: the server does not start
            name = m.name if m.name not in self._paths else f"{m.name} ({Path(d).name})"
            self._paths[name] = m.path
        if default is None:
            default = DEFAULT_MODEL
        elif default not in self._paths:
            m = load_model(default)
            found = [n for n, p in self._paths.items() if p.resolve() == m.path.resolve()]
            default = found[0] if found else m.name
            self._paths.setdefault(default, m.path)
        self.default = default
        self._loaded: dict = {}
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was read from disk (tests check it stays one per model)

    @property
    def names(self) -> list[str]:
        return list(self._paths)

    @property
    def loaded(self) -> list[str]:
        """Names of the models in memory."""
        return sorted(self._loaded)

    def get(self, name: str | None = None):
        """The loaded model called ``name`` (default: the server's default).

        Raises :class:`KeyError` with the list of names for an unknown one."""
        name = name or self.default
        if name not in self._paths:
            raise KeyError(name)
        with self._lock:
            model = self._loaded.get(name)
            if model is None:
                model = self._load_model(self._paths[name])
                _warm_up(model)
                self._loaded[name] = model
                self.loads += 1
        return model

    def describe(self) -> list[dict]:
        from eosdetect.models.store import BUNDLED_DIR

        out = []
        for name, path in self._paths.items():
            entry = {"name": name, "bundled": path.parent == BUNDLED_DIR, "default": name == self.default}
            try:
                m = self._loaded.get(name) or self._load_model(path)
            except (EosdetectError, OSError) as exc:  # its folder was removed or damaged since start-up
                out.append({**entry, "available": False, "error": f"cannot be loaded: {_one_line(exc)}"})
                continue
            v = m.metrics.get("validation", {}) if m.metrics else {}
            out.append(
                {
                    **entry,
                    "version": m.config.version,
                    "class_name": m.config.class_name,
                    "description": m.config.description,
                    "input_pixel_size_um": m.config.input_pixel_size_um,
                    "two_stage": m.config.helper_enabled,
                    "validation_f1": v.get("f1"),
                    "crossval_f1": (m.metrics or {}).get("crossval", {}).get("pooled", {}).get("f1"),
                }
            )
        return out


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror + (f" ({exc.filename})" if exc.filename else "")
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _warm_up(model) -> None:
    """Build the networks and trace their graphs now, in one thread, so that
    concurrent first requests neither race to build them nor pay for it."""
    import numpy as np


    model.predict_fn  # noqa: B018 (builds the U-Net)
    if model.config.helper_enabled:
        fn = model.class_probs_fn
        s = model.config.helper_crop_size
        fn(np.zeros((1, s, s, 3), np.float32))
    model.detect(np.full((64, 64, 3), 255, np.uint8))


# --------------------------------------------------------------------------- inference


class Busy(Exception):
    """All workers busy and the queue full."""


class Gate:
    """At most ``workers`` jobs run in threads at once and ``queue`` more wait.

    Used from the event loop only, so the counter needs no lock."""

    def __init__(self, workers: int, queue: int):
        import anyio

        self.workers = max(1, int(workers))
        self.queue = max(0, int(queue))
        self.limiter = anyio.CapacityLimiter(self.workers)
        self.pending = 0

    async def run(self, fn, *args):
        import anyio

        if self.pending >= self.workers + self.queue:
            raise Busy()
        self.pending += 1
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)
        finally:
            self.pending -= 1


def read_upload(data: bytes, filename: str | None, max_pixels: float, model=None, pixel_size_um=None) -> tuple:
    """Decode an uploaded image as ``eosdetect count`` reads a file
    (:func:`eosdetect.io.read_image_bytes`: a temporary folder, removed at once).

    With ``model``, the image is also refused when the pictures the pipeline makes of it
    (rescaled from ``pixel_size_um`` to the model's pixel sizes) are over ``max_pixels``.

    Returns ``(rgb_uint8, seconds)``; raises :class:`InputError` naming the
    upload, :class:`~eosdetect.errors.ConfigError` for a pixel size the model
    cannot use, or :class:`TooLarge`."""
    t0 = time.perf_counter()
    shown = Path(filename or "upload").name
    if not data:
        raise InputError(shown, "empty upload")
    w, h, mode = _header_size(data)  # the header alone says the size: refuse huge images before decoding them
    _check_size(shown, w, h, max_pixels, model, pixel_size_um, mode)
    image = read_image_bytes(data, shown)
    h, w = image.shape[:2]
    _check_size(shown, w, h, max_pixels, model, pixel_size_um, mode)
    return image, time.perf_counter() - t0


def _check_size(shown: str, w: int, h: int, max_pixels: float, model, pixel_size_um, mode: str | None = None) -> None:
    """Raise :class:`TooLarge` when a ``w`` x ``h`` image, or its largest picture at the model's
    scale (the U-Net's, or the helper's in two-stage models), has over ``max_pixels`` pixels."""
    if w * h > max_pixels:
        raise TooLarge(shown, w, h, max_pixels, mode=mode)
    if model is None:
        return
    cfg = model.config
    scale = cfg.scale_for(pixel_size_um)  # ConfigError for an absurd pixel size, as detect() raises it
    views = [(scale, cfg.pixel_size_um)]
    if cfg.helper_enabled:
        views.append((scale * cfg.pixel_size_um / cfg.helper_pixel_size_um, cfg.helper_pixel_size_um))
    for s, px in views:
        rows, cols = max(1, round(h * s)), max(1, round(w * s))  # as eosdetect.training.dataset.resize sizes it
        if rows * cols > max_pixels:
            raise TooLarge(shown, w, h, max_pixels, at=(cfg.input_pixel_size(pixel_size_um), px, cols, rows),
                           mode=mode)


def _header_size(data: bytes) -> tuple[int, int, str | None]:
    """Width, height and, for a format that must be decoded whole, Pillow's mode, from an image's
    header without decoding it (a TIFF's mode is None: it is read block by block); (0, 0, None)
    when neither Pillow nor tifffile can tell (read_image_bytes then gives the proper error)."""
    import io

    from eosdetect.io import TIFF_MAGIC, pillow_open  # Pillow's own (process-wide) pixel limit left alone

    tiff = data[:4] in TIFF_MAGIC
    try:
        with pillow_open(io.BytesIO(data)) as im:
            return im.width, im.height, None if tiff else im.mode
    except (OSError, ValueError):
        pass
    try:
        import tifffile

        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            shape = dict(zip(tif.series[0].axes, tif.series[0].shape))
            return int(shape.get("X", 0)), int(shape.get("Y", 0)), None
    except Exception:  # noqa: BLE001 - not a TIFF either
        return 0, 0, None


class TooLarge(EosdetectError):
    """An image over the server's megapixel limit; ``at`` is ``(input um/px, model um/px,
    columns, rows)`` when it is only too large once rescaled to the model's pixel size."""

    def __init__(self, name, w, h, max_pixels, at=None, mode=None):
        if at is None:
            size = f"image of {w}x{h} px ({w * h / 1e6:.1f} MP) is over"
        else:
            px, model_px, cols, rows = at
            size = (f"image of {w}x{h} px at {px:g} um/px is {cols}x{rows} px ({cols * rows / 1e6:.1f} MP) at the "
                    f"model's {model_px:g} um/px, over")
        from eosdetect.slideio import MAX_DECODED_BYTES, decoded_bytes

        if mode is not None and decoded_bytes(w, h, mode) > MAX_DECODED_BYTES:  # the command line refuses it too
            advice = ("save it as a tiled TIFF (e.g. vips tiffsave in.png out.tif --tile --pyramid) and count that "
                      "with the command line (eosdetect count), which reads it block by block")
        else:
            advice = "count it with the command line (eosdetect count), which counts large images block by block"
        super().__init__(f"{name}: {size} this server's limit of {max_pixels / 1e6:g} MP; {advice}")


def thresholds_with(model, overrides: dict):
    """The model's fitted thresholds with the request's overrides."""
    from eosdetect.errors import ConfigError

    try:
        return model.thresholds.replace(**overrides)
    except ConfigError as exc:
        raise InputError("thresholds", str(exc)) from None


def count_upload(
    model,
    data: bytes,
    filename: str | None,
    *,
    pixel_size_um=None,
    thresholds=None,
    max_pixels: float,
    overlay: bool = False,
    voc: bool = False,
    geojson: bool = False,
) -> dict:
    """Everything ``POST /api/v1/count`` answers, as a dict (runs in a worker thread)."""
    from eosdetect.analysis.image import analyse
    from eosdetect.annotations.voc import voc_bytes
    from eosdetect.apps.batch.tables import image_row, significant
    from eosdetect.apps.prelabel import PrelabelSettings, prelabel_annotation

    t0 = time.perf_counter()
    image, t_read = read_upload(data, filename, max_pixels, model, pixel_size_um)
    name = Path(filename or "upload").name
    a = analyse(model, image, source=name, pixel_size_um=pixel_size_um, thresholds=thresholds)
    row = image_row(name, a)  # the figures as counts.csv shows them
    det = a.detections
    # a multi-class helper: each detection's class (the counted one: the others are not detections)
    cls = {"class_name": model.config.class_name} if a.differential is not None else {}
    out = {
        "model": {"name": model.name, "version": model.config.version},
        "image": {"filename": name, "width": int(image.shape[1]), "height": int(image.shape[0])},
        "class_name": model.config.class_name,
        "count": len(det),
        "candidates": row.candidates,
        "pixel_size_um": pixel_size_um,
        "clinical": None,
        "detections": [
            {"x": x, "y": y, "score": s, "area": ar, "box": [x0, y0, x1, y1], **cls}
            for x, y, s, ar, x0, y0, x1, y1 in det.rows()
        ],
        "thresholds": (thresholds or model.thresholds).to_dict(),
        "warnings": list(a.warnings),  # as eosdetect count prints them
        "timings": {},
    }
    if a.hpf is not None:
        out["clinical"] = {
            "area_mm2": row.area_mm2,
            "density_per_mm2": row.density_per_mm2,
            "per_hpf": row.per_hpf,
            "hpf_basis": row.hpf_basis,
            "n_hpf": significant(a.hpf.n_hpf, 3),
            "peak_hpf_count": row.peak_hpf_count,
            "hpf_flag": a.hpf.flag,
            "hpf_area_mm2": a.hpf.hpf_area_mm2,
            "threshold": a.hpf.threshold,
        }
        if a.hpf.caveat:  # a photo smaller than a field: its per-HPF figure is an estimate
            out["warnings"].append(a.hpf.caveat)
    if a.differential is not None:
        out["differential"] = a.differential.to_dict()
    if overlay:
        t = time.perf_counter()
        out["overlay_png"] = base64.b64encode(encode_png(a.overlay())).decode("ascii")
        a.result.timings["overlay"] = time.perf_counter() - t  # drawn and encoded
    if geojson:  # what count --export geojson writes, as a JSON object
        from eosdetect.annotations.geojson import analysis_to_geojson

        out["geojson"] = analysis_to_geojson(a, id_seed=name)
    if voc:
        settings = PrelabelSettings(pixel_size_um=pixel_size_um, thresholds=thresholds)  # the boxes follow the count
        ann, _, _ = prelabel_annotation(model, image, settings, filename=name, path=name, result=a.result)
        out["voc_xml"] = voc_bytes(ann).decode("utf-8")
    timings = {"read": t_read, **a.result.timings, "total": time.perf_counter() - t0}
    out["timings"] = {k: round(float(v), 4) for k, v in timings.items()}
    return out


def prelabel_upload(
    model, data: bytes, filename: str | None, *, pixel_size_um=None, class_name=None, max_pixels: float
) -> bytes:
    """The Pascal VOC XML ``eosdetect prelabel`` would write for this upload."""
    from eosdetect.annotations.voc import voc_bytes
    from eosdetect.apps.prelabel import PrelabelSettings, prelabel_annotation

    image, _ = read_upload(data, filename, max_pixels, model, pixel_size_um)
    name = Path(filename or "upload").name
    settings = PrelabelSettings(pixel_size_um=pixel_size_um, class_name=class_name)
    ann, _, _ = prelabel_annotation(model, image, settings, filename=name, path=name)
    return voc_bytes(ann)


# --------------------------------------------------------------------------- API schema


class OmitNone(BaseModel):
    """A schema whose fields named in ``omit_when_none`` are left out of the JSON, rather than
    null, when they have no value: fields of models with a multi-class helper, so that the
    answers for other models stay as they were."""

    omit_when_none: ClassVar[tuple[str, ...]] = ()

    @model_serializer(mode="wrap")
    def _omit_none(self, handler):
        out = handler(self)
        for key in self.omit_when_none:
            if key in out and out[key] is None:
                del out[key]
        return out


class ErrorOut(BaseModel):
    detail: str = Field(description="one-line reason")


class ModelRef(BaseModel):
    name: str
    version: str


class ImageInfo(BaseModel):
    filename: str
    width: int
    height: int


class DetectionOut(OmitNone):
    omit_when_none: ClassVar[tuple[str, ...]] = ("class_name",)

    x: float = Field(description="centroid column, input pixels")
    y: float = Field(description="centroid row, input pixels")
    score: float
    area: float = Field(description="segment area, input pixels")
    box: list[int] = Field(description="xmin, ymin, xmax, ymax (xmax/ymax exclusive), input pixels")
    class_name: str | None = Field(None, description="the cell's class (models with a multi-class helper only)")


class ClassShareOut(BaseModel):
    count: int = Field(description="cells of this class")
    percent: float | None = Field(
        description="percent of the white cells; null for a class not in the differential, or without white cells")


class DifferentialOut(BaseModel):
    """The white-cell differential (as in summary.json): every class of the model's helper."""

    white_cells: int = Field(description="cells of the classes in the differential (the percentages' base)")
    not_in_differential: list[str] = Field(description="classes counted but left out of the percentages "
                                           "(objects that are not white cells)")
    classes: dict[str, ClassShareOut] = Field(description="every class, in the model's order")


class ClinicalOut(BaseModel):
    area_mm2: float
    density_per_mm2: float
    per_hpf: float = Field(description="the per-HPF figure the flag judges: the peak, or for an image smaller "
                           "than a high-power field an estimate from its density (count x HPF area / image area)")
    hpf_basis: Literal["peak", "estimate"] = Field(description="what per_hpf is")
    n_hpf: float = Field(description="high-power fields the image covers (under 1: the fraction of one)")
    peak_hpf_count: int | None = Field(description="cells in the densest high-power field; null for an image "
                                       "smaller than a field (it holds no whole field)")
    hpf_flag: bool | None = Field(description="per_hpf >= threshold; null when the model has no standard threshold")
    hpf_area_mm2: float
    threshold: float | None = Field(description="per-HPF count that raises the flag (15 for eosinophils)")


class CountOut(OmitNone):
    omit_when_none: ClassVar[tuple[str, ...]] = ("differential",)

    model: ModelRef
    image: ImageInfo
    class_name: str
    count: int
    candidates: int = Field(description="objects the U-Net segmented (counted or not)")
    pixel_size_um: float | None
    clinical: ClinicalOut | None = Field(description="density and per-HPF figure; null without pixel_size")
    detections: list[DetectionOut]
    thresholds: dict[str, float]
    warnings: list[str] = Field(
        default_factory=list, description="reasons to doubt the count (a grey image for a colour model), "
        "worded as eosdetect count prints them, or its per-HPF figure (an image smaller than a high-power field: "
        "per_hpf is an estimate)"
    )
    timings: dict[str, float] = Field(description="seconds per stage and in total")
    geojson: dict[str, Any] | None = Field(
        None, description="the cells as a QuPath GeoJSON FeatureCollection, as `eosdetect count --export geojson` "
        "writes it (with ?geojson=true); save it as a .geojson file and import it in QuPath")
    overlay_png: str | None = Field(None, description="overlay PNG, base64 (with ?overlay=true)")
    voc_xml: str | None = Field(None, description="LabelImg Pascal VOC pre-labels (with ?voc=true)")
    differential: DifferentialOut | None = Field(
        None, description="the white-cell differential of this image (models with a multi-class helper only)")


class ModelOut(BaseModel):
    """A model on offer; one whose folder can no longer be read has ``available`` false,
    the reason in ``error`` and null for what only its files say."""

    name: str
    version: str | None = None
    class_name: str | None = None
    description: str | None = None
    input_pixel_size_um: float | None = None
    two_stage: bool | None = None
    bundled: bool
    default: bool
    validation_f1: float | None = None
    #: Pooled F1 of the model's k-fold cross-validation, when one was recorded (the estimate for new images).
    crossval_f1: float | None = None
    available: bool = True
    error: str | None = Field(None, description="why the model cannot be used now (available false)")


class HealthOut(BaseModel):
    status: str
    version: str
    default_model: str
    models_loaded: list[str]
    busy: int
    workers: int
    queue: int


Img = Annotated[UploadFile, File(description="the image: PNG, JPEG, TIFF (8/16-bit), BMP...")]
ModelName = Annotated[str | None, Form(description="model name (GET /api/v1/models); default: the server's")]
PixelSize = Annotated[
    float | None, Form(gt=0, le=1000, description="micrometres per pixel of the upload; gives density and HPF peak")
]
Prob = Annotated[float | None, Form(ge=0, le=1, description="override: U-Net probability threshold")]
Helper = Annotated[float | None, Form(ge=0, le=1, description="override: helper threshold (two-stage models)")]
Um = Annotated[float | None, Form(ge=0, le=1e9, description="override, micrometres")]
Um2 = Annotated[float | None, Form(ge=0, le=1e12, description="override, square micrometres")]
ClassName = Annotated[str | None, Form(max_length=100, description="box label; default the model's class")]


class BodyLimit:
    """ASGI middleware: a POST body over ``max_bytes`` gets 413, before it is
    read when the client says its length, as soon as it passes the limit when
    it streams (``Transfer-Encoding: chunked``, as curl sends uploads)."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _message(self, size: int | None = None) -> str:
        what = f"upload of {size / 1e6:.1f} MB" if size is not None else "upload"
        return f"{what} is over this server's limit of {self.max_bytes / 1e6:g} MB"

    async def __call__(self, scope, receive, send):
        from fastapi import HTTPException
        from fastapi.responses import JSONResponse

        if scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await JSONResponse({"detail": "invalid Content-Length"}, status_code=400)(scope, receive, send)
            if n > self.max_bytes:
                detail = self._message(n)
                return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise HTTPException(413, self._message())
            return message

        await self.app(scope, limited, send)


# --------------------------------------------------------------------------- the app


def create_app(settings: ServeSettings | None = None, registry: ModelRegistry | None = None):
    """The FastAPI application (``uvicorn`` serves it; tests call it directly)."""
    from contextlib import asynccontextmanager

    import anyio
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, Response

    settings = settings or ServeSettings()
    registry = registry or ModelRegistry(settings.model, settings.model_dirs)
    gate = Gate(settings.workers, settings.queue)
    max_body = int(settings.max_upload_mb * 1e6)
    max_pixels = settings.max_megapixels * 1e6

    errors = {
        400: {"model": ErrorOut, "description": "not an image, or a corrupt one"},
        404: {"model": ErrorOut, "description": "unknown model"},
        413: {"model": ErrorOut, "description": "upload or image too large"},
        422: {"model": ErrorOut, "description": "invalid parameter"},
        503: {"model": ErrorOut, "description": "all workers busy and the queue full; retry later"},
    }

    @asynccontextmanager
    async def lifespan(app):
        if settings.preload:
            await anyio.to_thread.run_sync(registry.get)
        yield

    app = FastAPI(
        title="eosdetect",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Count cells in stained slide images (U-Net + watershed). The same pipeline as "
        "`eosdetect count`; coordinates are in pixels of the uploaded image.",
    )
    app.add_middleware(BodyLimit, max_bytes=max_body)
    _form_fields_without_null(app)
    app.state.registry = registry
    app.state.gate = gate
    app.state.settings = settings

    # ------------------------------------------------------------------ limits and errors
    @app.exception_handler(RequestValidationError)
    async def one_line_validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query"))
            parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg", "invalid")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    async def model_or_404(name: str | None):
        if name and name not in registry.names:
            raise HTTPException(404, f"unknown model {name!r}; available: {', '.join(registry.names)}")
        try:  # a first use loads and warms the model: in a thread, not on the event loop
            return await anyio.to_thread.run_sync(registry.get, name or None)
        except ModelError as exc:
            raise HTTPException(500, str(exc)) from None

    async def run(fn, *args):
        try:
            return await gate.run(fn, *args)
        except Busy:
            raise HTTPException(
                503,
                f"busy: {gate.workers} image(s) being counted and {gate.queue} waiting; retry later",
                headers={"Retry-After": "2"},
            ) from None
        except TooLarge as exc:
            raise HTTPException(413, str(exc)) from None
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        except EosdetectError as exc:
            raise HTTPException(400, str(exc)) from None
        except MemoryError:
            raise HTTPException(503, "out of memory for this image; retry later or use eosdetect count") from None

    async def upload_bytes(request: Request, image: UploadFile) -> bytes:
        images = (await request.form()).getlist("image")  # the form FastAPI parsed (cached)
        if len(images) > 1:  # answering for one of them would drop the others without a word
            raise HTTPException(422, f"{len(images)} image fields in one request; send one image per request")
        data = await image.read(max_body + 1)
        if len(data) > max_body:
            raise HTTPException(413, f"upload is over this server's limit of {settings.max_upload_mb:g} MB")
        return data

    # ------------------------------------------------------------------ routes
    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(resources.files("eosdetect.apps.web").joinpath("index.html").read_text(encoding="utf-8"))

    @app.get("/healthz", response_model=HealthOut, tags=["service"])
    async def healthz():
        """Liveness: the server answers and which models are in memory."""
        return {
            "status": "ok",
            "version": __version__,
            "default_model": registry.default,
            "models_loaded": registry.loaded,
            "busy": gate.pending,
            "workers": gate.workers,
            "queue": gate.queue,
        }

    @app.get(f"{API}/models", response_model=list[ModelOut], tags=["models"])
    async def models():
        """The models this server offers: the bundled ones and any given with --model-dir."""
        return await anyio.to_thread.run_sync(registry.describe)

    @app.post(
        f"{API}/count", response_model=CountOut, response_model_exclude_none=False, responses=errors, tags=["count"]
    )
    async def count(
        request: Request,
        image: Img,
        model: ModelName = None,
        pixel_size: PixelSize = None,
        prob_threshold: Prob = None,
        helper_threshold: Helper = None,
        min_distance_um: Um = None,
        min_area_um2: Um2 = None,
        max_area_um2: Um2 = None,
        overlay: Annotated[bool, Query(description="add the overlay PNG (base64)")] = False,
        voc: Annotated[bool, Query(description="add LabelImg Pascal VOC pre-labels")] = False,
        geojson: Annotated[bool, Query(description="add the cells as QuPath GeoJSON")] = False,
    ):
        """Count the cells in one uploaded image."""
        m = await model_or_404(model)
        data = await upload_bytes(request, image)
        try:
            thr = thresholds_with(
                m,
                {
                    "prob_threshold": prob_threshold,
                    "helper_threshold": helper_threshold,
                    "min_distance_um": min_distance_um,
                    "min_area_um2": min_area_um2,
                    "max_area_um2": max_area_um2,
                },
            )
        except InputError as exc:
            raise HTTPException(422, exc.problem) from None

        def job():
            return count_upload(
                m,
                data,
                image.filename,
                pixel_size_um=pixel_size,
                thresholds=thr,
                max_pixels=max_pixels,
                overlay=overlay,
                voc=voc,
                geojson=geojson,
            )

        return await run(job)

    @app.post(
        f"{API}/prelabel",
        response_class=Response,
        tags=["prelabel"],
        responses={
            200: {
                "content": {"application/xml": {"schema": {"type": "string"}}},
                "description": "Pascal VOC XML as LabelImg writes it",
            },
            **errors,
        },
    )
    async def prelabel(request: Request, image: Img, model: ModelName = None, pixel_size: PixelSize = None,
                       class_name: ClassName = None):
        """Pre-label one uploaded image: the LabelImg XML ``eosdetect prelabel`` writes
        (uncertain cells marked difficult)."""
        m = await model_or_404(model)
        data = await upload_bytes(request, image)

        def job():
            return prelabel_upload(
                m, data, image.filename, pixel_size_um=pixel_size, class_name=class_name or None, max_pixels=max_pixels
            )

        xml = await run(job)
        stem = safe_filename(Path(image.filename or "upload").stem, "upload")
        return Response(
            xml, media_type="application/xml", headers={"Content-Disposition": f'attachment; filename="{stem}.xml"'}
        )

    return app


def _form_fields_without_null(app) -> None:
    """Optional form fields have no null value in multipart/form-data (a field
    is sent or left out), but FastAPI describes them as ``anyOf [type, null]``;
    a client reading the schema would then send the text "null". Describe them
    by their type alone."""
    from fastapi.openapi.utils import get_openapi

    def build():
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            for name, comp in schema.get("components", {}).get("schemas", {}).items():
                if not name.startswith("Body_"):
                    continue
                for prop in comp.get("properties", {}).values():
                    options = prop.get("anyOf")
                    if options and {"type": "null"} in options:
                        rest = [o for o in options if o != {"type": "null"}]
                        if len(rest) == 1:
                            del prop["anyOf"]
                            prop.update(rest[0])
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = build


def serve(settings: ServeSettings, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info") -> None:
    """Run the server until interrupted. A bad model folder or a port that is taken is a
    one-line :class:`EosdetectError` before anything is announced."""
    import socket
    import sys

    import uvicorn

    app = create_app(settings)
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        raise EosdetectError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    print(f"eosdetect: serving on http://{host}:{port}/ (Ctrl+C to stop)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level)
