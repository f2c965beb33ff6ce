"""``cardio kiosk recover`` and ``cardio kiosk ledger`` over damaged journals: impossible
amounts, deleted and garbled rows, text in numeric columns, a corrupt page. Recovery acts on
nothing it cannot validate — no payout, no slip, no release, no stack or return for that
session — and says so with a typed one-line error (exit 24, the cash-ledger code; 1 for a
file that is not a journal at all), never "internal error" (exit 70).

Each damaged journal is recovered twice: in-process through a port that records every
action (and would pay whatever it is asked), compared with what recovery does on the same
journal undamaged — a damaged journal may only lead to fewer actions, never to another
amount or another session's money — and through the real command line."""

from __future__ import annotations

import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cardio.cli import main
from kiosk.session import events as E
from kiosk.session.journal import Journal, JournalError
from kiosk.session.ports import ConservativePort
from tests.kiosk.test_runner_cli import _drive_to_payment, crashed_at_change, crashed_at_print

OPEN = ("Tpay", "Tprint", "Tchange")


def finished(j: Journal, txn: str) -> None:
    """A session that printed and ended normally (¥1000 for a ¥200 fee, ¥800 change)."""
    s = _drive_to_payment(j, txn, 1000)
    for ev in (E.DocumentReceived(key=s.pending, document=object(), digest="ab" * 32),):
        j.step(s, ev)
    j.step(s, E.EscrowStacked(key=s.pending, yen=1000))
    j.step(s, E.ChangePaid(key=s.pending, yen=800))
    j.step(s, E.PrintDone(key=s.pending))
    j.step(s, E.CardRemoved())
    j.step(s, E.PagesReleased(key=s.pending))
    j.step(s, E.Finalized(key=s.pending))
    assert s.state.value == "done"


_TEMPLATE: dict[str, bytes] = {}


def crashed(path: Path) -> None:
    """Three sessions a crash left open — paying (¥500 in escrow of a ¥1000 fee), printing
    (¥1000 stacked, ¥800 change paid), paying change (¥800 not yet paid) — and a finished
    one. Written once by the real core through the journal, then copied (one file: the WAL
    checkpointed into it)."""
    if "journal" not in _TEMPLATE:
        first = path.with_name(path.name + ".template")
        with Journal(first) as j:
            finished(j, "Tdone")
            _drive_to_payment(j, "Tpay", 500, fee=1000)
            crashed_at_print(j, "Tprint")
            crashed_at_change(j, "Tchange")
            j._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        _TEMPLATE["journal"] = first.read_bytes()
        for f in path.parent.glob(first.name + "*"):
            f.unlink()
    path.write_bytes(_TEMPLATE["journal"])


class Spy(ConservativePort):
    """Records every action recovery asks for; pays whatever change it is asked to."""

    def __init__(self, journal: Journal, out: Path) -> None:
        super().__init__(journal, out=out)
        self.calls: list[tuple[Any, ...]] = []

    def return_escrow(self, key: str) -> tuple[int, int]:
        got = super().return_escrow(key)
        self.calls.append(("return", key, got))
        return got

    def stack_escrow(self, key: str) -> int:
        got = super().stack_escrow(key)
        self.calls.append(("stack", key, got))
        return got

    def pay_change(self, key: str, yen: int) -> int:
        self.calls.append(("pay", key, yen))
        return yen

    def settle_print(self, key: str) -> bool:
        self.calls.append(("settle-print", key))
        return False

    def print_slip(self, key: str, txn: str, yen: int, reason: str) -> bool:
        self.calls.append(("slip", key, txn, yen, reason))
        return True

    def release_pages(self, key: str) -> None:
        self.calls.append(("release", key))


def sql(*statements: str) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        db = sqlite3.connect(path)
        for s in statements:
            db.execute(s)
        db.commit()
        db.close()
    return damage


def cmd(txn: str, kind: str) -> str:
    return f"(SELECT key FROM commands WHERE txn='{txn}' AND kind='{kind}')"


