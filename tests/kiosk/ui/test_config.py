"""``[web]`` and ``[kiosk.timeouts]`` in ``kiosk run``'s TOML: refused clearly when wrong;
the UI server on an ephemeral loopback port, serving the page and the catalogues with
headers that keep everything on the page its own."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest

from kiosk.devices.errors import DeviceConfigError
from kiosk.run import load_run_config, timeouts_of
from kiosk.ui.app import UiServer, parse_listen
from kiosk.ui.hub import UiConfigError, WebHub

KIOSK = '''[kiosk]
journal = "j.db"
tray = "out"
center = "http://127.0.0.1:9"
reader = "emu:/nowhere"
'''


def config(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "kiosk.toml"
    p.write_text(KIOSK + text)
    return p


def test_web_and_a_scripted_customer_exclude_each_other(tmp_path: Path) -> None:
    with pytest.raises(DeviceConfigError, match=r"\[web\] and \[ui\] exclude each other"):
        load_run_config(config(tmp_path, '[web]\nlisten = "127.0.0.1:0"\n'
                                         '[ui]\npin_env = "P"\ndocument = "juminhyo"\n'))


@pytest.mark.parametrize("web, match", [
    ('listen = 80\n', "strings"),
    ('colour = "red"\n', "does not know colour"),
    ('pin_reset = true\n', r"pin_reset is gone: .*\[kiosk\] facepin"),
    ('done_seconds = 0\n', "done_seconds"),
])
def test_bad_web_sections(tmp_path: Path, web: str, match: str) -> None:
    with pytest.raises(DeviceConfigError, match=match):
        load_run_config(config(tmp_path, "[web]\n" + web))


def test_timeouts(tmp_path: Path) -> None:
    assert timeouts_of(load_run_config(config(tmp_path, ""))).warn == 30  # the core's
    p = tmp_path / "t.toml"
    p.write_text(KIOSK + "timeouts = {warn = 3, wipe = 9, remind = [2, 4]}\n")
    t = timeouts_of(load_run_config(p))
    assert (t.warn, t.wipe, t.remind) == (3, 9, (2, 4))
    for bad, match in (("{warn = 9, wipe = 3}", "before wipe"), ("{nap = 1}", "does not know"),
                       ("{warn = -1}", "whole seconds"), ("{remind = [1]}", "remind")):
        p.write_text(KIOSK + f"timeouts = {bad}\n")
        with pytest.raises(DeviceConfigError, match=match):
            load_run_config(p)


def test_listen_and_language() -> None:
    assert parse_listen("127.0.0.1:0") == ("127.0.0.1", 0)
    assert parse_listen("[::1]:8080") == ("::1", 8080)
    for bad in ("localhost", "127.0.0.1:x", ":80", 80):
        with pytest.raises(UiConfigError):
            parse_listen(bad)
    with pytest.raises(UiConfigError, match="no message catalogue"):
        WebHub(lang="tlh")


def test_server_on_an_ephemeral_port() -> None:
    """Port 0 → a port of its own, known before the ready line; the page, the catalogues
    and the languages come back with no-store and a same-origin content policy."""
    async def run() -> None:
        hub = WebHub(lang="en")
        server = UiServer(hub, "127.0.0.1:0")
        await server.start()
        try:
            assert server.url.startswith("http://127.0.0.1:") and not server.url.endswith(":0/")

            def get(path: str) -> tuple[int, dict[str, str], bytes]:
                with urllib.request.urlopen(server.url + path, timeout=10) as r:
                    return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
            status, headers, body = await asyncio.to_thread(get, "")
            assert status == 200 and b"/static/app.js" in body
            assert headers["cache-control"] == "no-store"
            assert "default-src 'self'" in headers["content-security-policy"]
            _, _, body = await asyncio.to_thread(get, "languages.json")
            info = json.loads(body)
            assert info["default"] == "en" and {"ja", "en"} <= {
                lang["lang"] for lang in info["languages"]}
            _, _, body = await asyncio.to_thread(get, "messages/ja.json")
            assert json.loads(body)["screen.pin.title"]
            with pytest.raises(urllib.error.HTTPError):
                await asyncio.to_thread(get, "messages/..%2Fhub.json")
        finally:
            await server.stop()
    asyncio.run(run())


def test_websocket_only_from_the_page_s_own_origin() -> None:
    """The page's origin gets the state; another origin is refused before anything is
    sent (a WebSocket is not held back by the same-origin policy)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    async def run() -> None:
        hub = WebHub()
        server = UiServer(hub, "127.0.0.1:0")
        await server.start()
        ws_url = server.url.replace("http://", "ws://") + "ws"
        try:
            async with connect(ws_url, origin=server.url.rstrip("/")) as ws:  # type: ignore[arg-type]
                assert json.loads(await ws.recv())["screen"] == "start"
                await ws.send(json.dumps({"op": "start"}))
                assert json.loads(await ws.recv())["screen"] == "notice"
            with pytest.raises(InvalidStatus):
                async with connect(ws_url, origin="http://evil.example"):  # type: ignore[arg-type]
                    pass
            # DNS rebinding: a page at evil.example that now resolves to 127.0.0.1 sends
            # its own name in Host and Origin alike — refused, the Host is not loopback.
            port = server.url.rstrip("/").rpartition(":")[2]
            with pytest.raises(InvalidStatus):
                async with connect(ws_url, origin=f"http://evil.example:{port}",  # type: ignore[arg-type]
                                   additional_headers={"Host": f"evil.example:{port}"}):
                    pass
            # A message larger than any the page sends is refused before it is parsed.
            async with connect(ws_url, origin=server.url.rstrip("/")) as ws:  # type: ignore[arg-type]
                await ws.recv()
                await ws.send(json.dumps({"op": "home", "pad": "x" * 10_000}))
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
            assert hub.screen == "notice"
        finally:
            await server.stop()
    asyncio.run(run())
