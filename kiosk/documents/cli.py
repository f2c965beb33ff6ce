"""``doc`` commands: render a sample certificate, verify a page offline, descramble the
スクランブル画像, export the emulated issuers' trust list.

Registered into the ``cardio`` command line through the ``cardio.commands`` entry point
(:func:`register`); errors and exit codes are the host's (:func:`cardio.cli.run`). This is
CLI wiring, so it may use ``emulators`` (the emulated municipal issuers' keys); the library
modules of ``kiosk.documents`` never do.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cardio.cli import emit
from cardio.errors import EXIT_NOT_VALID, CardioError
from kiosk.documents.model import Document, DocumentType

__all__ = ["register"]

MIN_DPI, MAX_DPI = 100, 1200
"""PNG resolutions ``doc render`` takes: an A4 page at 1200 dpi is already ~10000 × 14000
pixels per plane."""
VERDICT_EXIT = EXIT_NOT_VALID  # 6, as for a certificate or CMS signature that is not valid


class DocumentCliError(CardioError):
    """Bad arguments to a ``doc`` command (the message says which and why)."""

    exit_code = 2


def _jlis(args: argparse.Namespace) -> Path | None:
    return Path(args.jlis) if getattr(args, "jlis", None) else None


def _sample_issuer(args: argparse.Namespace) -> Any:
    from emulators.document_issuers import DocumentIssuer
    from kiosk.documents.samples import SAMPLE_MUNICIPALITY

    return DocumentIssuer.load_or_create(SAMPLE_MUNICIPALITY, _jlis(args))


def _save_mask(path: Path, mask: np.ndarray) -> None:
    Image.fromarray(mask.astype(np.uint8) * 255).save(path, optimize=False, compress_level=1)


def cmd_render(args: argparse.Namespace) -> int:
    from kiosk.documents.layers import DEVICE_DPI
    from kiosk.documents.render import layout, render_pages, render_pdf
    from kiosk.documents.samples import sample_document
    from kiosk.documents.seal import seal_matrix, sign_document

    issuer = _sample_issuer(args)
    doc = sample_document(args.sample)
    seal = sign_document(doc, issuer.signing_key)
    out = Path(args.out)
    dpi = DEVICE_DPI if args.dpi is None else args.dpi
    if not MIN_DPI <= dpi <= MAX_DPI:  # 0 or less crashed Pillow; 100000 ate all memory
        raise DocumentCliError(f"--dpi is {MIN_DPI} to {MAX_DPI}, not {dpi}")
    n_pages = len(layout(doc, seal, issuer.scramble_key))
    written: list[str] = []
    if args.png:
        want_masks = args.layers_out is not None
        for i, rp in enumerate(render_pages(doc, seal, issuer.scramble_key, dpi,
                                            masks=want_masks)):
            sheet, back = divmod(i, 2)
            stem = out.stem + (f"-{sheet + 1}" if sheet else "") + ("-back" if back else "")
            path = out if i == 0 else out.with_name(stem + out.suffix)
            Image.fromarray(rp.planes.visible_rgb()).save(path, format="PNG", dpi=(dpi, dpi),
                                                          compress_level=1)
            written.append(str(path))
            if want_masks and sheet == 0:
                _write_masks(Path(args.layers_out), rp.masks, "back-" if back else "")
    else:
        out.write_bytes(render_pdf(doc, seal, issuer.scramble_key))
        written.append(str(out))
        if args.layers_out is not None:
            for i, rp in enumerate(render_pages(doc, seal, issuer.scramble_key, dpi,
                                                masks=True, which=[0, 1])):
                _write_masks(Path(args.layers_out), rp.masks, "back-" if i else "")
    modules = seal_matrix(seal).shape
    obj = {"doc_type": doc.doc_type.value, "files": written, "pages": n_pages,
           "dpi": dpi if args.png else None, "seal_bytes": len(seal),
           "seal_modules": [int(modules[1]), int(modules[0])],
           "seal_mm": round(modules[1] * 8 / DEVICE_DPI * 25.4, 2), "kid": issuer.kid.hex(),
           "layers_out": args.layers_out}
    emit(args, obj, [f"{doc.title}: {n_pages} pages ({n_pages // 2} sheets) → "
                     + ", ".join(written),
                     f"seal: {len(seal)} bytes, {modules[1]}×{modules[0]} modules, "
                     f"{obj['seal_mm']} mm, kid {obj['kid']}"])
    return 0


# Masks that exist once per page pair keep their plain names; the back's copies of elements
# both sides have get a "back-" prefix (the latent mark and the scramble live on the back).
_BACK_ONLY = {"latent", "latent-surround", "scramble"}


def _write_masks(directory: Path, masks: dict[str, np.ndarray], prefix: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    index_path = directory / "layers.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name, m in masks.items():
        fname = (name if name in _BACK_ONLY else prefix + name) + ".png"
        _save_mask(directory / fname, m)
        index[fname] = {"side": "back" if prefix or name in _BACK_ONLY else "front",
                        "element": name, "pixels": int(m.sum()),
                        "size": [int(m.shape[1]), int(m.shape[0])]}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")


TRUST_ENV = "CARDIO_DOC_TRUST_DIR"


def _trust(args: argparse.Namespace) -> list[Any]:
    """The trust list: ``--trust DIR``, ``--trust emu`` (the emulated issuers, asked for by
    name), else ``$CARDIO_DOC_TRUST_DIR``. Without either, only a machine that already runs
    the emulated J-LIS side (its document issuers exist under the J-LIS directory: ``doc
    render`` or ``emu issuance`` made them) verifies against those test keys — with a
    warning on stderr and ``trust_source`` in the JSON. Nothing is created here, so a
    production verifier with no emulator state never trusts a test key by omission: it
    refuses with one line (exit 2)."""
    import os
    import sys

    from kiosk.documents.trust import load_trust_list

    if args.trust and args.trust != "emu":
        args.trust_source = f"--trust {args.trust}"
        return load_trust_list(Path(args.trust))
    if not args.trust and os.environ.get(TRUST_ENV):
        args.trust_source = f"${TRUST_ENV}"
        return load_trust_list(Path(os.environ[TRUST_ENV]))
    from emulators.document_issuers import DocumentIssuer, issuers_dir

    emulated = [i.trust_entry() for i in DocumentIssuer.all(_jlis(args))]
    if args.trust == "emu":
        args.trust_source = "emulated issuers (--trust emu)"
        return emulated
    if not emulated:
        raise DocumentCliError("no trust list: give --trust DIR (the issuers' published keys;"
                               " 'cardio doc trust --out DIR' exports the emulated ones),"
                               f" set ${TRUST_ENV}, or --trust emu for the emulated issuers")
    args.trust_source = "emulated issuers (test keys; no --trust given)"
    print(f"cardio: warning: no --trust given: verifying against the emulated issuers' test"
          f" keys in {issuers_dir(_jlis(args))}; give --trust DIR for real issuers",
          file=sys.stderr)
    return emulated


MAX_CONTENT_BYTES = 1 << 20
"""``--content``: a certificate's canonical JSON is a few kilobytes."""


