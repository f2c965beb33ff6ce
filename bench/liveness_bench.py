"""Presentation-attack detection measured as ISO/IEC 30107-3 reports it: APCER per attack
species (attacks made from the chip photo, each with a fresh card, through the running
``cardio facepin serve``) and BPCER on **real** recordings of people turning their heads.

    python bench/liveness_bench.py DATA [--mode service|explore] [--attempts 50]

``DATA`` holds the real clips and ``clips.csv`` (path, person, setting, source_repo,
source_commit, source_path, use); the clips are never part of the repository (their
provenance is in DATA/README.md). The attacks' faces come from ``../shared/data/faces/dev``.

* ``--mode explore`` runs the liveness session in-process on a simulated clock with its
  depth gates off and prints, per turn, the statistics the gates use (homography
  residual, novelty, affine-camera residual) for bona fide clips and for each attack
  species, and what each candidate threshold does to both error rates: the figures the
  thresholds in ``facepin.liveness`` were chosen from.
* ``--mode service`` (default) measures the decisions as deployed: per attempt, a new
  emulated card whose chip photo is the target's, the app client's live capture over the
  WebSocket, the service's answer. Prints APCER per species with Clopper–Pearson 95 %
  bounds, BPCER per clip and overall, and the service's time per decision.

Bona fide attempts replay the clips' own turns in the order the service asks; "come
closer" is a digital zoom of the clip's frontal frames (no real approach was found), and a
clip with turns to one side only is also played mirrored. Attempts on one clip are not
independent: the bound is given per attempt and the number of distinct clips beside it.
Never fails for being slow.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cardio.identity import InvalidValue
from facepin.calibration import clopper_pearson
from facepin.face import FaceEngine, chip_photo, load_image
from facepin.simulate import ATTACKS, ClipPerformer, attack_camera

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces" / "dev"


def rate(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k}/{n} = {k / n:.1%} (95% CI {lo:.1%}–{hi:.1%})" if n else "n/a"


@dataclass
class Clip:
    path: Path
    person: str
    setting: str
    mirrored: bool = False

    @property
    def name(self) -> str:
        return self.path.name + (" (mirrored)" if self.mirrored else "")


def read_clips(data: Path) -> list[Clip]:
    with (data / "clips.csv").open() as f:
        return [Clip(data / row["path"], row["person"], row["setting"])
                for row in csv.DictReader(f) if row["use"] == "bona_fide"]


def performers(engine: FaceEngine, clips: list[Clip]) -> list[tuple[Clip, ClipPerformer]]:
    """Every clip that can perform both turns (itself, or itself plus its mirror image)."""
    import cv2

    out = []
    for clip in clips:
        try:
            perf = ClipPerformer.from_video(str(clip.path), engine)
        except Exception as exc:  # a clip without a face is reported, not fatal
            print(f"  skip {clip.name}: {exc}")
            continue
        if min(perf.frames[0].shape[:2]) < 240:  # VoxCeleb crops: doubled to a frame size
            perf.frames = [cv2.resize(f, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
                           for f in perf.frames]
            perf.centres = [None if c is None else (2 * c[0], 2 * c[1]) for c in perf.centres]
        if perf.can_perform():
            out.append((clip, perf))
            continue
        left, right = perf.turns.values()
        if left or right:
            # The clip and its mirror image: a real turn to one side becomes a real turn
            # to the other.
            w = perf.frames[0].shape[1]
            try:
                both = ClipPerformer(
                    perf.frames + [np.ascontiguousarray(f[:, ::-1]) for f in perf.frames],
                    perf.yaws + [None if y is None else -y for y in perf.yaws],
                    centres=perf.centres + [None if c is None else (w - c[0], c[1])
                                            for c in perf.centres])
            except InvalidValue as exc:  # the person's frontal pose is far from square on
                print(f"  skip {clip.name} mirrored: {exc}")
                continue
            out.append((Clip(clip.path, clip.person, clip.setting, True), both))
        else:
            print(f"  skip {clip.name}: no turn of 22° or more")
    return out


def reference_of(engine: FaceEngine, perf: ClipPerformer) -> bytes:
    """The clip's person as the card's chip photo: a frontal frame, made into the chip's
    greyscale JPEG 2000 portrait."""
    frame = perf.frames[perf.hold[len(perf.hold) // 2]]
    found = engine.encode(frame, allow_several=True, check_quality=False)
    if found.box is None:
        raise RuntimeError("no face in the clip's frontal frame")
    return chip_photo(frame, found.box)


def attack_targets(engine: FaceEngine) -> list[tuple[str, bytes]]:
    """One chip photo per dev identity (its first photo)."""
    out = []
    for d in sorted(p for p in DEV.iterdir() if p.is_dir()):
        rgb = load_image(sorted(d.iterdir())[0])
        found = engine.encode(rgb, allow_several=True, check_quality=False)
        if found.box is not None:
            out.append((d.name, chip_photo(rgb, found.box)))
    return out


# --- explore: in-process, gates off ------------------------------------------------------

def explore(engine: FaceEngine, clips: list[Clip], rounds: int, seeds: int) -> None:
    import facepin.liveness as lv
    from facepin.live import camera_frame

    lv.PLANE_MIN = lv.NOVELTY_MIN = -1.0  # record, do not gate
    rows: dict[str, list[tuple[float, float, float]]] = {}

    def run(ref: np.ndarray, camera: Any, key: str) -> None:
        s = lv.LivenessSession(ref)
        t, shown = 0.0, object()
        camera.show(None)
        while s.verdict is lv.Verdict.IN_PROGRESS:
            data = camera.frame()
            if data is None:
                break
            s.feed_frame(engine, camera_frame(data), t)
            t += 1 / 15
            if s.showing is not shown:
                shown = s.showing
                camera.show(None if shown is None else shown.value)
        for _p, ev in s.evidence:
            rows.setdefault(key, []).append((ev.plane, ev.novelty, ev.affine))

    for clip, perf in performers(engine, clips):
        ref = engine.encode_reference(load_image(reference_of(engine, perf))).encoding
        assert ref is not None
        for _ in range(rounds):
            perf.sent = 0
            run(ref, perf, "bona fide: " + clip.setting)
    for ident, chip in attack_targets(engine):
        ref = engine.encode_reference(load_image(chip)).encoding
        assert ref is not None
        for species in ATTACKS:
            for seed in range(seeds):
                run(ref, attack_camera(load_image(chip), species, seed, engine=engine),
                    "attack: " + species)
        print(f"  {ident} done", flush=True)
    print("\nper turn: plane (H p80, eye spans) / novelty / affine p80")
    for key, vals in sorted(rows.items()):
        arr = np.asarray(vals)
        q = np.percentile(arr, [0, 5, 50, 95, 100], axis=0)
        print(f"{key:<45} n={len(arr):4d}  plane {fmt(q[:, 0])}  novelty {fmt(q[:, 1])}"
              f"  affine {fmt(q[:, 2])}")
    bona = np.asarray([v for k, vs in rows.items() if k.startswith("bona") for v in vs])
    att = {k: np.asarray(vs) for k, vs in rows.items() if k.startswith("attack")}
    print("\ncandidate thresholds: turns refused (bona fide) / turns passed (worst species)")
    for pm in (0.03, 0.04, 0.05, 0.06):
        for nm in (0.06, 0.08, 0.10, 0.12):
            b = int(((bona[:, 0] < pm) | (bona[:, 1] < nm)).sum()) if len(bona) else 0
            worst = max((int(((a[:, 0] >= pm) & (a[:, 1] >= nm)).sum()), k, len(a))
                        for k, a in att.items()) if att else (0, "-", 0)
            print(f"  plane≥{pm:.2f} novelty≥{nm:.2f}: bona fide turns refused {b}/{len(bona)};"
                  f" attack turns passed {worst[0]}/{worst[2]} ({worst[1]})")


def fmt(q: np.ndarray) -> str:
    return "/".join(f"{v:.3f}" for v in q)


# --- service: through cardio facepin serve ----------------------------------------------

@dataclass
class Outcome:
    granted: bool
    code: str
    seconds: float


@dataclass
class Served:
    url: str
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_service(base: Path) -> tuple[Served, Any, Any]:
    from emulators.card import JlisHierarchy
    from emulators.card.keys import KeyPool
    from emulators.jpki_ca import CaServer, JpkiAuthority, export_roots
    pool = KeyPool()
    port = free_port()
    jlis = JlisHierarchy.load_or_create(base / "jlis", keys=pool,
                                        ca_url=f"http://127.0.0.1:{port}")
    authority = JpkiAuthority(jlis)
    ca = CaServer(authority, "127.0.0.1", port).start()
    export_roots(jlis, base / "roots")
    from emulators.card import Profile, create_card

    create_card(base / "card-first", Profile(), jlis, keys=pool)
    authority.register_card(base / "card-first")  # the registry file exists from the start
    key = base / "master.key"
    key.write_bytes(jlis.pin_reset_master())
    proc = subprocess.Popen(
        [sys.executable, "-m", "cardio.cli", "facepin", "serve", "--db",
         f"sqlite:///{base / 'facepin.db'}", "--port", "0", "--trust", str(base / "roots"),
         "--card-registry", str(jlis.path / "cards.json")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "CARDIO_FACEPIN_MASTER_KEY_FILE": str(key)})
    served = Served("", proc)
    ready = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.append(line)
            m = re.search(r"Uvicorn running on http://127\.0\.0\.1:(\d+)", line)
            if m:
                served.url = f"http://127.0.0.1:{m.group(1)}"
                ready.set()
        ready.set()

    threading.Thread(target=read, daemon=True).start()
    ready.wait(120)
    if not served.url:
        raise RuntimeError("".join(served.lines))
    return served, (jlis, authority, pool), ca


def attempt(url: str, pki: Any, base: Path, photo: bytes, camera: Any) -> Outcome:
    from cardio.card import MyNumberCard
    from cardio.transport import InProcessTransport
    from emulators.card import Profile, SoftwareCard, create_card
    from facepin.client import ServiceRefused, reserve

    jlis, authority, pool = pki
    path = base / f"card{len(list(base.glob('card*')))}"
    prof = Profile()
    create_card(path, prof, jlis, keys=pool, photo=photo)
    authority.register_card(path)
    card = MyNumberCard(InProcessTransport(SoftwareCard.open(path)))
    t0 = time.perf_counter()
    try:
        reserve(url, card, prof.auth_pin, prof.text_pin, camera)
        return Outcome(True, "granted", time.perf_counter() - t0)
    except ServiceRefused as exc:
        return Outcome(False, exc.code, time.perf_counter() - t0)


def service(engine: FaceEngine, clips: list[Clip], n_attacks: int, bona_rounds: int,
            species: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        served, pki, ca = start_service(base)
        try:
            targets = attack_targets(engine)
            print(f"service {served.url}; attacks from the chip photos of {len(targets)} dev"
                  " identities, a fresh card per attempt")
            for sp in species:
                outs = []
                for i in range(n_attacks):
                    _ident, chip = targets[i % len(targets)]
                    cam = attack_camera(load_image(chip), sp, seed=i, engine=engine)
                    outs.append(attempt(served.url, pki, base, chip, cam))
                granted = sum(o.granted for o in outs)
                codes = statistics.multimode([o.code for o in outs])
                print(f"  APCER {sp:<17} {rate(granted, len(outs))}  (refusals: "
                      f"{summary(outs)}; most often {codes[0]})", flush=True)
            refused = total = 0
            clips_seen = 0
            for clip, perf in performers(engine, clips):
                photo = reference_of(engine, perf)
                outs = []
                for _ in range(bona_rounds):
                    perf.sent = 0
                    outs.append(attempt(served.url, pki, base, photo, perf))
                k = sum(not o.granted for o in outs)
                refused += k
                total += len(outs)
                clips_seen += 1
                print(f"  bona fide {clip.name:<32} [{clip.setting}] refused {k}/{len(outs)}"
                      f" ({summary(outs)})", flush=True)
            print(f"  BPCER {rate(refused, total)} over {clips_seen} clips")
            work = [float(m.group(1)) for line in served.lines
                    if (m := re.search(r"s, ([0-9.]+) s of work", line))]
            if work:
                work.sort()
                p95 = work[int(0.95 * (len(work) - 1))]
                print(f"  time per decision (service, measuring frames): median"
                      f" {statistics.median(work):.2f} s, p95 {p95:.2f} s,"
                      f" max {work[-1]:.2f} s over {len(work)} captures")
        finally:
            served.proc.terminate()
            served.proc.wait(30)
            ca.stop()


def summary(outs: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in outs:
        counts[o.code] = counts.get(o.code, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", type=Path, help="folder with clips.csv and the real clips")
    ap.add_argument("--mode", choices=["service", "explore"], default="service")
    ap.add_argument("--attempts", type=int, default=50, help="attacks per species")
    ap.add_argument("--rounds", type=int, default=5, help="bona fide attempts per clip")
    ap.add_argument("--seeds", type=int, default=2, help="explore: attacks per identity")
    ap.add_argument("--species", default=",".join(ATTACKS))
    ap.add_argument("--clips", default="", help="only clips whose path contains this")
    args = ap.parse_args()
    if not (args.data / "clips.csv").exists():
        sys.exit(f"no clips.csv in {args.data}")
    if not DEV.exists():
        sys.exit(f"face data not found at {DEV}")
    engine = FaceEngine.shared()
    clips = [c for c in read_clips(args.data) if args.clips in str(c.path)]
    if args.mode == "explore":
        explore(engine, clips, args.rounds, args.seeds)
    else:
        service(engine, clips, args.attempts, args.rounds,
                [s for s in args.species.split(",") if s])


if __name__ == "__main__":
    main()

