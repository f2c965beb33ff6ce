"""Measured privacy and speed of the 住民票 credential (issue 29).

For residents of a seeded emulated register (the same rows the printed 住民票 comes from),
and for each typical request — age over 18, name + address, the 基本4情報 — it prints:

- what a relying party receives from the credential: the presentation's bytes, the bytes of
  personal values in it, the personal items;
- what the printed 住民票の写し hands it instead: the personal values on the page (the
  resident alone with no options, and the household copy with 続柄 and 本籍 that banks and
  landlords often ask for), as bytes of the printed values and as items;
- the verifier's decision time (everything: signature, disclosures, KB-JWT, nonce, status
  list token check and lookup), median and 95th percentile, and the holder's time to
  present.

    .venv/bin/python bench/credential_bench.py [--residents 40] [--rounds 200]

In-process; prints figures and ratios, never fails for being slow.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric import ec

from emulators.issuance.credentials import issue_credential, status_list_token
from emulators.issuance.db import Database
from emulators.issuance.municipality import MunicipalityServer, _juminhyo
from emulators.issuance.population import seed
from emulators.issuance.rules import Resident
from emulators.issuance.wallet import juminhyo_record
from kiosk.credentials.holder import Wallet, new_holder_key
from kiosk.credentials.jose import key_to_jwk
from kiosk.credentials.juminhyo import PRESETS
from kiosk.credentials.verifier import StatusTokens, Verifier
from kiosk.documents.seal import key_id
from kiosk.documents.trust import TrustEntry

JST = dt.timezone(dt.timedelta(hours=9))
URI = "https://center.example/v1/status/{code}"
# The printed page's personal items: everything in a section but the section's title.
PRINTED = {"self": {"scope": "self", "honseki": "no", "relationship": "no"},
           "household": {"scope": "household", "honseki": "yes", "relationship": "yes"}}


def _old_view(birth: dt.date, today: dt.date, years: int) -> tuple[object, ...]:
    """What an ``age_over_<years>`` presentation showed before review 29: exp the day after
    the 18th/20th birthday when that fell inside 90 days, and the claim as at issuance."""
    from kiosk.credentials.juminhyo import _age, _birthday

    end = today + dt.timedelta(days=90)
    for n in (18, 20):
        if _age(birth, today) < n:
            end = min(end, _birthday(birth, n) - dt.timedelta(days=1))
            break
    return end, _age(birth, today) >= years


def _new_view(birth: dt.date, today: dt.date, years: int) -> tuple[object, ...]:
    """What it shows now: exp from the issuance day's grid, the claim if it was issued."""
    from kiosk.credentials.juminhyo import age_claim, validity_end

    last = validity_end(today)
    return last, age_claim(birth, years, today, last)


def birthdate_leak(years: int = 18, span: tuple[int, int] = (1940, 2016),
                   days: int = 12, step: int = 30) -> dict[str, float]:
    """Bits of birth date an ``age_over_<years>`` presentation gives a relying party that
    knows the issuance day (``iat`` is shown): the mutual information between a birth date
    drawn uniformly from ``span`` and what it sees (``exp`` and the claim), averaged over
    ``days`` issuance days, beside the information of the claim's own meaning (over the
    age or not at issuance), and the worst case for one person (log2 of the population over
    the birth dates that look the same). A holder whose credential has no such claim (the
    birthday falls inside the validity) cannot answer, so sends nothing: that case counts
    in the mean (as "no answer") but not in the worst case of what is *received*."""
    import math
    from collections import Counter

    births = [dt.date(span[0], 1, 1) + dt.timedelta(days=i)
              for i in range((dt.date(span[1], 1, 1) - dt.date(span[0], 1, 1)).days)]
    n = len(births)
    out: dict[str, float] = {}
    for name, view in (("before", _old_view), ("after", _new_view)):
        mi, worst, meaning = 0.0, 0.0, 0.0
        for k in range(days):
            today = dt.date(2026, 1, 1) + dt.timedelta(days=k * step)
            seen = Counter(view(b, today, years) for b in births)
            mi += -sum(c / n * math.log2(c / n) for c in seen.values())
            received = [c for v, c in seen.items() if v[-1] is not None]
            worst = max(worst, math.log2(n / min(received)))
            base = Counter((b.replace(year=b.year + years) if (b.month, b.day) != (2, 29)
                            else dt.date(b.year + years, 3, 1)) <= today for b in births)
            meaning += -sum(c / n * math.log2(c / n) for c in base.values())
        out[f"{name}_bits_mean"] = mi / days
        out[f"{name}_bits_worst"] = worst
        out["claim_meaning_bits"] = meaning / days
    out["birthdate_entropy_bits"] = math.log2(n)
    return out


def _values_bytes(v: object) -> int:
    """UTF-8 bytes of the personal values (strings as printed, numbers as written)."""
    if isinstance(v, dict):
        return sum(_values_bytes(x) for x in v.values())
    if isinstance(v, list):
        return sum(_values_bytes(x) for x in v)
    return len(str(v).encode("utf-8"))


