"""``cardio emu issuance`` with bad values: one line, a usage exit code, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

from cardio.cli import main


@pytest.mark.parametrize("argv, says", [
    (["seed", "--residents", "-5"], "--residents is 0..10,000,000, not -5"),
    (["seed", "--residents", "99999999999999999999999"], "--residents is 0..10,000,000"),
    (["serve", "--kiosks", "-1"], "--kiosks is 0..10,000, not -1"),
    (["serve", "--seed-residents", "-1"], "--seed-residents is 0..10,000,000"),
    (["serve", "--now", "garbage"], "--now must be an ISO 8601 time"),
])
def test_bad_counts_and_times_are_usage_errors(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str],
                                               argv: list[str], says: str) -> None:
    db = tmp_path / "i.db"
    code = main(["emu", "issuance", *argv, "--db", f"sqlite:///{db}",
                 "--jlis", str(tmp_path / "jlis")])
    out, err = capsys.readouterr()
    assert code == 2 and out == "" and err.count("\n") == 1 and says in err, err
    assert not db.exists()
