"""The ``doc`` commands end to end, as a user runs them (a separate process each)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kiosk.documents.samples import sample_document

# The one place that knows how the doc commands are invoked: `cardio doc` run by the
# interpreter under test.
DOC_ARGV = [sys.executable, "-m", "cardio.cli", "doc"]


def doc(*args: str, jlis: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CARDIO_JLIS_DIR": str(jlis)}
    p = subprocess.run([*DOC_ARGV, *args], capture_output=True, text=True, env=env,
                       timeout=300)
    if check:
        assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="module")
def jlis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("jlis")


@pytest.fixture(scope="module")
def trust_dir(jlis: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trust")
    p = doc("trust", "--out", str(out), "--json", jlis=jlis)
    keys = json.loads(p.stdout)["keys"]
    # The sample municipality's seal key and its credential key (kiosk.credentials).
    assert sorted(k["use"] for k in keys) == ["credential", "seal"]
    assert {k["issuer"] for k in keys} == {"999997"}
    assert len(list(out.glob("*.json"))) == 2
    return out


@pytest.mark.slow
def test_render_pdf_then_verify_with_the_exported_trust_list(
        jlis: Path, trust_dir: Path, tmp_path: Path) -> None:
    pdf = tmp_path / "k.pdf"
    r = json.loads(doc("render", "--sample", "koseki", "--out", str(pdf), "--json",
                       jlis=jlis).stdout)
    assert r["pages"] >= 4 and r["seal_mm"] <= 25
    p = doc("verify", str(pdf), "--trust", str(trust_dir), "--json", jlis=jlis)
    v = json.loads(p.stdout)  # exactly one JSON object
    assert v["valid"] is True and v["status"] == "valid" and v["content"] == "not-checked"
    assert v["fields"]["hittosha"] == "青葉　太郎" and v["sealed_title"] == "戸籍全部事項証明書"
    assert [pg["status"] for pg in v["pages"]] == ["valid"] * r["pages"]
    text = doc("verify", str(pdf), "--trust", str(trust_dir), jlis=jlis).stdout
    assert text.startswith(f"valid: seal verified on every page ({r['pages']} of")
    assert "  page 1: valid — seal of" in text and "content: not checked" in text
    # The same page against an empty trust list: untrusted, exit code 3.
    empty = tmp_path / "empty"
    empty.mkdir()
    p = doc("verify", str(pdf), "--trust", str(empty), "--json", jlis=jlis, check=False)
    assert p.returncode == 6 and json.loads(p.stdout)["status"] == "untrusted"


@pytest.mark.slow
def test_render_png_with_layer_masks_and_descramble(jlis: Path, trust_dir: Path,
                                                    tmp_path: Path) -> None:
    png, layers = tmp_path / "j.png", tmp_path / "layers"
    doc("render", "--sample", "juminhyo", "--out", str(png), "--png", "--dpi", "300",
        "--layers-out", str(layers), jlis=jlis)
    with Image.open(png) as im:
        size = im.size
    assert size == (2480, 3508)
    for name in ("pantograph-word.png", "latent.png", "seal.png", "scramble.png", "stamp.png",
                 "text.png", "back-pantograph-word.png"):
        with Image.open(layers / name) as m:
            assert m.size == size and np.asarray(m).any(), name
    index = json.loads((layers / "layers.json").read_text())
    assert index["latent.png"]["side"] == "back"
    # Content check with the document itself: the sample's canonical JSON.
    content = tmp_path / "doc.json"
    content.write_bytes(sample_document("juminhyo").canonical_bytes())
    v = json.loads(doc("verify", str(png), "--trust", str(trust_dir), "--content",
                       str(content), "--json", jlis=jlis).stdout)
    assert v["valid"] and v["content"] == "digest-match"
    assert "my_number" not in json.dumps(v) and "123456789018" not in json.dumps(v)
    other = tmp_path / "other.json"
    other.write_bytes(sample_document("juminhyo", serial=7).canonical_bytes())
    p = doc("verify", str(png), "--trust", str(trust_dir), "--content", str(other), "--json",
            jlis=jlis, check=False)
    assert p.returncode == 6 and json.loads(p.stdout)["status"] == "invalid_signature"
    out = tmp_path / "plain.png"
    back = tmp_path / "j-back.png"
    doc("descramble", str(back), "--key", "emu", "--out", str(out), jlis=jlis)
    with Image.open(out) as im:
        plain = np.asarray(im.convert("L")) < 128
    assert 0.01 < plain.mean() < 0.4  # readable text on white, not 50 % noise
    p = doc("descramble", str(back), "--key", "00" * 32, "--out", str(out), jlis=jlis)
    with Image.open(out) as im:
        assert (np.asarray(im.convert("L")) < 128).mean() > 0.4  # wrong key: still noise


def test_bad_input_is_a_clear_error_with_its_exit_code(jlis: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not an image")
    p = doc("verify", str(junk), "--trust", "emu", jlis=jlis, check=False)
    assert p.returncode == 1 and "neither a PDF nor a readable image" in p.stderr
    assert "Traceback" not in p.stderr
    p = doc("verify", str(tmp_path / "missing.pdf"), "--trust", "emu", jlis=jlis,
            check=False)
    assert p.returncode == 1 and "cannot read" in p.stderr
    p = doc("descramble", str(junk), "--key", "zz", "--out", str(tmp_path / "o.png"),
            jlis=jlis, check=False)
    assert p.returncode == 2 and "--key" in p.stderr
    p = doc("verify", str(junk), "--trust", str(tmp_path / "nowhere"), jlis=jlis, check=False)
    assert p.returncode == 2 and "trust list" in p.stderr


def test_a_blank_page_has_no_seal(jlis: Path, trust_dir: Path, tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (800, 1100), 255).save(blank)
    p = doc("verify", str(blank), "--trust", str(trust_dir), "--json", jlis=jlis, check=False)
    assert p.returncode == 6 and json.loads(p.stdout)["status"] == "no_seal"


def test_verify_never_trusts_test_keys_by_omission(jlis: Path, tmp_path: Path) -> None:
    """Without --trust (or $CARDIO_DOC_TRUST_DIR), a machine with no emulated issuers
    trusts nothing — verify creates none — and one that runs the emulator verifies against
    them only with a warning and ``trust_source`` saying so."""
    blank = tmp_path / "blank.png"
    Image.new("L", (80, 110), 255).save(blank)
    empty = tmp_path / "empty-jlis"
    empty.mkdir()
    p = doc("verify", str(blank), jlis=empty, check=False)
    assert p.returncode == 2 and "no trust list" in p.stderr and p.stdout == ""
    assert p.stderr.count("\n") == 1
    assert list(empty.iterdir()) == []
    p = doc("verify", str(blank), "--trust", "emu", "--json", jlis=jlis, check=False)
    assert p.returncode == 6 and json.loads(p.stdout)["status"] == "no_seal"
    page = tmp_path / "j.pdf"
    doc("render", "--sample", "juminhyo", "--out", str(page), jlis=jlis)
    p = doc("verify", str(page), "--json", jlis=jlis, check=False)
    out = json.loads(p.stdout)
    assert p.returncode == 0 and out["status"] == "valid", p.stderr
    assert "test keys" in out["trust_source"] and "warning" in p.stderr
    trust_dir = tmp_path / "trust"
    doc("trust", "--out", str(trust_dir), jlis=jlis)
    p = subprocess.run([*DOC_ARGV, "verify", str(page), "--json"], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "CARDIO_JLIS_DIR": str(empty),
                                                    "CARDIO_DOC_TRUST_DIR": str(trust_dir)})
    assert p.returncode == 0 and json.loads(p.stdout)["trust_source"] == "$CARDIO_DOC_TRUST_DIR"
    assert p.stderr == ""


@pytest.mark.parametrize("dpi", ["0", "-5", "100000"])
def test_render_refuses_a_resolution_out_of_range(jlis: Path, tmp_path: Path,
                                                  dpi: str) -> None:
    p = doc("render", "--sample", "juminhyo", "--out", str(tmp_path / "x.png"), "--png",
            "--dpi", dpi, jlis=jlis, check=False)
    assert p.returncode == 2 and "--dpi is 100 to 1200" in p.stderr
    assert not list(tmp_path.iterdir())


def test_png_outputs_without_a_png_name(jlis: Path, tmp_path: Path) -> None:
    """``--out`` names the PNG to write: a name without ``.png`` was Pillow's "unknown file
    extension" ValueError, an internal error (exit 70), after all the work was done."""
    page = tmp_path / "page"
    doc("render", "--sample", "juminhyo", "--out", str(page), "--png", "--dpi", "100",
        jlis=jlis)
    back = tmp_path / "page-back"
    assert page.read_bytes()[:8] == back.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    plain = tmp_path / "plain.out"
    p = doc("descramble", str(back), "--key", "emu", "--out", str(plain), jlis=jlis,
            check=False)
    assert p.returncode == 0, p.stderr
    assert plain.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_json_output_carries_a_non_utf8_path_exactly(jlis: Path, tmp_path: Path) -> None:
    """The doc commands print through the host's ``emit``: a file name that is not UTF-8
    comes out as a ``\\udcff`` escape that round-trips, never as raw bytes."""
    raw = os.fsencode(tmp_path) + b"/trust-\xff"
    p = subprocess.run([*DOC_ARGV, "trust", "--out", os.fsdecode(raw), "--json"],
                       capture_output=True, timeout=120,
                       env={**os.environ, "CARDIO_JLIS_DIR": str(jlis),
                            "PYTHONIOENCODING": "utf-8:strict"})
    assert p.returncode == 0, p.stderr
    assert os.fsencode(json.loads(p.stdout.decode("utf-8"))["out"]) == raw