def _items(v: object) -> int:
    if isinstance(v, dict):
        return sum(_items(x) for x in v.values()) if v else 0
    if isinstance(v, list):
        return sum(_items(x) for x in v)
    return 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--residents", type=int, default=40)
    ap.add_argument("--rounds", type=int, default=200)
    args = ap.parse_args()
    now = dt.datetime(2026, 6, 1, 10, 0, tzinfo=JST)
    t0 = now.timestamp()
    tmp = Path(tempfile.mkdtemp(prefix="cardio-credential-bench-"))
    db = Database(f"sqlite:///{tmp / 'register.db'}")
    seed(db, 2000, 4, today=now.date())
    munis = MunicipalityServer(db)
    key = ec.generate_private_key(ec.SECP256R1())
    kid = key_id(key.public_key())
    with db.tx() as t:
        rows = t.all(f"SELECT {Resident.COLUMNS} FROM residents r WHERE status='active' AND"
                     " birth < '2006-01-01' AND (SELECT COUNT(*) FROM residents x WHERE"
                     " x.household_id = r.household_id AND x.status='active') >= 2"
                     " ORDER BY id LIMIT ?", (args.residents,))
    residents = [Resident.from_row(r) for r in rows]
    codes = sorted({r.municipality for r in residents})
    trust = [TrustEntry(kid, c, c, key.public_key(), now - dt.timedelta(days=1),
                        now + dt.timedelta(days=3650), use="credential") for c in codes]
    tokens = StatusTokens(status_list_token(uri=URI.format(code=c), invalid=[], key=key,
                                            kid=kid.hex(), now=int(t0)) for c in codes)
    wallet = Wallet(tmp / "wallet")
    printed: dict[str, list[tuple[int, int]]] = {k: [] for k in PRINTED}
    creds = []
    for r in residents:
        with db.tx() as t:
            m = munis.municipality(r.municipality, t)
            for name, opts in PRINTED.items():
                sections = _juminhyo(t, r, m, dict(opts), now)
                vals = [f.value for s in sections for f in s.fields]
                printed[name].append((sum(len(v.encode("utf-8")) for v in vals), len(vals)))
            rec = juminhyo_record(t, r, PRINTED["household"])
        hk = new_holder_key()
        text, _ = issue_credential(rec, issuer_code=r.municipality, key=key, kid=kid.hex(),
                                   holder_jwk=key_to_jwk(hk.public_key()),
                                   status_uri=URI.format(code=r.municipality),
                                   status_idx=len(creds), now=now)
        creds.append(wallet.store(text, hk))
    verifier = Verifier(trust, client_id="https://rp.example", status=tokens,
                        clock=lambda: t0)
    wallet_bytes = statistics.median(len(c.sd_jwt) for c in creds)
    print(f"{len(residents)} residents (households of 2 or more), credentials issued with"
          f" household, 続柄 and 本籍; median credential {wallet_bytes:.0f} bytes in the wallet")
    for name in PRINTED:
        b = statistics.median(x[0] for x in printed[name])
        n = statistics.median(x[1] for x in printed[name])
        print(f"printed 住民票 ({name:9}): {b:6.0f} bytes of personal values, {n:3.0f} items"
              " (median)")
    hh_bytes = statistics.median(x[0] for x in printed["household"])
    self_bytes = statistics.median(x[0] for x in printed["self"])
    print()
    print(f"{'request':14} {'received':>9} {'personal':>9} {'items':>6} {'vs self':>8}"
          f" {'vs household':>13} {'verify p50':>11} {'p95':>8} {'present p50':>12}")
    for preset, paths in PRESETS.items():
        sizes, personal, items, vt, pt = [], [], [], [], []
        for i in range(args.rounds):
            cred = creds[i % len(creds)]
            req = verifier.request(paths)
            a = time.perf_counter()
            text = cred.present(req, req.claims, now=t0)
            b = time.perf_counter()
            out = verifier.verify(text, req)
            c = time.perf_counter()
            pt.append((b - a) * 1000)
            vt.append((c - b) * 1000)
            sizes.append(len(text))
            personal.append(_values_bytes(out.claims))
            items.append(_items(out.claims))
        vt.sort()
        pb = statistics.median(personal)
        print(f"{preset:14} {statistics.median(sizes):8.0f}B {pb:8.0f}B"
              f" {statistics.median(items):6.0f} {pb / self_bytes:7.1%} {pb / hh_bytes:12.1%}"
              f" {statistics.median(vt):9.2f}ms {vt[int(0.95 * len(vt))]:6.2f}ms"
              f" {statistics.median(pt):10.2f}ms")
    print()
    print("received: the whole presentation (issuer-signed JWT with 16 digests, the chosen"
          " disclosures, the KB-JWT);")
    print("personal: the bytes of the disclosed values; the printed columns count the"
          " values on the page the same way.")
    print(json.dumps({"note": "in-process; the status list token is cached (offline)"}))
    for years in (18, 20):
        leak = birthdate_leak(years)
        print(f"age_over_{years}: bits of birth date a relying party learns (iat known):"
              f" mean {leak['before_bits_mean']:.3f} -> {leak['after_bits_mean']:.3f},"
              f" worst person {leak['before_bits_worst']:.1f} -> {leak['after_bits_worst']:.1f}"
              f" (the claim's own meaning: {leak['claim_meaning_bits']:.3f};"
              f" a birth date is {leak['birthdate_entropy_bits']:.1f} bits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
