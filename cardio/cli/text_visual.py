"""``cardio text read`` (券面事項入力補助AP: 個人番号 and 基本4情報) and ``cardio visual read``
(券面事項確認AP: photo and card-face images), each with J-LIS's signature checked."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cardio.cli.framework import SecretSource, add_common_options, emit, open_card
from cardio.errors import EXIT_ERROR
from cardio.identity import sex_label
from cardio.text import TextApplication
from cardio.visual import VisualApplication

TEXT_PIN_PROMPT = "券面事項入力補助用 PIN (4 digits)"


def cmd_text_read(args: argparse.Namespace) -> int:
    card, trust = open_card(args)
    text = TextApplication(card)
    secrets = SecretSource(args)
    if args.with_ == "pin":
        text.verify_pin(secrets.get(TEXT_PIN_PROMPT))
        data = text.read_all(trust)
    elif args.with_ == "a":
        text.verify_code_a(secrets.get("照合番号A (個人番号)"))
        data = text.read_all(trust, attributes=False)
    else:
        text.verify_code_b(secrets.get("照合番号B (14 digits)"))
        data = text.read_all(trust, my_number=False)
    a = data.attributes
    obj: dict[str, Any] = {"my_number": data.my_number, "signature": data.status.value,
                           "signature_reason": data.reason}
    if a is not None:
        obj.update(name=a.name, address=a.address, birth=a.birth, sex=a.sex)
    lines = []
    if data.my_number is not None:
        lines.append(f"個人番号: {data.my_number}")
    if a is not None:
        lines += [f"氏名:     {a.name}", f"住所:     {a.address}",
                  f"生年月日: {a.birth}", f"性別:     {sex_label(a.sex)}"]
    lines.append(f"Signature: {data.status.value} ({data.reason})")
    emit(args, obj, lines)
    return 0 if data.status.value != "invalid" else EXIT_ERROR


def cmd_visual_read(args: argparse.Namespace) -> int:
    card, trust = open_card(args)
    visual = VisualApplication(card)
    secrets = SecretSource(args)
    if args.with_ == "pin":
        visual.unlock_with_text_pin(secrets.get(TEXT_PIN_PROMPT))
    elif args.with_ == "a":
        visual.verify_code_a(secrets.get("照合番号A (個人番号)"))
    else:
        visual.verify_code_b(secrets.get("照合番号B (14 digits)"))
    data = visual.read_verified(trust)
    face = data.face
    args.out.mkdir(parents=True, exist_ok=True)
    files = {"photo": ("photo.jp2", face.photo), "name": ("name.png", face.name_image),
             "address": ("address.png", face.address_image),
             "security_code": ("security_code.png", face.security_code_image)}
    written = {}
    for key, (fname, blob) in files.items():
        (args.out / fname).write_bytes(blob)
        written[key] = str(args.out / fname)
    obj = {"birth": face.birth, "sex": face.sex, "expiry": face.expiry, "files": written,
           "signature": data.status.value, "signature_reason": data.reason}
    emit(args, obj, [f"生年月日: {face.birth}", f"性別:     {sex_label(face.sex)}",
                     f"有効期限: {face.expiry}",
                     f"Photo (JPEG 2000, {len(face.photo)} bytes) and images in {args.out}",
                     f"Signature: {data.status.value} ({data.reason})"])
    return 0 if data.status.value != "invalid" else EXIT_ERROR


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = sub.add_parser("text", help="券面事項入力補助AP: 個人番号 and 基本4情報")
    tsub = text.add_subparsers(dest="text_command", required=True)
    p = tsub.add_parser("read", help="read and check J-LIS's signature")
    p.add_argument("--with", dest="with_", choices=["pin", "a", "b"], default="pin",
                   help="credential: the 4-digit PIN (default), 照合番号A or 照合番号B")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_text_read)

    visual = sub.add_parser("visual", help="券面事項確認AP: photo and card face")
    vsub = visual.add_subparsers(dest="visual_command", required=True)
    p = vsub.add_parser("read", help="save the photo (JP2) and face images")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--with", dest="with_", choices=["pin", "a", "b"], default="pin",
                   help="the text PIN (reads 照合番号A from the card), 照合番号A or 照合番号B")
    add_common_options(p, secrets=True)
    p.set_defaults(func=cmd_visual_read)
