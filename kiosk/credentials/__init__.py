"""The 住民票 as a selective-disclosure credential (SD-JWT VC, ``typ: dc+sd-jwt``) in the
resident's wallet: the holder (:mod:`kiosk.credentials.holder`) and the verifier a relying
party embeds (:mod:`kiosk.credentials.verifier`), over the SD-JWT core
(:mod:`kiosk.credentials.sdjwt`, :mod:`kiosk.credentials.jose`), the Token Status List
(:mod:`kiosk.credentials.statuslist`), the credential type (:mod:`kiosk.credentials.juminhyo`)
and the wallet-issuance messages (:mod:`kiosk.credentials.messages`, shared with the issuing
municipality in ``emulators/issuance``). ``docs/credentials.md`` describes the protocol.
"""