def _run_bounded(argv: list[str], env: dict[str, str], timeout: float
                 ) -> tuple[int, str, float, int]:
    """Run ``argv``; (exit code, stderr, seconds, peak RSS in MB of the process and its
    page-reading child). Its address space is capped at 3 GiB so a regression fails here
    rather than eating the machine, and it is killed after ``timeout``."""
    import signal
    import sys
    import time

    # The command runs under a small launcher that caps it and reports its own peak RSS:
    # a child forked straight from this test process would carry the test process's RSS
    # high-water mark (fork and exec keep it), so late in a full run it read 566 MB for a
    # process that ran for 0.4 s.
    launcher = (
        "import os, resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    fd = os.open(os.devnull, os.O_WRONLY)\n"
        "    os.dup2(fd, 1)\n"
        "    os.execvp(sys.argv[1], sys.argv[1:])\n"
        "_, status, usage = os.wait4(pid, 0)\n"
        "sys.stdout.write(str(usage.ru_maxrss))\n"
        "sys.exit(os.waitstatus_to_exitcode(status))\n")
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", launcher, *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)
    timer = threading.Timer(timeout, lambda: os.killpg(proc.pid, signal.SIGKILL))
    timer.start()
    try:
        out, err_b = proc.communicate()
    finally:
        timer.cancel()
    err = err_b.decode("utf-8", "replace")
    peak_kb = int(out.decode() or "0")
    return proc.returncode, err, time.perf_counter() - t, peak_kb // 1024


