"""Lay a certificate out on A4 and draw it as a PDF (for the printer) or a raster (PNG).

One layout, two back ends: :func:`layout` turns a :class:`Document` into pages of drawing
operations in millimetres, and both the PDF writer (reportlab, IPA fonts embedded) and the
rasteriser (Pillow into :class:`PagePlanes` ink planes) draw the same operations. That keeps
the PDF the printer gets and the PNG the tests measure from drifting apart, and lets the
rasteriser also draw each element's mask (``--layers-out``).

Every sheet has a front (content, 公印, seal, page number, けん制文字) and a back (けん制文字,
the IR latent mark, the seal, and on the first sheet the スクランブル画像), as J-LIS pages do
(the seal on the back is ours: a verifier vouches only for pages that carry it).
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np
from PIL import Image, ImageDraw

from kiosk.documents.layers import (
    DEVICE_DPI,
    IrLatentMark,
    PagePlanes,
    ScrambleImage,
    VoidPantograph,
    pil_font,
)
from kiosk.documents.model import Document
from kiosk.documents.seal import SEAL_FIELDS, seal_matrix

__all__ = [
    "A4_MM",
    "Page",
    "RenderedPage",
    "SecurityParams",
    "layout",
    "rasterize",
    "render_pages",
    "render_pdf",
]

A4_MM = (210.0, 297.0)
MM_PER_PT = 25.4 / 72
SEAL_DOTS_PER_MODULE = 8  # 8 dots at 600 dpi = 0.3387 mm, the ICAO minimum module

Ink = Literal["k", "g", "red"]
Side = Literal["front", "back"]


@dataclass(frozen=True)
class SecurityParams:
    """Every anti-forgery layer's parameters in one place (per printer model)."""

    pantograph: VoidPantograph = field(default_factory=VoidPantograph)
    latent: IrLatentMark = field(default_factory=IrLatentMark)
    scramble: ScrambleImage = field(default_factory=ScrambleImage)


@dataclass(frozen=True)
class Text:
    x: float
    y: float  # baseline, mm from the top
    size: float  # points
    text: str
    face: str = "mincho"
    ink: Ink = "k"
    anchor: Literal["l", "m", "r"] = "l"
    coverage: float = 1.0
    layer: str = "text"


@dataclass(frozen=True)
class Line:
    x0: float
    y0: float
    x1: float
    y1: float
    width: float  # mm
    ink: Ink = "k"
    layer: str = "text"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    width: float  # stroke, mm
    ink: Ink = "k"
    layer: str = "text"


@dataclass(frozen=True)
class Disc:
    cx: float
    cy: float
    r: float
    ink: Ink
    coverage: float
    layer: str
    ring: float = 0.0  # > 0: a ring of this stroke width instead of a filled disc


@dataclass(frozen=True)
class Bitmap:
    """A bool image (True = K ink) placed at x, y, w, h mm; drawn with square pixels."""

    x: float
    y: float
    w: float
    h: float
    data: np.ndarray
    layer: str


Op = Text | Line | Rect | Disc | Bitmap


@dataclass
class Page:
    side: Side
    sheet: int
    ops: list[Op]
    pantograph_keepout: list[tuple[float, float, float, float]] = field(default_factory=list)


def _era(d: datetime) -> str:
    """令和 date as printed on certificates."""
    y = d.year - 2018
    return f"令和{'元' if y == 1 else y}年{d.month}月{d.day}日"


def _wrap(text: str, width_mm: float, size_pt: float) -> list[str]:
    per = max(int(width_mm / (size_pt * MM_PER_PT)), 1)  # full-width glyphs are 1 em
    return [text[i:i + per] for i in range(0, len(text), per)] or [""]


