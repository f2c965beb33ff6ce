"""The pages of an untrusted file, read within fixed limits: how ``doc verify`` and ``doc
descramble`` look at a PDF, a scan or a photo.

A file handed to a verifier is the attacker's choice, and a few kilobytes of PDF can ask
for gigabytes of bitmap (50 pages of 80 cm: 35.7 s and 4.4 GB), for a 60,000² image, or for
twenty million strokes (874 kB: 42 s and 5.4 GB before pdfium had even loaded the page).
So the work per input is bounded twice:

* **Limits checked before the work** (:class:`InputLimits`), each refused with one line
  that names it: a regular file only (opened with ``O_NONBLOCK`` and checked with
  ``fstat``, so a FIFO, a device or a directory is never read), at most ``max_bytes``;
  a PDF of at most ``max_pages`` pages, each at most ``max_page_pixels`` and all together
  at most ``max_pdf_pixels`` when rasterised at 300 dpi (known from the page boxes before a
  pixel exists), with at most ``max_page_objects`` drawing objects and no embedded image
  over ``max_image_pixels``; an image of at most ``max_image_pixels``, in one of a few
  formats (PNG, JPEG, TIFF, BMP, WebP, GIF, PNM — never one that runs an interpreter).
* **A child process for everything that parses or draws the input** (pdfium, Pillow's
  decoders, the DataMatrix reader): it runs under an address-space limit
  (``memory_bytes``), a CPU-time limit (``cpu_seconds``) and a wall-clock backstop
  (``wall_seconds``), so whatever the static limits do not foresee — a content stream
  that takes a minute to parse, a decoder's pathological case or crash — ends as one line
  too. The parent never holds more than one page's pixels at a time.

Each limit is far above any certificate (a 6-page 戸籍 PDF is 260 kB, 6 A4 pages, ~80
objects per page, its largest image 35 M pixels — the 600 dpi けん制文字 — and takes ~1.5 s).
"""

from __future__ import annotations

import io
import json
import math
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np

from cardio.errors import EXIT_ERROR, CardioError

__all__ = [
    "DEFAULT_LIMITS",
    "PDF_DPI",
    "DocumentInputError",
    "InputLimits",
    "PageScan",
    "iter_images",
    "read_input",
    "rendered_pages",
    "scan_pages",
]

PDF_DPI = 300  # enough for 0.34 mm modules (4 px) and for 2D-Doc's 300 dpi minimum
_SCALE = PDF_DPI / 72
_MM_PER_PT = 25.4 / 72
IMAGE_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "WEBP", "GIF", "PPM")
"""What Pillow may decode here: raster formats with their own decoders. Not EPS/PS (Pillow
runs Ghostscript for those) and no exotic plug-in."""


class DocumentInputError(CardioError):
    """The input is not something ``doc`` reads: missing, not a regular file, past a limit,
    or neither a PDF nor an image (bad data: exit 1)."""

    exit_code = EXIT_ERROR


@dataclass(frozen=True)
class InputLimits:
    """The bounds on one input (the defaults are documented in docs/document-security.md)."""

    max_bytes: int = 64 * 2**20
    """File size: a 600 dpi A4 scan as PNG is ~10 MB, a 12 MP photo ~5 MB, our PDFs 250 kB."""
    max_pages: int = 32
    """PDF pages (and image frames): 16 two-sided sheets; the 戸籍 sample is 6 pages."""
    max_page_pixels: int = 18_000_000
    """One PDF page at 300 dpi: A3 (3508 × 4961 = 17.4 M) fits; A4 is 8.7 M."""
    max_pdf_pixels: int = 280_000_000
    """All pages of a PDF at 300 dpi together: 32 A4 pages."""
    max_image_pixels: int = 50_000_000
    """One scan or photo, and one image embedded in a PDF: an A4 scan at 600 dpi (34.8 M)
    or a 48 MP phone photo fits."""
    max_page_objects: int = 20_000
    """Drawing objects on one PDF page, form contents included (a certificate has ~80)."""
    cpu_seconds: float = 30.0
    """CPU time for reading every page (a genuine A4 page takes ~0.2 s). CPU, not wall-clock
    time, so a busy machine does not fail a genuine 32-page PDF."""
    wall_seconds: float = 90.0
    """Wall-clock backstop, for a child that waits instead of working."""
    memory_bytes: int = 1024 * 2**20
    """Address space of the child process that parses and draws: its imports take ~160 MB,
    a 45 MP photo peaks at ~390 MB resident, a genuine 6-page PDF at ~110 MB."""


