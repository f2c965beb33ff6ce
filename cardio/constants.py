"""AIDs, file identifiers and credential limits of the My Number card.

Facts from ``shared/reference/mynumber-card.md`` §4-§5 (cross-checked there against
several independent implementations).
"""

from __future__ import annotations

from enum import Enum

AID_JPKI = bytes.fromhex("D392F000260100000001")
"""公的個人認証 AP."""
AID_TEXT = bytes.fromhex("D3921000310001010408")
"""券面事項入力補助AP (text / input support)."""
AID_VISUAL = bytes.fromhex("D3921000310001010402")
"""券面事項確認AP (card face)."""
AID_COMMON = bytes.fromhex("D3921000310001010100")
"""共通AP."""
AID_JUKI = bytes.fromhex("D3921000310001010401")
"""住基AP."""
AID_GP_ISD = bytes.fromhex("A0000001510000")
"""GlobalPlatform issuer security domain: selecting it restores the MF-level state."""

APPLICATIONS: dict[bytes, str] = {
    AID_JPKI: "JPKI",
    AID_TEXT: "券面事項入力補助AP",
    AID_VISUAL: "券面事項確認AP",
    AID_COMMON: "共通AP",
    AID_JUKI: "住基AP",
}

# JPKI AP
JPKI_SIGN_CERT = 0x0001
JPKI_SIGN_CA_CERT = 0x0002
JPKI_TOKEN = 0x0006
JPKI_CERT_AVAILABILITY = 0x0008
JPKI_UNKNOWN_0009 = 0x0009
JPKI_AUTH_CERT = 0x000A
JPKI_AUTH_CA_CERT = 0x000B
JPKI_AUTH_KEY = 0x0017
JPKI_AUTH_PIN = 0x0018
JPKI_SIGN_KEY = 0x001A
JPKI_SIGN_PIN = 0x001B

# 券面事項入力補助AP
TEXT_MY_NUMBER = 0x0001
TEXT_ATTRIBUTES = 0x0002
TEXT_INTEGRITY = 0x0003
TEXT_CV_CERT = 0x0004
TEXT_BASIC_INFO = 0x0005
TEXT_SESSION_KEY = 0x0006
TEXT_SIGNED_PUBKEY = 0x0007
TEXT_UNKNOWN_0008 = 0x0008
TEXT_PIN = 0x0011
TEXT_BLOCKED_0012 = 0x0012
TEXT_SIGN_KEY = 0x0013
TEXT_CODE_A = 0x0014
TEXT_CODE_B = 0x0015

# 券面事項確認AP
VISUAL_AGE = 0x0001
VISUAL_FACE = 0x0002
VISUAL_BASIC_INFO = 0x0003
VISUAL_CV_CERT = 0x0004
VISUAL_MY_NUMBER_IMAGE = 0x0005
VISUAL_UNKNOWN_0006 = 0x0006
VISUAL_BIRTH_KEY = 0x0011
VISUAL_CODE_B = 0x0012
VISUAL_CODE_A = 0x0013
VISUAL_SIGN_KEY = 0x001A

# 共通AP / 住基AP
COMMON_CARD_INFO = 0x0001
COMMON_KEY_ID = 0x0002
COMMON_AUTH_KEY = 0x0019
COMMON_PIN = 0x001C
JUKI_RECORD = 0x0002
JUKI_PIN = 0x001C

TOKEN_MYNUMBER_CARD = "JPKIAPICCTOKEN2"
TOKEN_JUKI_CARD = "JPKIAPICCTOKEN"
TOKEN_ANDROID = "JPKIAPGPSETOKEN"
TOKEN_IPHONE = "JPKIAPIOSTOKEN"

ATR_CONTACT = bytes.fromhex("3BE000FF8131FE4514")
"""The contact ATR in OpenSC's ``jpki_atrs[]`` (T=1, no historical bytes)."""

# Default loopback ports (one home each; the emulators and the CLI take them from here).
VPCD_PORT = 35963
"""vpcd's first reader slot (``Virtual PCD 00 00``; the next slot is the next port)."""
EMU_CA_PORT = 35980
"""The emulated JPKI CAs' OCSP responder and CRL server."""
FACEPIN_PORT = 35990
"""The PIN-reset reservation service."""

# MF-level GET DATA tags (reference §5.5)
DO_ISSUER_ID = 0x0042
DO_CARD_NUMBER = 0x0045
DO_CARD_RECOGNITION = 0x0066
DO_MUNICIPALITY = 0x00F0
DO_EXPIRY = 0x00F2
DO_INTERMEDIATE_KEY_ID = 0x00F7
DO_CV_ROOT_TO_INTERMEDIATE = 0x00F8
DO_CV_INTERMEDIATE_TO_CARD = 0x7F21
DO_CONTACT_ATR = 0x5F51


class Credential(Enum):
    """Every PIN and 照合番号 on the card: (AID, key EF, human name, default tries)."""

    AUTH = (AID_JPKI, JPKI_AUTH_PIN, "JPKI 利用者証明用 PIN (auth)", 3)
    SIGN = (AID_JPKI, JPKI_SIGN_PIN, "JPKI 署名用パスワード (signature password)", 5)
    TEXT = (AID_TEXT, TEXT_PIN, "券面事項入力補助用暗証番号 (text PIN)", 3)
    TEXT_A = (AID_TEXT, TEXT_CODE_A, "券面事項入力補助AP 照合番号A", 10)
    TEXT_B = (AID_TEXT, TEXT_CODE_B, "券面事項入力補助AP 照合番号B", 10)
    VISUAL_A = (AID_VISUAL, VISUAL_CODE_A, "券面事項確認AP 照合番号A", 10)
    VISUAL_B = (AID_VISUAL, VISUAL_CODE_B, "券面事項確認AP 照合番号B", 10)
    VISUAL_BIRTH = (AID_VISUAL, VISUAL_BIRTH_KEY, "券面事項確認AP 生年月日 key", 10)
    COMMON = (AID_COMMON, COMMON_PIN, "共通AP PIN", 3)
    JUKI = (AID_JUKI, JUKI_PIN, "住基AP 住民基本台帳用暗証番号", 3)

    @property
    def aid(self) -> bytes:
        return self.value[0]

    @property
    def fid(self) -> int:
        return self.value[1]

    @property
    def label(self) -> str:
        return self.value[2]

    @property
    def default_tries(self) -> int:
        return self.value[3]

    @property
    def key(self) -> str:
        """The short name used in JSON output and on the command line."""
        return self.name.lower()
