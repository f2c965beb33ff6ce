"""The コンビニ交付 kiosk: peripherals (:mod:`kiosk.devices`), the issuance protocol and
the center client (:mod:`kiosk.protocol`, :mod:`kiosk.center_client`), certificate
documents (:mod:`kiosk.documents`) and the session controller (:mod:`kiosk.session`).
Never imports :mod:`emulators` (an import-linter contract)."""