def _stamp(cx: float, cy: float, text: str, size: float = 21.0) -> list[Op]:
    """The 公印 (角印): a red square with a double border and the seal text in vertical
    columns read right to left. Generated from the municipality's seal text."""
    ops: list[Op] = [Rect(cx - size / 2, cy - size / 2, size, size, 1.0, "red", "stamp"),
                     Rect(cx - size / 2 + 1.6, cy - size / 2 + 1.6, size - 3.2, size - 3.2, 0.35,
                          "red", "stamp")]
    n = len(text)
    cols = 3 if n > 4 else 2
    per_col = -(-n // cols)
    inner = size - 5.0
    cell_w, cell_h = inner / cols, inner / per_col
    pt = min(cell_w, cell_h) / MM_PER_PT * 0.92
    for i, ch in enumerate(text):
        col, row = divmod(i, per_col)
        x = cx + inner / 2 - (col + 0.5) * cell_w
        y = cy - inner / 2 + (row + 0.5) * cell_h + pt * MM_PER_PT * 0.36
        ops.append(Text(x, y, pt, ch, "mincho", "red", "m", layer="stamp"))
    return ops


def _scramble_lines(doc: Document) -> list[str]:
    vals = [doc.find(k)[0] for k in SEAL_FIELDS[doc.doc_type] if doc.find(k)]
    return [doc.title, doc.issue_number, *vals][:5]


def layout(doc: Document, seal: bytes, scramble_key: bytes,
           params: SecurityParams | None = None) -> list[Page]:
    """Pages of ``doc``: front and back of each sheet, in print order."""
    params = params or SecurityParams()
    matrix = seal_matrix(seal)
    fronts: list[list[Op]] = [[]]
    y, bottom = 44.0, 212.0
    label_x, value_x, right = 22.0, 62.0, 190.0
    size = 10.0
    row_h = size * MM_PER_PT + 3.2
    for section in doc.sections:
        needed = row_h * (1 + min(len(section.fields), 3))
        if y + needed > bottom:
            fronts.append([])
            y = 44.0
        ops = fronts[-1]
        ops.append(Text(label_x, y + row_h - 2.4, 9.5, f"【{section.title}】", "gothic"))
        y += row_h
        for f in section.fields:
            lines = _wrap(f.value, right - value_x - 2, size)
            h = row_h * len(lines)
            if y + h > bottom:
                ops.append(Line(label_x, y, right, y, 0.2))
                fronts.append([])
                ops = fronts[-1]
                y = 44.0
                ops.append(Text(label_x, y + row_h - 2.4, 9.5, f"【{section.title}】（続き）",
                                "gothic"))
                y += row_h
            ops.append(Line(label_x, y, right, y, 0.2))
            ops.append(Text(label_x + 1, y + row_h - 2.4, size, f.label, "gothic"))
            for i, line in enumerate(lines):
                ops.append(Text(value_x, y + row_h * (i + 1) - 2.4, size, line))
            y += h
        ops.append(Line(label_x, y, right, y, 0.2))
        y += 3.0
    n = len(fronts)
    pages: list[Page] = []
    for i, ops in enumerate(fronts, 1):
        head: list[Op] = [
            Text(105.0, 32.0, 20.0, doc.title, anchor="m"),
            Text(right, 18.0, 9.0, f"発行番号　{doc.issue_number}", "gothic", anchor="r"),
            Text(right, 23.0, 9.0, f"{doc.municipality.name}", "gothic", anchor="r"),
            Line(label_x, 38.0, right, 38.0, 0.5),
        ]
        foot: list[Op] = [Text(105.0, 290.0, 9.0, f"{i} / {n}", "gothic", anchor="m")]
        if i == n:
            yy = 220.0
            for note in doc.notes:
                foot.append(Text(label_x + 30, yy, 9.0, note, "gothic"))
                yy += 5.0
            foot += [
                Text(62.0, 232.0, 11.0, doc.certification),
                Text(62.0, 241.0, 11.0, _era(doc.issued_at)),
                Text(175.0, 256.0, 13.0, doc.municipality.mayor, anchor="r"),
                *_stamp(178.0, 252.0, doc.municipality.seal_text),
            ]
        else:
            foot.append(Text(right, 232.0, 9.0, "（次葉へ続く）", "gothic", anchor="r"))
        seal_ops, seal_keepout = _seal(matrix)
        pages.append(Page("front", i, head + ops + foot + seal_ops, [seal_keepout]))
        back = _back(doc, i, params, scramble_key if i == 1 else None)
        back.ops += seal_ops
        back.pantograph_keepout.append(seal_keepout)
        pages.append(back)
    return pages


def _seal(matrix: np.ndarray) -> tuple[list[Op], tuple[float, float, float, float]]:
    """The seal and its caption, and the area the けん制文字 keeps out of (its quiet zone).

    The same seal goes on every page, front and back: a verifier vouches only for a page
    that carries it (a forged page slipped among genuine ones carries none), so a genuine
    sheet must carry it on both sides. The digest inside covers the whole document."""
    seal_mm = matrix.shape[1] * SEAL_DOTS_PER_MODULE / DEVICE_DPI * 25.4
    seal_x, seal_y = 22.0, 226.0
    ops: list[Op] = [
        Bitmap(seal_x, seal_y, seal_mm, seal_mm * matrix.shape[0] / matrix.shape[1], matrix,
               "seal"),
        Text(seal_x, seal_y + seal_mm + 4.0, 6.5, "電子署名コード（オフライン検証用）", "gothic"),
    ]
    quiet = 2 * SEAL_DOTS_PER_MODULE / DEVICE_DPI * 25.4 + 1.0
    return ops, (seal_x - quiet, seal_y - quiet, seal_mm + 2 * quiet, seal_mm + 2 * quiet)


def _back(doc: Document, sheet: int, params: SecurityParams,
          scramble_key: bytes | None) -> Page:
    ops: list[Op] = [
        Text(22.0, 22.0, 9.0, "この証明書は、偽造・改ざん防止のため次の措置を施しています。",
             "gothic"),
        Text(22.0, 28.0, 8.0, "・けん制文字（複写すると「複写」の文字が現れます）　"
             "・偽造防止検出画像（赤外線で「証」が見えます）", "gothic"),
        Text(22.0, 33.0, 8.0, "・スクランブル画像（照会サイトで復号し表面と照合できます）　"
             "・電子署名コード（両面）", "gothic"),
    ]
    lm = params.latent
    cx, cy, r = 160.0, 75.0, lm.diameter_mm / 2
    # A five-petal flower of CMY grey; the K 「証」 in a ring is knocked out of it.
    petal = r * 0.42
    for a in range(5):
        ang = np.deg2rad(90 + 72 * a)
        ops.append(Disc(cx + (r - petal) * float(np.cos(ang)),
                        cy - (r - petal) * float(np.sin(ang)), petal, "g", lm.coverage,
                        "latent-surround"))
    ops.append(Disc(cx, cy, r * 0.62, "g", lm.coverage, "latent-surround"))
    ops.append(Disc(cx, cy, r * 0.5, "k", lm.coverage, "latent", ring=1.6))
    gsize = r * 0.62 / MM_PER_PT
    ops.append(Text(cx, cy + gsize * MM_PER_PT * 0.36, gsize, lm.glyph, "gothic", "k", "m",
                    lm.coverage, "latent"))
    ops.append(Text(cx, cy + r + 6.0, 7.0, "偽造防止検出画像", "gothic", anchor="m"))
    if scramble_key is not None:
        sc = params.scramble
        img = sc.framed(sc.scramble(sc.content(_scramble_lines(doc)), scramble_key))
        w = img.shape[1] / DEVICE_DPI * 25.4
        h = img.shape[0] / DEVICE_DPI * 25.4
        x, y = (210.0 - w) / 2, 130.0
        ops.append(Bitmap(x, y, w, h, img, "scramble"))
        ops.append(Text(105.0, y + h + 6.0, 7.0, "スクランブル画像（照会用）", "gothic",
                        anchor="m"))
    m = 1.5  # the latent image is its own printed element: no けん制文字 under it
    keepout = [(cx - r - m, cy - r - m, 2 * (r + m), 2 * (r + m))]
    return Page("back", sheet, ops, keepout)


# ---------------------------------------------------------------- raster back end


@dataclass
class RenderedPage:
    """A rasterised page and, if asked for, each element's mask (bool, page-sized)."""

    page: Page
    planes: PagePlanes
    masks: dict[str, np.ndarray]


def _px(mm: float, dpi: int) -> int:
    return round(mm / 25.4 * dpi)


def page_shape(dpi: int) -> tuple[int, int]:
    return (_px(A4_MM[1], dpi), _px(A4_MM[0], dpi))


class _Canvas:
    def __init__(self, shape: tuple[int, int], dpi: int, want_masks: bool) -> None:
        self.dpi, self.shape, self.want_masks = dpi, shape, want_masks
        self.planes = {ink: Image.new("L", (shape[1], shape[0]), 0) for ink in ("k", "g", "red")}
        self.draws = {ink: ImageDraw.Draw(img) for ink, img in self.planes.items()}
        self.masks: dict[str, Image.Image] = {}
        self.bitmaps: list[Bitmap] = []

    def _targets(self, ink: str, layer: str) -> list[tuple[ImageDraw.ImageDraw, int]]:
        out = [(self.draws[ink], 255)]
        if self.want_masks:
            if layer not in self.masks:
                self.masks[layer] = Image.new("L", (self.shape[1], self.shape[0]), 0)
            out.append((ImageDraw.Draw(self.masks[layer]), 255))
        return out

    def draw(self, op: Op) -> None:
        dpi = self.dpi
        if isinstance(op, Text):
            font = pil_font(op.face, _px(op.size * MM_PER_PT, dpi))
            anchor = {"l": "ls", "m": "ms", "r": "rs"}[op.anchor]
            fill = round(op.coverage * 255)
            # The latent mark is drawn without anti-aliasing: a partly-K, partly-CMY edge
            # pixel would be lighter than both and outline the mark to the eye.
            mode = "1" if op.layer.startswith("latent") else "L"
            for d, _ in self._targets(op.ink, op.layer):
                d.fontmode = mode
                d.text((_px(op.x, dpi), _px(op.y, dpi)), op.text, font=font,
                       fill=fill if d is self.draws[op.ink] else 255, anchor=anchor)
            if op.ink == "k" and op.layer == "latent":  # knock the mark out of the grey
                self.draws["g"].fontmode = mode
                self.draws["g"].text((_px(op.x, dpi), _px(op.y, dpi)), op.text, font=font,
                                     fill=0, anchor=anchor)
        elif isinstance(op, Line):
            w = max(_px(op.width, dpi), 1)
            for d, fill in self._targets(op.ink, op.layer):
                d.line([(_px(op.x0, dpi), _px(op.y0, dpi)), (_px(op.x1, dpi), _px(op.y1, dpi))],
                       fill=fill, width=w)
        elif isinstance(op, Rect):
            w = max(_px(op.width, dpi), 1)
            for d, fill in self._targets(op.ink, op.layer):
                d.rectangle([_px(op.x, dpi), _px(op.y, dpi), _px(op.x + op.w, dpi),
                             _px(op.y + op.h, dpi)], outline=fill, width=w)
        elif isinstance(op, Disc):
            box = [_px(op.cx - op.r, dpi), _px(op.cy - op.r, dpi), _px(op.cx + op.r, dpi),
                   _px(op.cy + op.r, dpi)]
            fill = round(op.coverage * 255)
            for d, f in self._targets(op.ink, op.layer):
                v = fill if d is self.draws[op.ink] else f
                if op.ring:
                    d.ellipse(box, outline=v, width=max(_px(op.ring, dpi), 1))
                else:
                    d.ellipse(box, fill=v)
            if op.ink == "k" and op.layer == "latent":
                if op.ring:
                    self.draws["g"].ellipse(box, outline=0, width=max(_px(op.ring, dpi), 1))
                else:
                    self.draws["g"].ellipse(box, fill=0)
        else:
            self.bitmaps.append(op)

    def place(self, op: Bitmap, k: np.ndarray, masks: dict[str, np.ndarray]) -> None:
        x0, y0 = _px(op.x, self.dpi), _px(op.y, self.dpi)
        x1, y1 = _px(op.x + op.w, self.dpi), _px(op.y + op.h, self.dpi)
        img = Image.fromarray(op.data.astype(np.uint8) * 255).resize(
            (x1 - x0, y1 - y0), Image.Resampling.NEAREST if self.dpi >= DEVICE_DPI
            else Image.Resampling.BOX)
        arr = np.asarray(img)
        k[y0:y1, x0:x1] = arr  # opaque: the element owns its area
        if self.want_masks:
            m = masks.setdefault(op.layer, np.zeros(self.shape, bool))
            m[y0:y1, x0:x1] |= arr > 0


@functools.lru_cache(maxsize=2)
def _pantograph_base(params: VoidPantograph, shape_600: tuple[int, int]
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The page's けん制文字 before keep-outs: the same for every page a printer prints, so it
    is made once per process (~0.5 s at 600 dpi) and copied per page."""
    arrays = params.render(shape_600)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def _pantograph(params: VoidPantograph, shape_600: tuple[int, int],
                keepout: Iterable[tuple[float, float, float, float]]
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dots, area, word_dots = (a.copy() for a in _pantograph_base(params, shape_600))
    for x, y, w, h in keepout:
        sl = (slice(_px(y, DEVICE_DPI), _px(y + h, DEVICE_DPI)),
              slice(_px(x, DEVICE_DPI), _px(x + w, DEVICE_DPI)))
        dots[sl] = False
        area[sl] = False
        word_dots[sl] = False
    return dots, area, word_dots


def rasterize(page: Page, dpi: int = DEVICE_DPI, *, masks: bool = False,
              params: SecurityParams | None = None, pantograph: bool = True) -> RenderedPage:
    """Draw ``page`` into ink planes at ``dpi``. The けん制文字 is generated in 600 dpi device
    dots and area-averaged to other resolutions (it is a print-engine feature);
    ``pantograph=False`` leaves it out (the bench's baseline)."""
    params = params or SecurityParams()
    shape = page_shape(dpi)
    canvas = _Canvas(shape, dpi, masks)
    for op in page.ops:
        canvas.draw(op)
    k = np.array(canvas.planes["k"])
    g = np.asarray(canvas.planes["g"])
    red = np.asarray(canvas.planes["red"])
    out_masks = {name: np.asarray(m) > 0 for name, m in canvas.masks.items()}
    if not pantograph:
        for op in canvas.bitmaps:
            canvas.place(op, k, out_masks)
        return RenderedPage(page, PagePlanes(k, np.ascontiguousarray(g),
                                             np.ascontiguousarray(red), dpi), out_masks)
    dots, area, word_dots = _pantograph(params.pantograph, page_shape(DEVICE_DPI),
                                        page.pantograph_keepout)
    if dpi == DEVICE_DPI:
        pk = dots.view(np.uint8) * np.uint8(255)
    else:
        pk = np.asarray(Image.fromarray(dots.view(np.uint8) * np.uint8(255)).resize(
            (shape[1], shape[0]), Image.Resampling.BOX))
    # Under the colour inks the pantograph is still printed (it is a background) — except
    # where an element owns its area (seal, scramble), placed below.
    # Two K layers on one spot: coverages combine as 1 - (1-a)(1-b) (equal to max() for the
    # 600 dpi binary dots, and right for area-averaged ones at lower resolutions).
    k = (255 - (255 - k.astype(np.uint16)) * (255 - pk.astype(np.uint16)) // 255).astype(np.uint8)
    for op in canvas.bitmaps:
        canvas.place(op, k, out_masks)
    if masks:
        if dpi == DEVICE_DPI:
            out_masks["pantograph-word"] = word_dots
            out_masks["pantograph-word-area"] = area
            out_masks["pantograph-background"] = dots & ~area
        else:
            for name, m in (("pantograph-word", word_dots), ("pantograph-word-area", area),
                            ("pantograph-background", dots & ~area)):
                out_masks[name] = np.asarray(Image.fromarray(m.view(np.uint8) * np.uint8(255))
                                             .resize((shape[1], shape[0]),
                                                     Image.Resampling.BOX)) > 0
    return RenderedPage(page, PagePlanes(k, np.ascontiguousarray(g), np.ascontiguousarray(red),
                                         dpi), out_masks)


def render_pages(doc: Document, seal: bytes, scramble_key: bytes, dpi: int = DEVICE_DPI, *,
                 masks: bool = False, params: SecurityParams | None = None,
                 which: Iterable[int] | None = None) -> list[RenderedPage]:
    """Rasterise the document's pages (all, or the indices in ``which``)."""
    pages = layout(doc, seal, scramble_key, params)
    idx = range(len(pages)) if which is None else which
    return [rasterize(pages[i], dpi, masks=masks, params=params) for i in idx]


# ---------------------------------------------------------------- PDF back end

_INK_CMYK = {"k": (0.0, 0.0, 0.0, 1.0), "g": (1.0, 1.0, 1.0, 0.0), "red": (0.0, 0.9, 0.85, 0.0)}


def register_fonts() -> None:
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    from kiosk.documents.layers import font_path

    for face, name in (("mincho", "IPAMincho"), ("gothic", "IPAGothic")):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(font_path(face))))


def _draw_bilevel(c: Any, ink: np.ndarray, x: float, y: float, w: float, h: float) -> None:
    """Place a bool image (True = K ink) as a 1-bit DeviceGray image XObject.

    reportlab's ``drawImage`` would expand a 600 dpi A4 page to 8-bit RGB (105 MB) and
    deflate that; a 1-bit, packed, deflated stream of the same pixels is 24× smaller in and
    far faster. This uses reportlab's image-XObject registration the way ``drawImage`` does.
    """
    import hashlib
    import zlib

    from reportlab.pdfbase import pdfdoc

    packed = np.packbits(~ink, axis=1).tobytes()  # DeviceGray 1 bit: 1 = white
    name = "bilevel" + hashlib.sha1(packed).hexdigest()
    reg = c._doc.getXObjectName(name)
    if not c._doc.idToObject.get(reg):
        obj = pdfdoc.PDFImageXObject(name)
        obj.width, obj.height = int(ink.shape[1]), int(ink.shape[0])
        obj.bitsPerComponent, obj.colorSpace = 1, "DeviceGray"
        obj._filters = ("FlateDecode",)
        obj.streamContent = zlib.compress(packed, 6)
        c._setXObjects(obj)
        c._doc.Reference(obj, reg)
        c._doc.addForm(name, obj)
    c._currentPageHasImages = 1
    c.saveState()
    c.translate(x, y)
    c.scale(w, h)
    c._code.append(f"/{reg} Do")
    c.restoreState()
    c._formsinuse.append(name)


def render_pdf(doc: Document, seal: bytes, scramble_key: bytes,
               params: SecurityParams | None = None) -> bytes:
    """The print-ready PDF: vector text and 公印 in the IPA fonts, the latent mark as K and
    CMY fills (so the separation reaches the printer), the けん制文字, seal and scramble
    image as 600 dpi images. Returned as bytes: certificates never touch the disk unasked."""
    from reportlab.pdfgen import canvas as rl_canvas

    params = params or SecurityParams()
    register_fonts()
    buf = io.BytesIO()
    pt = 72 / 25.4
    w_pt, h_pt = A4_MM[0] * pt, A4_MM[1] * pt
    c = rl_canvas.Canvas(buf, pagesize=(w_pt, h_pt), pageCompression=1)
    c.setTitle(doc.title)
    c.setAuthor(doc.municipality.name)
    c.setCreator("cardio kiosk.documents")
    shape_600 = page_shape(DEVICE_DPI)
    for page in layout(doc, seal, scramble_key, params):
        dots, _, _ = _pantograph(params.pantograph, shape_600, page.pantograph_keepout)
        _draw_bilevel(c, dots, 0, 0, w_pt, h_pt)
        for op in page.ops:
            if isinstance(op, Text):
                cy, m, yy, kk = _INK_CMYK[op.ink]
                f = op.coverage
                c.setFillColorCMYK(cy * f, m * f, yy * f, kk * f)
                c.setFont("IPAMincho" if op.face == "mincho" else "IPAGothic", op.size)
                x, y = op.x * pt, h_pt - op.y * pt
                if op.anchor == "l":
                    c.drawString(x, y, op.text)
                elif op.anchor == "m":
                    c.drawCentredString(x, y, op.text)
                else:
                    c.drawRightString(x, y, op.text)
            elif isinstance(op, Line):
                c.setStrokeColorCMYK(*_INK_CMYK[op.ink])
                c.setLineWidth(op.width * pt)
                c.line(op.x0 * pt, h_pt - op.y0 * pt, op.x1 * pt, h_pt - op.y1 * pt)
            elif isinstance(op, Rect):
                c.setStrokeColorCMYK(*_INK_CMYK[op.ink])
                c.setLineWidth(op.width * pt)
                c.rect(op.x * pt, h_pt - (op.y + op.h) * pt, op.w * pt, op.h * pt,
                       stroke=1, fill=0)
            elif isinstance(op, Disc):
                cy, m, yy, kk = _INK_CMYK[op.ink]
                f = op.coverage
                if op.ring:
                    c.setStrokeColorCMYK(cy * f, m * f, yy * f, kk * f)
                    c.setLineWidth(op.ring * pt)
                    c.circle(op.cx * pt, h_pt - op.cy * pt, (op.r - op.ring / 2) * pt,
                             stroke=1, fill=0)
                else:
                    c.setFillColorCMYK(cy * f, m * f, yy * f, kk * f)
                    c.circle(op.cx * pt, h_pt - op.cy * pt, op.r * pt, stroke=0, fill=1)
            else:
                _draw_bilevel(c, op.data.astype(bool), op.x * pt, h_pt - (op.y + op.h) * pt,
                              op.w * pt, op.h * pt)
        c.showPage()
    c.save()
    return buf.getvalue()
