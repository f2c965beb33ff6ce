"""No certificate at rest on the kiosk: sessions through the real stack — ``kiosk run``
with its touch screen in Chromium on a persistent profile, the emulated IPP printer, the
issuance center — then every place the kiosk's processes could write (its journal with
WAL, stdout/stderr logs, its temp directory and HOME, the browser's profile and cache, the
output tray, which a kiosk with a printer does not have) is searched for each resident's
name, address, birth date and 個人番号, in the encodings a file would hold them, and for
any PDF at all. The same search is run once more with the data planted, so it can fail."""

from __future__ import annotations

import json
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from kiosk.runner import lab_feeder
from kiosk.ui.autopilot import drive_issuance
from tests.emulators.issuance.conftest import Service
from tests.kiosk.test_runner import printed_pages
from tests.kiosk.ui.conftest import start_kiosk

pytestmark = pytest.mark.slow


def needles(svc: Service, resident_id: str) -> dict[str, list[bytes]]:
    """Each personal item as the byte strings a file could hold it in: UTF-8, JSON's
    ``\\uXXXX`` escapes, UTF-16 (a browser's storage), the birth date in the forms a page
    or a log would use."""
    with svc.db.tx() as t:
        name, kana, address, birth, my_number = t.one(
            "SELECT name, kana, address, birth, my_number FROM residents WHERE id=?",
            (resident_id,))
    y, m, d = (int(x) for x in str(birth).split("-"))
    items = {"name": [str(name), str(name).replace(" ", "").replace("\u3000", ""),
                      str(kana)],
             "address": [str(address)],
             "birth": [str(birth), f"{y}年{m}月{d}日", f"{y}/{m:02d}/{d:02d}"],
             "my_number": [str(my_number)]}
    out: dict[str, list[bytes]] = {}
    for k, texts in items.items():
        forms: list[bytes] = []
        for text in texts:
            forms += [text.encode(), text.encode("utf-16-le"),
                      json.dumps(text).strip('"').encode()]
        out[k] = list(dict.fromkeys(forms))
    return out


def _inflated(data: bytes) -> list[bytes]:
    """Deflate streams inside a file (a PDF's content, a compressed cache entry) opened."""
    found = []
    for marker in (b"\x78\x9c", b"\x78\xda", b"\x78\x01"):
        start = 0
        while (i := data.find(marker, start)) >= 0 and len(found) < 200:
            start = i + 1
            try:
                found.append(zlib.decompressobj().decompress(data[i:i + 4_000_000]))
            except zlib.error:
                continue
    return found


def _pdf_text(f: Path) -> bytes:
    """A PDF's text as poppler reads it (a page's glyphs are font codes, not UTF-8)."""
    res = subprocess.run(["pdftotext", "-enc", "UTF-8", str(f), "-"], capture_output=True,
                         timeout=60)
    return "".join(res.stdout.decode("utf-8", "replace").split()).encode()  # layout gaps out


def search(places: list[Path], people: dict[str, dict[str, list[bytes]]]
           ) -> tuple[list[str], int]:
    """(hits as "file: resident item", files searched)."""
    hits: list[str] = []
    files = 0
    for place in places:
        if not place.exists():
            continue
        for f in [place] if place.is_file() else sorted(place.rglob("*")):
            if not f.is_file() or f.is_symlink():
                continue
            try:
                data = f.read_bytes()
            except OSError:
                continue
            files += 1
            blobs = [data, *_inflated(data)]
            if b"%PDF-" in data:
                hits.append(f"{f}: a PDF")
                blobs.append(_pdf_text(f))
            for who, items in people.items():
                for item, forms in items.items():
                    if any(form in blob for blob in blobs for form in forms):
                        hits.append(f"{f}: {who} {item}")
    return hits, files


def test_no_certificate_or_personal_data_at_rest_after_sessions(
        backend: Service, lab: dict[str, Any], tmp_path: Path) -> None:
    if not lab["printer"]:
        pytest.skip("the emulated IPP printer cannot run on this machine")
    base = tmp_path / "kiosk"
    home, tmp, profile = tmp_path / "home", tmp_path / "tmp", tmp_path / "profile"
    for d in (home, tmp):
        d.mkdir()
    env = {"HOME": str(home), "TMPDIR": str(tmp), "XDG_CACHE_HOME": str(home / ".cache"),
           "XDG_CONFIG_HOME": str(home / ".config")}
    kiosk = start_kiosk(backend, lab, base, env=env)
    people: dict[str, dict[str, list[bytes]]] = {}
    pages_before = len(printed_pages(lab))
    try:
        for _ in range(2):
            card = backend.card()
            people[card.resident_id] = needles(backend, card.resident_id)
            result = drive_issuance(
                kiosk.url, pin=card.pin, document="juminhyo",
                insert=lab_feeder(lab["control"]),
                put_card=lambda c=card: kiosk.put(c), take_card=kiosk.take, yen=[1000],
                user_data_dir=profile)
            assert result["outcome"] == "printed", result
            end = kiosk.session_end()
            assert end["outcome"] == "printed" and end["files"] == [], end
            # What the page showed while it lived is not this test's business; what
            # the profile keeps after the session is.
    finally:
        err = kiosk.stop()
    (tmp_path / "kiosk-run.stderr").write_text(err)
    (tmp_path / "kiosk-run.stdout").write_text(
        "\n".join(json.dumps(m, ensure_ascii=False) for m in kiosk.out))
    # The printer did print both (its own spool is the paper, not the kiosk's disk).
    assert len(printed_pages(lab)) - pages_before == 2
    places = [base, home, tmp, profile, tmp_path / "kiosk-run.stderr",
              tmp_path / "kiosk-run.stdout"]
    hits, files = search(places, people)
    print(f"at rest: searched {files} files for {len(people)} residents: {len(hits)} hits")
    assert files >= 10, files  # the journal, its WAL, the browser's profile, the logs …
    assert hits == [], hits
    assert not list(base.glob("**/*.pdf")) and not (base / "out").exists()

    # The search can fail. The printer's own spool (the paper) holds both certificates, and
    # the search finds each resident there — through the PDF's compressed streams.
    spool_hits, _ = search(printed_pages(lab)[pages_before:], people)
    for rid in people:
        assert any(h.endswith(f"{rid} name") for h in spool_hits), spool_hits
        assert any(h.endswith(f"{rid} address") for h in spool_hits), spool_hits
    # And the same data planted where a careless kiosk would keep it.
    rid = next(iter(people))
    planted = profile / "Default" / "planted.txt"
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.write_bytes(people[rid]["address"][0] + b" " + people[rid]["birth"][1])
    (tmp / "job.bin").write_bytes(zlib.compress(people[rid]["name"][0]))
    (base / "copy.pdf").write_bytes(b"%PDF-1.7\n")
    hits, _ = search(places, people)
    assert f"{planted}: {rid} address" in hits and f"{planted}: {rid} birth" in hits
    assert f"{tmp / 'job.bin'}: {rid} name" in hits
    assert f"{base / 'copy.pdf'}: a PDF" in hits