def overwrite_middle(path: Path) -> None:
    """A corrupt page: a page in the middle of the SQLite file overwritten with noise (a
    few bytes in a page's unused space would be no damage at all)."""
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    data = bytearray(path.read_bytes())
    middle = (len(data) // page // 2) * page
    data[middle:middle + page] = random.Random(7).randbytes(page)
    path.write_bytes(bytes(data))


def truncate_half(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


#: name → (the session it damages, or "" for the file; the damage)
CASES: dict[str, tuple[str, Callable[[Path], None]]] = {
    # impossible amounts
    "refund-10^15": ("Tprint", sql("UPDATE sessions SET refund=1000000000000000 WHERE"
                                   " txn='Tprint'")),
    "refund-negative": ("Tprint", sql("UPDATE sessions SET refund=-200 WHERE txn='Tprint'")),
    "refund-odd-yen": ("Tprint", sql("UPDATE sessions SET refund=5 WHERE txn='Tprint'")),
    "refund-without-cause": ("Tprint", sql("UPDATE sessions SET refund=300 WHERE"
                                           " txn='Tprint'")),
    "change-due-huge-consistent": ("Tchange", sql(
        "UPDATE sessions SET change_due=999999999990, stacked=1000000000000,"
        " cash_in=1000000000000 WHERE txn='Tchange'",
        "UPDATE commands SET yen=999999999990 WHERE txn='Tchange' AND kind='paychange'")),
    "escrow-negative": ("Tpay", sql("UPDATE sessions SET escrow=-500 WHERE txn='Tpay'")),
    "escrow-huge": ("Tpay", sql("UPDATE sessions SET escrow=50000000000 WHERE txn='Tpay'")),
    "fee-odd": ("Tprint", sql("UPDATE sessions SET fee=205 WHERE txn='Tprint'")),
    "stacked-mismatch": ("Tprint", sql("UPDATE sessions SET stacked=5000, cash_in=5000"
                                       " WHERE txn='Tprint'")),
    "change-paid-over-due": ("Tprint", sql("UPDATE sessions SET change_paid=900 WHERE"
                                           " txn='Tprint'")),
    "stack-yen-mismatch": ("Tprint", sql(f"UPDATE commands SET result=7000 WHERE"
                                         f" key={cmd('Tprint', 'stackescrow')}")),
    "paychange-yen-huge": ("Tchange", sql(f"UPDATE commands SET yen=80000000 WHERE"
                                          f" key={cmd('Tchange', 'paychange')}")),
    # text (and other types) in numeric columns
    "text-cash-in": ("Tprint", sql("UPDATE sessions SET cash_in='lots' WHERE txn='Tprint'")),
    "text-refund": ("Tchange", sql("UPDATE sessions SET refund='x' WHERE txn='Tchange'")),
    "text-fee": ("Tpay", sql("UPDATE sessions SET fee='千円' WHERE txn='Tpay'")),
    "text-command-yen": ("Tchange", sql(f"UPDATE commands SET yen='eight hundred' WHERE"
                                        f" key={cmd('Tchange', 'paychange')}")),
    "text-command-result": ("Tprint", sql(f"UPDATE commands SET result='1000 yen' WHERE"
                                          f" key={cmd('Tprint', 'stackescrow')}")),
    "float-refund": ("Tprint", sql("UPDATE sessions SET refund=0.5 WHERE txn='Tprint'")),
    "blob-escrow": ("Tpay", sql("UPDATE sessions SET escrow=x'00ff' WHERE txn='Tpay'")),
    "flag-printed-7": ("Tprint", sql("UPDATE sessions SET printed=7 WHERE txn='Tprint'")),
    "flag-done-3": ("Tprint", sql(f"UPDATE commands SET done=3 WHERE"
                                  f" key={cmd('Tprint', 'printdocument')}")),
    # deleted rows
    "deleted-stack": ("Tprint", sql(f"DELETE FROM commands WHERE"
                                    f" key={cmd('Tprint', 'stackescrow')}")),
    "deleted-paid-change": ("Tprint", sql(f"DELETE FROM commands WHERE"
                                          f" key={cmd('Tprint', 'paychange')}")),
    "deleted-pending-print": ("Tprint", sql(f"DELETE FROM commands WHERE"
                                            f" key={cmd('Tprint', 'printdocument')}")),
    "deleted-pending-change": ("Tchange", sql(f"DELETE FROM commands WHERE"
                                              f" key={cmd('Tchange', 'paychange')}")),
    "deleted-middle-row": ("Tprint", sql(f"DELETE FROM commands WHERE"
                                         f" key={cmd('Tprint', 'startcashin')}")),
    "deleted-session-row": ("Tchange", sql("DELETE FROM sessions WHERE txn='Tchange'")),
    # garbled rows
    "garbled-kind": ("Tchange", sql(f"UPDATE commands SET kind='printdocument' WHERE"
                                    f" key={cmd('Tchange', 'paychange')}")),
    "garbled-key": ("Tchange", sql(f"UPDATE commands SET key='Tchange:99:paychange' WHERE"
                                   f" key={cmd('Tchange', 'paychange')}")),
    "garbled-command-txn": ("Tprint", sql(f"UPDATE commands SET txn='Tpay' WHERE"
                                          f" key={cmd('Tprint', 'stackescrow')}")),
    "garbled-done-flag": ("Tprint", sql(f"UPDATE commands SET done=0 WHERE"
                                        f" key={cmd('Tprint', 'paychange')}")),
    "garbled-detail": ("Tchange", sql(f"UPDATE commands SET detail=x'80ff00' WHERE"
                                      f" key={cmd('Tchange', 'paychange')}")),
    "duplicated-payout": ("Tchange", sql(
        "INSERT INTO commands (key, txn, seq, kind, yen, detail) SELECT"
        " 'Tchange:98:paychange', txn, seq + 1, kind, yen, detail FROM commands WHERE"
        " txn='Tchange' AND kind='paychange'")),
    "garbled-state": ("Tprint", sql("UPDATE sessions SET state='flying' WHERE txn='Tprint'")),
    "garbled-outcome": ("Tprint", sql("UPDATE sessions SET outcome='won_lottery' WHERE"
                                      " txn='Tprint'")),
    "garbled-reason": ("Tpay", sql("UPDATE sessions SET reason='line one\nline two"
                                   " <script>' WHERE txn='Tpay'")),
    "garbled-txn-path": ("Tprint", sql("UPDATE sessions SET txn='../../evil' WHERE"
                                       " txn='Tprint'")),
    "closed-flag-on-open": ("Tpay", sql("UPDATE sessions SET closed=1 WHERE txn='Tpay'")),
    # a finished session's books
    "closed-refund-10^15": ("Tdone", sql("UPDATE sessions SET refund=1000000000000000"
                                         " WHERE txn='Tdone'")),
    "closed-text-cash-in": ("Tdone", sql("UPDATE sessions SET cash_in='abc' WHERE"
                                         " txn='Tdone'")),
    # the file itself
    "corrupt-page": ("", overwrite_middle),
    "truncated": ("", truncate_half),
    "no-commands-table": ("", sql("DROP TABLE commands")),
    "header-zeroed": ("", lambda p: p.write_bytes(b"\0" * 100 + p.read_bytes()[100:])),
}


def baseline(tmp: Path) -> list[tuple[Any, ...]]:
    path = tmp / "baseline.db"
    crashed(path)
    with Journal(path) as j:
        spy = Spy(j, tmp / "baseline-out")
        j.recover(spy)
    return spy.calls


def recover_spied(path: Path, out: Path) -> tuple[list[tuple[Any, ...]], dict[str, str],
                                                  str]:
    """Actions, outcome per session, and the typed error (if one) of an in-process
    recovery."""
    try:
        with Journal(path) as j:
            spy = Spy(j, out)
            try:
                done = j.recover(spy)
            finally:
                calls = spy.calls
    except JournalError as e:
        return [], {}, f"{type(e).__name__}: {e}"
    return calls, {r.txn: r.outcome for r in done}, ""


def one_line_error(err: str) -> bool:
    return err.count("\n") == 1 and err.startswith("cardio: error:") and \
        "internal error" not in err


@pytest.fixture(scope="module")
def expected(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[Any, ...]]:
    calls = baseline(tmp_path_factory.mktemp("baseline"))
    kinds = sorted({c[0] for c in calls})
    assert kinds == ["pay", "release", "return", "settle-print", "slip"]  # all exercised
    return calls


@pytest.mark.parametrize("name", list(CASES))
def test_a_damaged_journal_is_left_for_staff(name: str, tmp_path: Path,
                                              expected: list[tuple[Any, ...]],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    target, damage = CASES[name]
    path = tmp_path / "journal.db"
    crashed(path)
    damage(path)
    keep = path.read_bytes()

    calls, outcomes, error = recover_spied(path, tmp_path / "spied")
    # Never more, never another amount than the undamaged journal's recovery …
    assert set(calls) <= set(expected), (name, set(calls) - set(expected))
    # … and nothing at all for the damaged session.
    if target:
        assert not [c for c in calls if target in str(c[1:])], (name, calls)
    if target in OPEN or name == "deleted-session-row":
        assert outcomes.get(target) == "left_for_staff" or error, (name, outcomes)

    # The command line: a typed one-line error with the cash-ledger code, never exit 70.
    path.write_bytes(keep)
    for f in tmp_path.glob("journal.db-*"):
        f.unlink()
    out = tmp_path / "out"
    rc = main(["kiosk", "recover", "--journal", str(path), "--out", str(out), "--json"])
    err = capsys.readouterr().err
    assert rc in (1, 24) if not target else rc == 24, (name, rc, err)
    assert one_line_error(err), (name, err)
    if target:
        assert not list(out.rglob(f"slip-{target}.pdf")), name
    rc = main(["kiosk", "ledger", "--journal", str(path)])
    err = capsys.readouterr().err
    assert rc in (1, 24), (name, rc, err)
    assert err == "" or one_line_error(err), (name, err)


def mutations(seed: int, path: Path) -> str:
    """One random cell of an open session's rows set to a random wrong value."""
    rnd = random.Random(seed)
    db = sqlite3.connect(path)
    table = rnd.choice(["sessions", "commands"])
    cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
    rows = db.execute(f"SELECT rowid, * FROM {table} WHERE txn IN ('Tpay', 'Tprint',"
                      " 'Tchange')").fetchall()
    rowid, *values = rnd.choice(rows)
    i = rnd.randrange(len(cols))
    old = values[i]
    palette: list[object] = ["garbage", "", -10, 10**15, 1.5, b"\xff\x00", 0, 1, 7,
                             "Tpay", "Tprint:3:paychange", "paychange", "printing"]
    if isinstance(old, int):
        palette += [-old, old + 10, old * 1000, old + 1, str(old) + "x"]
    new = rnd.choice([v for v in palette if v != old])
    try:
        db.execute(f"UPDATE {table} SET {cols[i]}=? WHERE rowid=?", (new, rowid))
        db.commit()
    except sqlite3.IntegrityError:
        new = "(refused by a constraint)"
    db.close()
    return f"{table}.{cols[i]}: {old!r} -> {new!r}"


@pytest.mark.slow
def test_random_damage_never_pays_prints_or_releases_more(
        tmp_path: Path, expected: list[tuple[Any, ...]],
        capsys: pytest.CaptureFixture[str]) -> None:
    seen = {"left_for_staff": 0, "same_as_undamaged": 0, "refused_file": 0}
    for seed in range(80):
        path = tmp_path / f"j{seed}.db"
        crashed(path)
        what = mutations(seed, path)
        keep = path.read_bytes()
        calls, outcomes, error = recover_spied(path, tmp_path / f"o{seed}")
        assert set(calls) <= set(expected), (seed, what, set(calls) - set(expected))
        if error:
            seen["refused_file"] += 1
        elif "left_for_staff" in outcomes.values():
            seen["left_for_staff"] += 1
        else:
            seen["same_as_undamaged"] += 1
        path.write_bytes(keep)
        for f in tmp_path.glob(f"j{seed}.db-*"):
            f.unlink()
        for argv in (["recover", "--out", str(tmp_path / f"c{seed}")], ["ledger"]):
            rc = main(["kiosk", *argv, "--journal", str(path), "--json"])
            err = capsys.readouterr().err
            assert rc != 70 and (err == "" or one_line_error(err)), (seed, what, argv, err)
    print(f"\nrandom single-cell damage, 80 journals: {seen}")
    assert seen["left_for_staff"] >= 40
