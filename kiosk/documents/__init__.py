"""Certificate documents: the structured model (``model``), fictitious samples (``samples``),
A4 layout and rendering to PDF and PNG (``render``), the anti-forgery layers (``layers``), the
signed seal (``seal``), the issuer trust list (``trust``), the offline verifier (``verify``),
the copier/IR/eye/phone instruments (``simulate``) and the ``doc`` commands (``cli``).
``docs/document-security.md`` describes the formats, which are our own."""
