"""Printed certificates: render one page with all layers at 600 dpi (goal ≤ 1 s) and verify
a 12-megapixel phone photo (goal ≤ 500 ms), each beside a baseline measured in this process.

Render baseline: the same page without the けん制文字 (text, 公印, seal only). Verify
baseline: decoding the photo's JPEG alone (a verifier cannot do less). Also: the back page,
the whole PDF, and PNG encoding. Prints figures; never fails for being slow.
"""

from __future__ import annotations

import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from kiosk.documents.render import layout, rasterize, render_pdf
from kiosk.documents.samples import sample_document
from kiosk.documents.seal import key_id, sign_document
from kiosk.documents.simulate import phone_photo, random_phone_settings
from kiosk.documents.trust import TrustEntry
from kiosk.documents.verify import load_pages, verify_image


def timed(fn: Callable[[], object], n: int) -> tuple[float, float, list[float]]:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), max(times), times


def main() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    doc = sample_document("juminhyo")
    seal = sign_document(doc, key)
    scramble_key = bytes(32)
    pages = layout(doc, seal, scramble_key)
    front, back = pages[0], pages[1]

    t = time.perf_counter()
    rasterize(front, 600)
    cold = time.perf_counter() - t
    base_med, _, _ = timed(lambda: rasterize(front, 600, pantograph=False), 5)
    med, worst, _ = timed(lambda: rasterize(front, 600), 5)
    back_med, _, _ = timed(lambda: rasterize(back, 600), 3)
    print(f"render front page, all layers, 600 dpi (4961×7016): median {med * 1000:.0f} ms, "
          f"max {worst * 1000:.0f} ms (goal ≤ 1000 ms: {'met' if med <= 1 else 'NOT met'}); "
          f"first call {cold * 1000:.0f} ms (fonts + pantograph generation)")
    print(f"  baseline without けん制文字: {base_med * 1000:.0f} ms → layers cost "
          f"×{med / base_med:.2f}")
    print(f"render back page (latent mark, scramble, けん制文字), 600 dpi: "
          f"{back_med * 1000:.0f} ms")
    rp = rasterize(front, 600)
    png_med, _, _ = timed(lambda: Image.fromarray(rp.planes.visible_rgb()).save(
        io.BytesIO(), format="PNG", compress_level=1), 2)
    print(f"PNG encoding of that page (compress level 1): {png_med * 1000:.0f} ms")
    pdf_med, _, _ = timed(lambda: render_pdf(doc, seal, scramble_key), 3)
    print(f"whole PDF (2 pages, vector text, 600 dpi 1-bit layers): {pdf_med * 1000:.0f} ms, "
          f"{len(render_pdf(doc, seal, scramble_key)) // 1024} KiB")

    from datetime import datetime, timedelta, timezone

    jst = timezone(timedelta(hours=9))
    trust = [TrustEntry(key_id(key.public_key()), doc.municipality.code, "", key.public_key(),
                        datetime(2026, 1, 1, tzinfo=jst), datetime(2030, 1, 1, tzinfo=jst))]
    now = datetime(2026, 11, 25, tzinfo=jst)
    rgb = rasterize(front, 300).planes.visible_rgb()
    rng = np.random.default_rng(7)
    photos = [phone_photo(rgb, random_phone_settings(rng)) for _ in range(10)]
    verify_times, decode_times, ok = [], [], 0
    for jpeg in photos:
        t = time.perf_counter()
        Image.open(io.BytesIO(jpeg)).convert("L").load()
        decode_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        v = verify_image(load_pages(jpeg).images, trust, now=now, content=doc)
        verify_times.append(time.perf_counter() - t)
        ok += v.valid
    vm, dm = statistics.median(verify_times), statistics.median(decode_times)
    print(f"verify from a 12 MP phone photo (JPEG → seal → ES256 → digest): median "
          f"{vm * 1000:.0f} ms, max {max(verify_times) * 1000:.0f} ms over {len(photos)} photos, "
          f"{ok} valid (goal ≤ 500 ms: {'met' if vm <= 0.5 else 'NOT met'})")
    print(f"  baseline JPEG decode alone: {dm * 1000:.0f} ms → verification is "
          f"×{vm / dm:.2f} of decoding")


if __name__ == "__main__":
    main()