def cmd_verify(args: argparse.Namespace) -> int:
    import dataclasses

    from kiosk.documents.pages import DEFAULT_LIMITS, read_input
    from kiosk.documents.verify import verify_file

    content = None
    if args.content:
        raw = read_input(Path(args.content),
                         dataclasses.replace(DEFAULT_LIMITS, max_bytes=MAX_CONTENT_BYTES),
                         what="--content ")
        content = Document.from_canonical(raw)
    now = None
    if args.now:
        try:
            now = datetime.fromisoformat(args.now)
        except ValueError:
            raise DocumentCliError("--now must be an ISO 8601 time with offset") from None
        if now.tzinfo is None:
            raise DocumentCliError("--now must carry a UTC offset")
    v = verify_file(Path(args.file), _trust(args), now=now, content=content)
    lines = [f"{v.status.value}: {v.reason}"]
    if len(v.pages) > 1:
        lines += [f"  page {p.page}: {p.status.value} — {p.reason}" for p in v.pages]
    if v.content == "not-checked":
        lines.append("  content: not checked (the page is not read; compare it with the"
                     " sealed values)")
    else:
        lines.append(f"  content: {v.content} (the document given with --content)")
    if v.sealed_title:
        lines.append(f"  sealed document: {v.sealed_title}")
    lines += [f"  {k}: {val}" for k, val in v.fields.items()]
    lines.append(f"  trust: {args.trust_source}")
    emit(args, {**v.to_json(), "trust_source": args.trust_source}, lines)
    return 0 if v.valid else VERDICT_EXIT


def _key(spec: str, args: argparse.Namespace) -> bytes:
    if spec == "emu":
        return bytes(_sample_issuer(args).scramble_key)
    if spec.startswith("@"):
        try:
            raw = Path(spec[1:]).read_bytes()
        except OSError as e:
            raise DocumentCliError(f"--key {spec}: {e.strerror}") from None
        if len(raw) == 32:
            return raw
        spec = raw.decode("ascii", "replace").strip()
    try:
        key = bytes.fromhex(spec)
    except ValueError:
        raise DocumentCliError("--key is 64 hex digits, @FILE, or 'emu'") from None
    if len(key) != 32:
        raise DocumentCliError("--key must be 32 bytes (64 hex digits)")
    return key


