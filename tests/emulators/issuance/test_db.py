"""Opening the issuance database: a bad ``--db`` is a typed error, never exit 70."""

from __future__ import annotations

from pathlib import Path

import pytest

from emulators.issuance.db import Database, DatabaseError


def test_a_file_that_is_not_a_database_is_a_database_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database" * 100)
    with pytest.raises(DatabaseError, match=r"cannot open the database.*not a database"):
        Database(f"sqlite:///{junk}")
    assert junk.read_bytes() == b"this is not an SQLite database" * 100


def test_an_unreachable_postgres_is_a_database_error_without_the_password(
        tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    url = f"postgresql://u:SECRETPW@/nodb?host={tmp_path}/nowhere&connect_timeout=2"
    with pytest.raises(DatabaseError, match="cannot open the database") as info:
        Database(url)
    assert "SECRETPW" not in str(info.value)
