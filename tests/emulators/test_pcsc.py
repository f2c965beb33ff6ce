"""Through the real pcscd: the software card behind vpcd, our CLI and pyscard transport,
and OpenSC's own tools as an independent client. Runs in a private namespace (see
emulators/pcsc_stack.py); CI requires it (CARDIO_REQUIRE_PCSC=1)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cardio.card import MyNumberCard
from cardio.jpki import JpkiApplication
from cardio.pcsc import PcscTransport, ReaderBusy, list_readers, watch
from cardio.transport import CardRemovedError
from emulators.card import SoftwareCard
from emulators.pytest_plugin import CardHandle, PcscEnv

pytestmark = pytest.mark.pcsc

AUTH_FID, SIGN_FID, AUTH_CA_FID, SIGN_CA_FID = 0x0A, 0x01, 0x0B, 0x02
JPKI = bytes.fromhex("D392F000260100000001")


def cardio(env: PcscEnv, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cardio.cli", *args], input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, **env.env})


def card_file(handle: CardHandle, fid: int) -> bytes:
    return SoftwareCard.open(handle.path).image.files[(JPKI, fid)]


def test_readers_lists_presence(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    res = cardio(pcsc_stack, "readers", "--json")
    assert res.returncode == 0, res.stderr
    readers = json.loads(res.stdout)["readers"]
    assert [r["name"] for r in readers][:2] == ["Virtual PCD 00 00", "Virtual PCD 00 01"]
    assert readers[0]["card_present"] and readers[0]["atr"] == "3BE000FF8131FE4514"
    pcsc_stack.stack.remove(1)
    try:
        names = {r.name: r.card_present for r in list_readers()}
        assert names["Virtual PCD 00 01"] is False and names["Virtual PCD 00 00"] is True
    finally:
        pcsc_stack.stack.insert(1)


def test_info_text_and_sign_through_pcscd(pcsc_stack: PcscEnv, pcsc_card: CardHandle,
                                          tmp_path: Path) -> None:
    p = pcsc_card.profile
    res = cardio(pcsc_stack, "--reader", pcsc_card.reader, "info", "--json")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["pins"]["auth"]["tries_left"] == 3
    res = cardio(pcsc_stack, "--reader", "0", "text", "read", "--json", "--pin-stdin",
                 "--trust", str(pcsc_stack.jlis.path), stdin=p.text_pin + "\n")
    assert res.returncode == 0, res.stderr
    data = json.loads(res.stdout)
    assert (data["my_number"], data["name"], data["signature"]) == (p.my_number, p.name, "valid")
    doc = tmp_path / "doc"
    doc.write_bytes(b"signed through pcscd")
    res = cardio(pcsc_stack, "--reader", pcsc_card.reader, "jpki", "sign", "--key", "sign",
                 "--in", str(doc), "--out", str(tmp_path / "sig"), "--pin-stdin",
                 stdin=p.sign_password + "\n")
    assert res.returncode == 0, res.stderr
    cert = x509.load_der_x509_certificate(card_file(pcsc_card, SIGN_FID))
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify((tmp_path / "sig").read_bytes(), doc.read_bytes(), padding.PKCS1v15(),
               hashes.SHA256())


def test_removal_mid_read_then_reinsert(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    transport = PcscTransport.open(pcsc_card.reader)
    card = MyNumberCard(transport)
    card.extended = False  # short APDUs: a read of several chunks, pulled between two
    jpki = JpkiApplication(card)
    assert jpki.token() == "JPKIAPICCTOKEN2"
    pcsc_stack.stack.remove_after(2)
    with pytest.raises(CardRemovedError) as exc:
        jpki.certificate_der("auth")          # SFI read, one chunk, then the card is gone
    assert "removed" in str(exc.value)
    with pytest.raises(CardRemovedError):
        transport.transmit(bytes.fromhex("00A4040C0AD392F000260100000001"))
    transport.close()
    pcsc_stack.stack.insert(0)
    again = PcscTransport.open(pcsc_card.reader)
    der = JpkiApplication(MyNumberCard(again)).certificate_der("auth")
    assert der == card_file(pcsc_card, AUTH_FID)
    again.close()


def test_removal_events(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    import threading

    events: list[str] = []
    ready = threading.Event()
    t = threading.Thread(target=lambda: events.extend(watch(pcsc_card.reader, 15.0,
                                                            max_events=2,
                                                            on_ready=ready.set)))
    t.start()
    assert ready.wait(15.0), "the watcher never read the reader's state"
    pcsc_stack.stack.remove(0)
    pcsc_stack.stack.insert(0)
    t.join()
    assert events[:2] == ["removed", "inserted"]


def test_exclusive_connection_blocks_others(pcsc_stack: PcscEnv, pcsc_card: CardHandle) -> None:
    holder = PcscTransport.open(pcsc_card.reader, exclusive=True)
    try:
        with pytest.raises(ReaderBusy):
            PcscTransport.open(pcsc_card.reader)
        res = cardio(pcsc_stack, "--reader", pcsc_card.reader, "info")
        assert res.returncode == 5 and "exclusively" in res.stderr
    finally:
        holder.close()
    PcscTransport.open(pcsc_card.reader).close()


def test_two_cards_at_once(pcsc_stack: PcscEnv, pcsc_card: CardHandle,
                           pcsc_card2: CardHandle) -> None:
    from cardio.text import TextApplication

    t1 = PcscTransport.open(pcsc_card.reader)
    t2 = PcscTransport.open(pcsc_card2.reader)
    a, b = TextApplication(MyNumberCard(t1)), TextApplication(MyNumberCard(t2))
    a.verify_pin(pcsc_card.profile.text_pin)
    b.verify_pin(pcsc_card2.profile.text_pin)
    assert a.my_number() == pcsc_card.profile.my_number
    assert b.my_number() == pcsc_card2.profile.my_number
    assert a.my_number() != b.my_number()
    t1.close()
    t2.close()


def test_pcscd_not_running_is_a_typed_error(tmp_path: Path) -> None:
    res = subprocess.run([sys.executable, "-m", "cardio.cli", "readers"], capture_output=True,
                         text=True, timeout=30,
                         env={**os.environ, "PCSCLITE_CSOCK_NAME": str(tmp_path / "none")})
    assert res.returncode == 5
    assert "pcscd is not running" in res.stderr and "0x8010001D" in res.stderr


def test_more_than_two_readers(tmp_path: Path, cardio_jlis: object) -> None:
    from emulators.pcsc_stack import PcscStack
    from emulators.pytest_plugin import _new_card

    cards = [_new_card(tmp_path / "cards", cardio_jlis) for _ in range(4)]
    with PcscStack([c[0] for c in cards], tmp_path / "stack") as stack:
        env = {**os.environ, **stack.env}
        res = subprocess.run([sys.executable, "-m", "cardio.cli", "readers", "--json"],
                             capture_output=True, text=True, timeout=30, env=env)
        readers = json.loads(res.stdout)["readers"]
        assert len(readers) == 4 and all(r["card_present"] for r in readers)
        for i, (_path, profile) in enumerate(cards):
            res = subprocess.run([sys.executable, "-m", "cardio.cli", "--reader", str(i), "text",
                                  "read", "--with", "a", "--json", "--pin-stdin"],
                                 input=profile.my_number + "\n", capture_output=True, text=True,
                                 timeout=30, env=env)
            assert json.loads(res.stdout)["my_number"] == profile.my_number, res.stderr


# -- OpenSC, an independent client ---------------------------------------------------------------
needs_opensc = pytest.mark.skipif(shutil.which("pkcs15-tool") is None,
                                  reason="OpenSC is not installed")


def opensc(env: PcscEnv, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(list(args), capture_output=True, timeout=60,
                          env={**os.environ, **env.env})


@needs_opensc
def test_opensc_lists_and_reads_certificates(pcsc_stack: PcscEnv, pcsc_card: CardHandle,
                                             tmp_path: Path) -> None:
    res = opensc(pcsc_stack, "pkcs15-tool", "-r", "0", "--list-certificates")
    out = res.stdout.decode()
    assert res.returncode == 0, res.stderr
    assert out.count("X.509 Certificate") == 4
    for path in ("000a", "0001", "000b", "0002"):
        assert path in out.lower()
    for cert_id, fid in (("1", AUTH_FID), ("3", AUTH_CA_FID), ("4", SIGN_CA_FID)):
        res = opensc(pcsc_stack, "pkcs15-tool", "-r", "0", "--read-certificate", cert_id)
        assert res.returncode == 0, res.stderr
        cert = x509.load_pem_x509_certificate(res.stdout)
        from cryptography.hazmat.primitives.serialization import Encoding
        assert cert.public_bytes(Encoding.DER) == card_file(pcsc_card, fid)


@needs_opensc
@pytest.mark.parametrize(("slot", "key_id", "which"), [(0, "01", "auth"), (1, "02", "sign")])
def test_opensc_pkcs11_sign_verifies(pcsc_stack: PcscEnv, pcsc_card: CardHandle,
                                     tmp_path: Path, slot: int, key_id: str, which: str) -> None:
    p = pcsc_card.profile
    pin = p.auth_pin if which == "auth" else p.sign_password
    data = tmp_path / "data"
    data.write_bytes(b"signed by OpenSC with the software card")
    res = opensc(pcsc_stack, "pkcs11-tool", "--slot-index", str(slot), "--login", "--pin", pin,
                 "--sign", "--id", key_id, "-m", "SHA256-RSA-PKCS", "--input-file", str(data),
                 "--output-file", str(tmp_path / "sig"))
    assert res.returncode == 0, res.stderr.decode()
    fid = AUTH_FID if which == "auth" else SIGN_FID
    key = x509.load_der_x509_certificate(card_file(pcsc_card, fid)).public_key()
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify((tmp_path / "sig").read_bytes(), data.read_bytes(), padding.PKCS1v15(),
               hashes.SHA256())


@needs_opensc
def test_opensc_wrong_pin_takes_exactly_one_try(pcsc_stack: PcscEnv,
                                                pcsc_card: CardHandle) -> None:
    wrong = "0000" if pcsc_card.profile.auth_pin != "0000" else "1111"
    res = opensc(pcsc_stack, "pkcs11-tool", "--slot-index", "0", "--login", "--pin", wrong,
                 "--list-objects")
    assert res.returncode != 0
    info = cardio(pcsc_stack, "--reader", pcsc_card.reader, "info", "--json")
    pins = json.loads(info.stdout)["pins"]
    assert pins["auth"]["tries_left"] == 2 and pins["sign"]["tries_left"] == 5


def test_reconnect_keeps_or_clears_the_security_state(pcsc_stack: PcscEnv,
                                                      pcsc_card: CardHandle) -> None:
    from cardio.text import TextApplication

    transport = PcscTransport.open(pcsc_card.reader)
    try:
        card = MyNumberCard(transport)
        text = TextApplication(card)
        text.verify_pin(pcsc_card.profile.text_pin)
        transport.reconnect(reset=False, exclusive=True)   # SCARD_LEAVE_CARD: still unlocked
        assert text.my_number() == pcsc_card.profile.my_number
        transport.reconnect(reset=True)                    # a warm reset clears it
        card.forget_selection()
        from cardio.apdu.errors import SecurityStatusNotSatisfied
        with pytest.raises(SecurityStatusNotSatisfied):
            text.my_number()
    finally:
        transport.close()