DEFAULT_LIMITS = InputLimits()


@dataclass(frozen=True)
class PageScan:
    """What the DataMatrix reader found on one page (1-based): the decoded byte strings,
    and whether a symbol was seen that could not be decoded."""

    page: int
    seals: tuple[bytes, ...]
    unreadable: bool


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


def read_input(path: Path, limits: InputLimits = DEFAULT_LIMITS, *, what: str = "") -> bytes:
    """The bytes of ``path`` if it is a regular file of at most ``limits.max_bytes``.

    Opened with ``O_NONBLOCK``, so a FIFO without a writer cannot hang us, and checked with
    ``fstat`` on the open descriptor (no race with a rename) before one byte is read; a
    device such as ``/dev/zero`` would otherwise be read for ever."""
    label = f"{what}{path}"
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        pre = os.stat(path)  # refuse devices before even opening them (opening has effects)
        if not stat.S_ISREG(pre.st_mode):
            raise DocumentInputError(f"{label}: not a regular file ({_kind(pre.st_mode)});"
                                     " give a PDF or an image file")
        fd = os.open(path, flags)
    except OSError as e:
        raise DocumentInputError(f"{label}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise DocumentInputError(f"{label}: not a regular file ({_kind(st.st_mode)});"
                                     " give a PDF or an image file")
        if st.st_size > limits.max_bytes:
            raise DocumentInputError(f"{label}: {st.st_size:,} bytes, larger than the"
                                     f" {limits.max_bytes:,} a certificate scan can need")
        chunks, total = [], 0
        while total <= limits.max_bytes:  # the file may grow after fstat
            chunk = os.read(fd, min(1 << 20, limits.max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
    except OSError as e:
        raise DocumentInputError(f"{label}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)
    if total > limits.max_bytes:
        raise DocumentInputError(f"{label}: larger than the {limits.max_bytes:,} bytes a"
                                 " certificate scan can need")
    if total == 0:
        raise DocumentInputError(f"{label}: an empty file; give a PDF or an image file")
    return b"".join(chunks)


# ---------------------------------------------------------------- decoding (child side)


def _mm(pt: float) -> str:
    return f"{pt * _MM_PER_PT:.0f}"


def _count_objects(get: Any, n: int, limits: InputLimits, budget: list[int],
                   depth: int = 0) -> None:
    """Walk ``n`` page objects (``get(i)``), descending into forms: count them against the
    page's budget and refuse an image with too many pixels before pdfium decodes it."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    budget[0] -= n
    if budget[0] < 0:
        raise DocumentInputError(f"a page has more than {limits.max_page_objects:,} drawing"
                                 " objects; a certificate has about a hundred")
    for i in range(n):
        obj = get(i)
        kind = pdfium_c.FPDFPageObj_GetType(obj)
        if kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            w, h = ctypes.c_uint(), ctypes.c_uint()
            if (pdfium_c.FPDFImageObj_GetImagePixelSize(obj, w, h)
                    and w.value * h.value > limits.max_image_pixels):
                raise DocumentInputError(
                    f"a page embeds a {w.value:,} × {h.value:,} image; at most"
                    f" {limits.max_image_pixels:,} pixels per image")
        elif kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < 32:  # the budget bounds the walk
            m = pdfium_c.FPDFFormObj_CountObjects(obj)
            if m > 0:
                _count_objects(lambda j, o=obj: pdfium_c.FPDFFormObj_GetObject(o, j), m,
                               limits, budget, depth + 1)


def _pdf_images(data: bytes, limits: InputLimits) -> Iterator[np.ndarray]:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        pdf = pdfium.PdfDocument(data)
    except pdfium.PdfiumError as e:
        raise DocumentInputError(f"unreadable PDF ({e})") from None
    try:
        n = len(pdf)
        if n == 0:
            raise DocumentInputError("a PDF without pages")
        if n > limits.max_pages:
            raise DocumentInputError(f"{n:,} pages; a certificate has at most"
                                     f" {limits.max_pages}")
        total = 0
        sizes = []
        for i in range(n):  # from the page boxes, before any page is parsed or drawn
            try:
                w, h = pdf.get_page_size(i)
            except pdfium.PdfiumError:
                raise DocumentInputError(f"page {i + 1} has no readable size") from None
            px_w, px_h = math.ceil(w * _SCALE), math.ceil(h * _SCALE)
            if px_w < 1 or px_h < 1:
                raise DocumentInputError(f"page {i + 1} is empty ({_mm(w)} × {_mm(h)} mm)")
            if px_w * px_h > limits.max_page_pixels:
                raise DocumentInputError(
                    f"page {i + 1} is {_mm(w)} × {_mm(h)} mm, too large to be a certificate"
                    f" (at most {limits.max_page_pixels:,} pixels at {PDF_DPI} dpi: A3)")
            total += px_w * px_h
            sizes.append((w, h))
        if total > limits.max_pdf_pixels:
            raise DocumentInputError(
                f"{n} pages of {total:,} pixels at {PDF_DPI} dpi; at most"
                f" {limits.max_pdf_pixels:,} in all (about {limits.max_pages} A4 pages)")
        for i in range(n):
            page = pdf[i]
            try:
                _count_objects(lambda j, p=page: pdfium_c.FPDFPage_GetObject(p, j),
                               pdfium_c.FPDFPage_CountObjects(page), limits,
                               [limits.max_page_objects])
                bitmap = page.render(scale=_SCALE, grayscale=True)
                try:
                    grey = _grey(bitmap.to_numpy()).copy()
                finally:
                    bitmap.close()
            except DocumentInputError as e:
                raise DocumentInputError(f"page {i + 1}: {e}" if n > 1 else str(e)) from None
            finally:
                page.close()
            yield grey
    finally:
        pdf.close()


def _grey(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 3:
        arr = (arr[..., :3].astype(np.float32) @ np.array([0.114, 0.587, 0.299], np.float32))
    return np.ascontiguousarray(arr, dtype=np.uint8)


def _raster_images(data: bytes, limits: InputLimits) -> Iterator[np.ndarray]:
    from PIL import Image

    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except Image.DecompressionBombError:
        raise DocumentInputError(f"the image is too large to be a page (over"
                                 f" {Image.MAX_IMAGE_PIXELS or 0:,} pixels)") from None
    except Exception as e:  # any decoder failure on untrusted bytes is bad input
        raise DocumentInputError(f"neither a PDF nor a readable image ({type(e).__name__})"
                                 ) from None
    with img:
        frames = getattr(img, "n_frames", 1)
        if frames > limits.max_pages:
            raise DocumentInputError(f"an image of {frames} frames; at most"
                                     f" {limits.max_pages} pages")
        total = 0
        for i in range(frames):
            try:
                img.seek(i)
                w, h = img.size
                total += w * h
                if w * h > limits.max_image_pixels or total > limits.max_pdf_pixels:
                    raise DocumentInputError(
                        f"the image is too large to be a page ({w:,} × {h:,}; at most"
                        f" {limits.max_image_pixels:,} pixels)")
                grey = np.asarray(img.convert("L"))
            except DocumentInputError:
                raise
            except Exception as e:  # truncated or malformed image data
                raise DocumentInputError(f"a damaged image ({type(e).__name__})") from None
            yield np.ascontiguousarray(grey, dtype=np.uint8)


def iter_images(data: bytes, limits: InputLimits = DEFAULT_LIMITS) -> Iterator[np.ndarray]:
    """Greyscale pages of ``data``, one at a time: each PDF page rasterised at 300 dpi, or
    each frame of an image. In this process: for input that is not hostile (our own
    renders, tests); anything from outside goes through :func:`scan_pages` or
    :func:`rendered_pages`."""
    if data[:5] == b"%PDF-":
        yield from _pdf_images(data, limits)
    else:
        yield from _raster_images(data, limits)


# The child: reads the input on stdin, writes one frame per page on stdout.
#   {"page": n, "seals": [hex...], "unreadable": bool}\n             (mode "seals")
#   {"page": n, "shape": [h, w]}\n + h*w bytes                        (mode "images")
#   {"error": "message"}\n                                            (bad input; then exits)
#   {"end": n}\n                                                      (all pages done)

Mode = Literal["seals", "images"]


def _child_main(argv: list[str]) -> int:
    """Entry point of the child (``python -c ...``): limits itself, then reads stdin."""
    limits = InputLimits(**json.loads(argv[0]))
    mode = argv[1]
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a library printing on stdout must not corrupt the frames
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    cpu = max(math.ceil(limits.cpu_seconds), 1)
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))

    def frame(obj: dict[str, Any], payload: bytes = b"") -> None:
        out.write(json.dumps(obj).encode() + b"\n" + payload)
        out.flush()

    try:
        from PIL import Image

        from kiosk.documents.seal import read_seal_bytes

        Image.MAX_IMAGE_PIXELS = limits.max_image_pixels  # Pillow's own check, at open

        data = sys.stdin.buffer.read(limits.max_bytes + 1)
        if not data:
            raise DocumentInputError("an empty file")
        n = 0
        for n, grey in enumerate(iter_images(data, limits), 1):
            if mode == "seals":
                found, bad = read_seal_bytes(grey)
                frame({"page": n, "seals": [s.hex() for s in found], "unreadable": bad})
            else:
                frame({"page": n, "shape": list(grey.shape)}, grey.tobytes())
        frame({"end": n})
    except DocumentInputError as e:
        frame({"error": str(e)})
    except MemoryError:
        frame({"error": f"needs more than the {limits.memory_bytes // 2**20} MiB allowed"
                        " for reading one input"})
    return 0


_CHILD = ("import sys; from kiosk.documents.pages import _child_main;"
          " sys.exit(_child_main(sys.argv[1:]))")
_MAX_HEADER = 1 << 20


def _frames(data: bytes, source: str, limits: InputLimits, mode: Mode
            ) -> Iterator[tuple[dict[str, Any], bytes]]:
    """Run the child on ``data`` and yield its page frames; every way it can fail (bad
    input, deadline, memory, a crash) is one :class:`DocumentInputError` line."""
    debug = bool(os.environ.get("CARDIO_DEBUG"))
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(asdict(limits)), mode],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=None if debug else subprocess.DEVNULL, env=env,
                            close_fds=True)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        proc.kill()

    timer = threading.Timer(limits.wall_seconds, expire)
    timer.daemon = True
    timer.start()
    assert proc.stdin is not None and proc.stdout is not None

    def failed() -> DocumentInputError:
        proc.kill()
        rc = proc.wait()
        if expired.is_set() or rc == -signal.SIGXCPU:
            spent = (f"{limits.wall_seconds:g} s" if expired.is_set() else
                     f"{math.ceil(limits.cpu_seconds):g} s of CPU time")
            return DocumentInputError(
                f"{source}: gave up after {spent} (the limit for one input; a certificate"
                " page takes well under a second)")
        return DocumentInputError(
            f"{source}: the page reader failed on this input (it needs more than the"
            f" {limits.memory_bytes // 2**20} MiB allowed, or is damaged); not a document"
            " this tool reads")

    try:
        try:
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:  # the child died before reading it all
            raise failed() from None
        while True:
            line = proc.stdout.readline(_MAX_HEADER)
            try:
                head = json.loads(line)
            except ValueError:
                raise failed() from None
            if "error" in head:
                raise DocumentInputError(f"{source}: {head['error']}")
            if "end" in head:
                return
            payload = b""
            if mode == "images":
                h, w = head["shape"]
                payload = _read_exactly(proc.stdout, h * w)
                if len(payload) != h * w:
                    raise failed()
            yield head, payload
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()


def _read_exactly(f: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def scan_pages(data: bytes, source: str, limits: InputLimits = DEFAULT_LIMITS
               ) -> list[PageScan]:
    """The DataMatrix symbols on every page of ``data``, read in a bounded child process."""
    return [PageScan(head["page"], tuple(bytes.fromhex(s) for s in head["seals"]),
                     bool(head["unreadable"]))
            for head, _ in _frames(data, source, limits, "seals")]


def rendered_pages(data: bytes, source: str, limits: InputLimits = DEFAULT_LIMITS
                   ) -> Iterator[np.ndarray]:
    """The greyscale pages of ``data``, rendered in a bounded child process, one at a time
    (stop early and the child is stopped)."""
    for head, payload in _frames(data, source, limits, "images"):
        h, w = head["shape"]
        yield np.frombuffer(payload, np.uint8).reshape(h, w)