def test_verify_refuses_hostile_input_with_one_line_in_bounded_time_and_memory(
        jlis: Path, trust_dir: Path, tmp_path: Path) -> None:
    """A FIFO without a writer hung ``doc verify``; ``/dev/zero`` ended in exit 70 after
    eating memory; a 22 kB PDF of 50 huge pages took 35.7 s and 4.4 GB."""
    from tests.kiosk.documents import hostile

    fifo = tmp_path / "fifo.pdf"
    os.mkfifo(fifo)
    huge = tmp_path / "huge.pdf"
    huge.write_bytes(hostile.blank_pdf(50, 2270, 2270))
    a3 = tmp_path / "a3.pdf"  # each page allowed, all together 557 million pixels
    a3.write_bytes(hostile.blank_pdf(32, 842, 1191))
    env = {**os.environ, "CARDIO_JLIS_DIR": str(jlis)}
    for path, says in ((fifo, "not a regular file (a FIFO)"),
                       (Path("/dev/zero"), "not a regular file (a character device)"),
                       (huge, "50 pages; a certificate has at most 32"),
                       (a3, "at most 280,000,000 in all")):
        rc, err, seconds, mb = _run_bounded(
            [*DOC_ARGV, "verify", str(path), "--trust", str(trust_dir)], env, timeout=60)
        assert rc == 1 and says in err and err.count("\n") == 1, (path, rc, err[-300:])
        assert seconds < 20 and mb < 500, (path, seconds, mb)


def test_content_that_is_not_a_document_is_one_line(jlis: Path, trust_dir: Path,
                                                    tmp_path: Path) -> None:
    blank = tmp_path / "blank.png"
    Image.new("L", (80, 110), 255).save(blank)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000)
    for content, says in (("/dev/zero", "--content /dev/zero: not a regular file"),
                          (str(deep), "nested too deep")):
        p = doc("verify", str(blank), "--trust", str(trust_dir), "--content", content,
                jlis=jlis, check=False)
        assert p.returncode == 1 and says in p.stderr and p.stderr.count("\n") == 1, p.stderr


def test_verify_help_states_the_limits_in_force(jlis: Path) -> None:
    """The limits are written out in ``doc verify --help`` (the CLI does not import the
    page reader to build its parser); they must be the ones enforced."""
    from kiosk.documents.pages import DEFAULT_LIMITS as L

    text = " ".join(doc("verify", "--help", jlis=jlis).stdout.split())
    for phrase in (f"at most {L.max_bytes // 2**20} MiB", f"at most {L.max_pages} pages",
                   f"({L.max_page_pixels // 10**6} million pixels at 300 dpi)",
                   f"{L.max_pdf_pixels // 10**6} million pixels in all",
                   f"{L.max_page_objects:,} drawing objects",
                   f"{L.max_image_pixels // 10**6} million pixels per embedded image",
                   f"{L.memory_bytes // 2**30} GiB of memory",
                   f"{L.cpu_seconds:g} s of CPU time", f"({L.wall_seconds:g} s of wall-clock"):
        assert phrase in text, phrase
