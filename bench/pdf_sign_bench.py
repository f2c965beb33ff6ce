"""PAdES signing with the card: time and APDUs per signed PDF, at B-B, B-T and B-LT,
through the software card in-process and through the real pcscd + vpcd.

Baseline in the same process: a detached CMS signature (``cardio.cms``) with the same
card in-process — the card's part alone (PIN already verified, one ``80 2A``, the
certificate reads) — so each row's ratio says what the PDF machinery, the TSA round trip
and the validation data (B-LT: OCSP and CRL fetched from the emulated CA on loopback, the
chain checked, a DSS revision written) cost on top. An invisible B-B row shows what the
visible appearance costs: subsetting and embedding the IPA Gothic font for its Japanese
text is most of a B-B signature's time. Each signing run starts from a fresh
session: SELECT, PIN, certificate reads, signature — as ``cardio jpki pdf sign`` does.

Usage: ``python bench/pdf_sign_bench.py [N]`` (N runs per row, default 10). Prints
figures; never fails for being slow. The pcscd rows need the private-namespace stack
(root or unprivileged user namespaces); without it they are skipped with the reason.
"""

from __future__ import annotations

import io
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from cardio.card import MyNumberCard
from cardio.cms import sign_detached
from cardio.jpki import JpkiApplication
from cardio.pdf import CardPdfSigner, sign_pdf, verify_pdf
from cardio.transport import CountingTransport, InProcessTransport, Transport
from cardio.trust import TrustStore
from emulators.card import JlisHierarchy, Profile, SoftwareCard, create_card
from emulators.jpki_ca import CaServer, JpkiAuthority, export_roots


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample_pdf() -> bytes:
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf)
    for page in range(3):
        c.drawString(72, 720, f"Contract, page {page + 1}")
        c.showPage()
    c.save()
    return buf.getvalue()


def measure(n: int, run: Callable[[], int]) -> tuple[float, float, int]:
    """(median ms, p90 ms, APDUs of the last run) over ``n`` runs after one warm-up."""
    run()
    times, apdus = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        apdus = run()
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))], apdus


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        port = free_port()
        jlis = JlisHierarchy.load_or_create(base / "jlis", ca_url=f"http://127.0.0.1:{port}")
        authority = JpkiAuthority(jlis)
        server = CaServer(authority, "127.0.0.1", port).start()
        export_roots(jlis, base / "roots")
        trust = TrustStore.from_dir(base / "roots")
        profile = Profile()
        create_card(base / "card", profile, jlis)
        authority.register_card(base / "card")
        tsa = server.url + "/tsa"
        pdf = sample_pdf()

        def signing(make: Callable[[], Transport], what: str) -> Callable[[], int]:
            def run() -> int:
                counting = CountingTransport(make())
                card = MyNumberCard(counting)
                with card.session():
                    jpki = JpkiApplication(card)
                    jpki.verify_pin("sign", profile.sign_password)
                    cert = jpki.certificate_der("sign")
                    ca = jpki.certificate_der("sign-ca")
                    sign = lambda di: jpki.sign_digest_info("sign", di)  # noqa: E731
                    if what == "cms":
                        sign_detached(pdf, cert, sign, (ca,))
                    else:
                        level, _, invisible = what.partition(" ")
                        out = sign_pdf(pdf, CardPdfSigner(cert, (ca,), sign), trust,
                                       level=level, tsa_url=tsa, visible=not invisible)
                        if what == "B-LT":
                            signed[what] = out
                return counting.stats.apdus
            return run

        signed: dict[str, bytes] = {}
        in_process = lambda: InProcessTransport(SoftwareCard.open(base / "card"))  # noqa: E731
        print(f"PDF signing with the software card ({len(pdf)}-byte 3-page PDF, {n} runs"
              " each; median / p90 ms, APDUs per signed document)")
        rows: list[tuple[str, tuple[float, float, int]]] = []
        baseline = measure(n, signing(in_process, "cms"))
        rows.append(("baseline: detached CMS, in-process card", baseline))
        rows.append(("PAdES B-B invisible (no Japanese appearance)",
                     measure(n, signing(in_process, "B-B invisible"))))
        for level in ("B-B", "B-T", "B-LT"):
            rows.append((f"PAdES {level}, in-process card", measure(n, signing(in_process,
                                                                             level))))
        try:
            from cardio.pcsc import PcscTransport
            from emulators.pcsc_stack import PcscStack, StackUnavailable

            stack = PcscStack([base / "card"], base / "stack").start()
        except (ImportError, StackUnavailable) as exc:
            stack = None
            print(f"  (pcscd + vpcd rows skipped: {exc})")
        if stack is not None:
            os.environ.update(stack.env)
            try:
                reader = stack.stats()["readers"][0]
                via_pcscd = lambda: PcscTransport.open(reader)  # noqa: E731
                rows.append(("baseline: detached CMS, via pcscd+vpcd",
                             measure(n, signing(via_pcscd, "cms"))))
                rows.append(("PAdES B-LT, via pcscd+vpcd",
                             measure(n, signing(via_pcscd, "B-LT"))))
            finally:
                stack.stop()
        for label, (med, p90, apdus) in rows:
            print(f"  {label:<46} {med:8.1f} / {p90:8.1f} ms  {apdus:3d} APDUs"
                  f"  x{med / baseline[0]:.2f}")
        t0 = time.perf_counter()
        [report] = verify_pdf(signed["B-LT"], trust, online=False)
        verify_ms = (time.perf_counter() - t0) * 1000
        print(f"  verify the B-LT PDF offline (DSS only): {verify_ms:.1f} ms,"
              f" valid={report.ok}, {len(signed['B-LT'])} bytes"
              f" (+{len(signed['B-LT']) - len(pdf)} over the unsigned PDF)")
        server.stop()


if __name__ == "__main__":
    main()
