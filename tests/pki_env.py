"""A private emulated J-LIS with its CA server on a free loopback port, for PKI tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cardio.trust import TrustStore
from emulators.card import JlisHierarchy, Profile, create_card
from emulators.card.keys import KeyPool
from emulators.jpki_ca import CaServer, JpkiAuthority


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PkiEnv:
    jlis: JlisHierarchy
    authority: JpkiAuthority
    server: CaServer
    trust: TrustStore
    roots: Path
    base: Path
    pool: KeyPool

    def new_card(self, photo: bytes | None = None, **profile: object) -> tuple[Path, Profile]:
        prof = Profile(**profile)  # type: ignore[arg-type]
        path = self.base / f"card{len(list(self.base.glob('card*')))}"
        create_card(path, prof, self.jlis, keys=self.pool, photo=photo)
        self.authority.register_card(path)  # J-LIS records the card it issued
        return path, prof


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory, key_pool: KeyPool) -> Iterator[PkiEnv]:
    base = tmp_path_factory.mktemp("pki")
    port = free_port()
    jlis = JlisHierarchy.load_or_create(base / "jlis", keys=key_pool,
                                        ca_url=f"http://127.0.0.1:{port}")
    authority = JpkiAuthority(jlis)
    server = CaServer(authority, "127.0.0.1", port).start()
    from emulators.jpki_ca import export_roots

    export_roots(jlis, base / "roots")
    try:
        yield PkiEnv(jlis, authority, server, TrustStore.from_dir(base / "roots"),
                     base / "roots", base, key_pool)
    finally:
        server.stop()