def cmd_descramble(args: argparse.Namespace) -> int:
    from kiosk.documents.layers import ScrambleError, ScrambleImage
    from kiosk.documents.pages import read_input, rendered_pages

    key = _key(args.key, args)
    data = read_input(Path(args.file))
    sc = ScrambleImage()
    last: ScrambleError | None = None
    for page in rendered_pages(data, args.file):
        try:
            plain = sc.descramble(sc.extract(page), key)
        except ScrambleError as e:
            last = e
            continue
        out = Path(args.out)
        Image.fromarray(((1.0 - np.clip(plain, 0, 1)) * 255).astype(np.uint8)).save(
            out, format="PNG")  # "--out PNG", whatever its name: "x.out" was exit 70
        emit(args, {"out": str(out), "blocks": [sc.cols, sc.rows]},
             [f"descrambled image written to {out}"])
        return 0
    raise last or ScrambleError("no page in the input")


def cmd_trust(args: argparse.Namespace) -> int:
    from emulators.document_issuers import export_trust_list
    from kiosk.documents.samples import SAMPLE_MUNICIPALITY

    entries = export_trust_list(Path(args.out), _jlis(args), ensure=(SAMPLE_MUNICIPALITY,))
    obj = {"out": args.out, "keys": [{"kid": e.kid.hex(), "issuer": e.issuer, "name": e.name,
                                      "use": e.use, "not_after": e.not_after.isoformat()}
                                     for e in entries]}
    emit(args, obj, [f"{len(entries)} issuer keys written to {args.out}"]
         + [f"  {e.kid.hex()} {e.issuer} {e.name} ({e.use})" for e in entries])
    return 0


def register(sub: Any) -> None:
    """Add the ``doc`` group to the top-level sub-parsers (the ``cardio.commands`` hook)."""
    doc = sub.add_parser("doc", help="certificate documents: render, verify, descramble")
    dsub = doc.add_subparsers(dest="doc_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                       help="print one JSON object")
        p.add_argument("--jlis", metavar="DIR",
                       help="emulated J-LIS directory (default: $CARDIO_JLIS_DIR)")

    p = dsub.add_parser("render", help="render a sample certificate with all layers")
    p.add_argument("--sample", required=True, choices=[t.value for t in DocumentType])
    p.add_argument("--out", required=True, help="output file (PDF, or PNG with --png)")
    p.add_argument("--png", action="store_true", help="write PNG pages instead of a PDF")
    p.add_argument("--dpi", type=int, default=None, help="PNG resolution (default 600)")
    p.add_argument("--layers-out", metavar="DIR",
                   help="write each element's mask as PNG at the page's pixel size")
    common(p)
    p.set_defaults(func=cmd_render)

    p = dsub.add_parser(
        "verify", help="verify a PDF, scan or photo offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Verify the seal (the DataMatrix) on every page of a PDF, scan or photo.",
        epilog="""\
what a verdict covers:
  Each page is judged from the seal printed on that page alone; a page without one is
  no_seal. The input is valid (exit 0) only if every page carries a seal that verifies
  and all seal the same document; otherwise its verdict is the worst page's (exit 6),
  and the reason names the pages. Our certificates carry the seal on every page, front
  and back, so a page slipped among genuine ones is never covered by their seal.

  The page's content is NOT checked: a seal proves what was issued (document type,
  sealed fields, digest), not what the page shows. Compare the sealed document type and
  fields with the page. content is "not-checked", or digest-match/digest-mismatch for
  the document given with --content.

limits (one line and exit 1 past them):
  a regular file (no FIFO, device or directory) of at most 64 MiB; a PDF of at most
  32 pages, each at most A3 (18 million pixels at 300 dpi), 280 million pixels in all, at
  most 20,000 drawing objects per page and 50 million pixels per embedded image; an
  image of at most 50 million pixels; everything read in a child process limited to
  1 GiB of memory and 30 s of CPU time (90 s of wall-clock time).""")
    p.add_argument("file")
    p.add_argument("--trust", metavar="DIR",
                   help="trust list directory, or 'emu' for the emulated issuers (default:"
                   f" ${TRUST_ENV}; else, with a warning, the emulated issuers if this"
                   " machine has them)")
    p.add_argument("--content", metavar="JSON",
                   help="the document (canonical JSON) to check against the sealed digest")
    p.add_argument("--now", help="verification time, ISO 8601 with offset (default: now)")
    common(p)
    p.set_defaults(func=cmd_verify)

    p = dsub.add_parser("descramble", help="reveal the スクランブル画像 of a page")
    p.add_argument("file")
    p.add_argument("--key", required=True,
                   help="scramble key: @FILE (preferred), 64 hex digits, or 'emu'")
    p.add_argument("--out", required=True, help="PNG to write")
    common(p)
    p.set_defaults(func=cmd_descramble)

    p = dsub.add_parser("trust", help="export the emulated issuers' public keys (seal and"
                        " credential keys)")
    p.add_argument("--out", required=True, metavar="DIR")
    common(p)
    p.set_defaults(func=cmd_trust)
