"""``cardio facepin …``: face verification and the PIN-reset reservation service,
registered with the ``cardio`` command line through the entry-point group
``cardio.commands``.

``facepin serve`` is a production service: its issuer master key comes from configuration
only (``--master-key-file`` or ``$CARDIO_FACEPIN_MASTER_KEY_FILE``). It never falls back
to — or creates — the emulated J-LIS key; ``cardio emu ca pin-reset-key`` is the emulator
command that hands that one out for tests and demos. Likewise the issuer's card registry
(which card each authentication certificate was issued to) is a file named in
configuration (``--card-registry`` or ``$CARDIO_FACEPIN_CARD_REGISTRY``), never read from
the J-LIS directory.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cardio import constants as c
from cardio.cli import (
    SecretSource,
    UsageError,
    add_common_options,
    emit,
    open_card,
    port_number,
    trust_for,
)
from cardio.errors import EXIT_NOT_VALID
from cardio.hardening import no_core_dumps
from cardio.visual import VisualApplication
from facepin.registry import FileCardRegistry

MASTER_KEY_ENV = "CARDIO_FACEPIN_MASTER_KEY_FILE"
REGISTRY_ENV = "CARDIO_FACEPIN_CARD_REGISTRY"
MAX_THRESHOLD = 1.0
"""A distance threshold above this matches nearly any two faces (the calibrated one is
``facepin.face.THRESHOLD``)."""
MASTER_KEY_MIN = 32  # bytes; cardio.pinreset derives per-card keys from it


def cmd_verify(args: argparse.Namespace) -> int:
    from facepin.capture import frames, is_video
    from facepin.face import (
        THRESHOLD,
        FaceEngine,
        MatchResult,
        load_image,
        match_frames,
    )

    # Checked before the card is touched: NaN or inf printed invalid JSON ("NaN",
    # "Infinity"), and inf (or anything near it) matches any two faces.
    if args.threshold is not None and not 0 < args.threshold <= MAX_THRESHOLD:
        raise UsageError(f"--threshold is a face distance above 0 and at most"
                         f" {MAX_THRESHOLD} (default {THRESHOLD})")
    if args.reference == "card":
        card, _trust = open_card(args)
        visual = VisualApplication(card)
        visual.unlock_with_text_pin(SecretSource(args).get("券面事項入力補助用 PIN (4 digits)"))
        reference = load_image(visual.card_face().photo)
        card.close()  # reset and release the card now, not after the face match
    else:
        reference = load_image(Path(args.reference))
    threshold = args.threshold if args.threshold is not None else THRESHOLD
    engine = FaceEngine.shared()
    # The same pipeline as the service: the reference in the chip photo's domain with
    # the reference settings, the probe frames brought into that domain and fused by
    # the one decision rule (facepin.face.decide).
    ref = engine.encode_reference(reference)
    del reference
    result: MatchResult
    if ref.encoding is None:
        assert ref.outcome is not None
        result = MatchResult(ref.outcome, None, threshold, "reference: " + ref.detail)
    else:
        probe = frames(args.probe) if is_video(args.probe) else [load_image(Path(args.probe))]
        result = match_frames(ref.encoding, probe, threshold=threshold, engine=engine)
    obj = result.to_json()
    dist = "-" if result.distance is None else f"{result.distance:.3f}"
    emit(args, obj, [f"Result: {result.outcome.value}", f"Distance: {dist} (threshold"
                     f" {threshold})"] + ([f"Detail: {result.detail}"] if result.detail else []))
    return 0 if result.match else EXIT_NOT_VALID


def read_master_key(option: Path | None) -> bytes:
    """The issuer master key from ``--master-key-file`` or the file named by
    ``$CARDIO_FACEPIN_MASTER_KEY_FILE``; anything else is a usage error (exit 2), so a
    service never starts on a test key by accident. The key's bytes never reach a
    message."""
    path = option
    if path is None:
        env = os.environ.get(MASTER_KEY_ENV)
        path = Path(env) if env else None
    if path is None:
        raise UsageError("no PIN-reset master key configured: give --master-key-file FILE or"
                         f" set {MASTER_KEY_ENV} (for the emulator: 'cardio emu ca"
                         " pin-reset-key')")
    try:
        key = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the master key file {path}: {exc.strerror}") from exc
    if len(key) < MASTER_KEY_MIN:
        raise UsageError(f"the master key file {path} holds {len(key)} bytes; at least"
                         f" {MASTER_KEY_MIN} are needed")
    return key


def cmd_serve(args: argparse.Namespace) -> int:
    no_core_dumps()  # face photos and the issuer's master key: never in a core file
    port = port_number(args.port)
    master = read_master_key(args.master_key_file)
    trust = trust_for(args)
    from facepin.service import ServiceConfig, serve

    registry = _card_registry(args.card_registry)
    config = ServiceConfig(database=args.db, trust=trust, master_key=master,
                           registry=registry)
    serve(config, args.host, port)
    return 0


def _card_registry(path: Path | None) -> FileCardRegistry:
    """The issuer's card registry (auth certificate → card serial and card-face key), from
    ``--card-registry`` or ``$CARDIO_FACEPIN_CARD_REGISTRY``; required, and read once
    before serving so a wrong path is a one-line error now, not a 503 on every request."""
    if path is None:
        env = os.environ.get(REGISTRY_ENV)
        if not env:
            raise UsageError("facepin serve needs the issuer's card registry: give"
                             f" --card-registry FILE or set ${REGISTRY_ENV} (for the emulated"
                             " J-LIS: cards.json in its directory)")
        path = Path(env)
    registry = FileCardRegistry(path)
    registry.check()
    return registry


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Entry point (``cardio.commands``): ``facepin verify`` and ``facepin serve``."""
    fp = sub.add_parser("facepin", help="face verification and the PIN-reset service")
    fsub = fp.add_subparsers(dest="facepin_command", required=True)
    p = fsub.add_parser("verify", help="1:1 match of a reference photo and a live probe")
    p.add_argument("--reference", required=True,
                   help="'card' (the chip photo, read with the text PIN) or an image file")
    p.add_argument("--probe", required=True,
                   help="an image file, a video file, or camera[:N]")
    p.add_argument("--threshold", type=float, default=None)
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_verify)

    p = fsub.add_parser("serve", help="run the PIN-reset reservation service (ASGI)")
    p.add_argument("--db", default="sqlite:///facepin.db", help="sqlite:///PATH")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", default=str(c.FACEPIN_PORT),
                   help="TCP port, 0-65535 (0: any free one)")
    p.add_argument("--master-key-file", "--master-key", dest="master_key_file", type=Path,
                   default=None, help="issuer master key file (required, or set"
                   f" ${MASTER_KEY_ENV}); never the emulated J-LIS key by default")
    p.add_argument("--card-registry", type=Path, default=None,
                   help="the issuer's card registry, JSON (required, or set"
                   f" ${REGISTRY_ENV}); the emulated J-LIS writes cards.json")
    add_common_options(p)
    p.set_defaults(func=cmd_serve)
