"""The emulated J-LIS issuance side: 証明書交付センター (``center``), municipal
証明発行サーバ (``municipality``, ``rules``), their shared database (``db``), the synthetic
population (``population``), the operators' tools (``operator``) and the serving process
(``server``, ``cli``). Production-shaped stand-ins for closed systems."""
