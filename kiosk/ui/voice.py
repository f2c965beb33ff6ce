"""Spoken guidance, rendered offline: the kiosk is closed functionality (a person cannot
bring a screen reader to it), so it speaks — and a Linux kiosk's browser has no voices of
its own (``speechSynthesis`` is silent there).

Each catalogue text without placeholders (screen titles and guidance, the card reminder,
the time-out warning) is rendered once to a WAV file and kept in a cache directory: Japanese
by Open JTalk (Debian's ``open-jtalk`` with its NAIST dictionary
``open-jtalk-mecab-naist-jdic``; the HTS voice "mei" that the pyopenjtalk package ships,
which ``scripts/setup.sh`` takes from PyPI, or Debian's nitech voice where a release has
it), every other language by eSpeak NG (Debian's ``espeak-ng``). Nothing is fetched at run
time and no text leaves the machine. The page asks for a clip by *catalogue key*
(``/voice/ja/screen.menu.title.wav``), never by text: only the finite set of the
catalogues' texts can be rendered, so no caller can fill the cache or make the kiosk say
anything else.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from kiosk.ui.hub import catalogue_languages, load_catalogue

__all__ = ["HTS_VOICES", "JDIC", "Voice", "speakable"]

#: Open JTalk's dictionary from Debian's open-jtalk-mecab-naist-jdic.
JDIC = Path("/var/lib/mecab/dic/open-jtalk/naist-jdic")

#: Japanese HTS voices, the first found is used (``$CARDIO_HTS_VOICE`` first of all).
HTS_VOICES = (
    Path(__file__).resolve().parents[2] / ".cache" / "voice" / "mei_normal.htsvoice",
    Path("/usr/share/hts-voice/nitech-jp-atr503-m001/nitech_jp_atr503_m001.htsvoice"),
)

#: eSpeak NG voices for the catalogues' speech tags.
_ESPEAK = {"en": "en-us", "zh": "cmn", "ko": "ko"}

_PLACEHOLDER = re.compile(r"\{\w+\}")


def speakable(lang: str) -> dict[str, str]:
    """The catalogue texts a clip exists for: every message without a placeholder (a text
    with an amount or a count is shown, its screen's title is spoken)."""
    return {k: v for k, v in load_catalogue(lang).items()
            if not k.startswith("_") and v.strip() and not _PLACEHOLDER.search(v)}


class Voice:
    """Clips per (language, catalogue key), rendered on first use or ahead of time
    (:meth:`prerender`) into ``cache`` (default ``$CARDIO_VOICE_CACHE`` or
    ``~/.cache/cardio/voice``). A clip's file name carries a digest of the engine, voice
    and text, so a changed text or voice renders anew."""

    def __init__(self, cache: Path | None = None) -> None:
        env = os.environ.get("CARDIO_VOICE_CACHE")
        self.cache = cache or (Path(env) if env else
                               Path.home() / ".cache" / "cardio" / "voice")
        voice_env = os.environ.get("CARDIO_HTS_VOICE")
        candidates = ((Path(voice_env),) if voice_env else ()) + HTS_VOICES
        self.hts = next((p for p in candidates if p.is_file()), None)
        self.open_jtalk = shutil.which("open_jtalk")
        self.espeak = shutil.which("espeak-ng")
        self._lock = threading.Lock()

    def available(self, lang: str) -> bool:
        if lang == "ja":
            return bool(self.open_jtalk and self.hts and JDIC.is_dir())
        return bool(self.espeak) and lang in _ESPEAK

    def missing(self) -> list[str]:
        """What is not installed (for one warning line at start), empty when all is."""
        out = []
        if not self.open_jtalk or not JDIC.is_dir():
            out.append("open_jtalk with its dictionary (Debian: open-jtalk,"
                       " open-jtalk-mecab-naist-jdic)")
        if self.hts is None:
            out.append("a Japanese HTS voice (bash scripts/setup.sh installs one)")
        if not self.espeak:
            out.append("espeak-ng (Debian: espeak-ng)")
        return out

    def _engine(self, lang: str) -> list[str]:
        if lang == "ja":
            assert self.open_jtalk and self.hts
            return [self.open_jtalk, "-x", str(JDIC), "-m", str(self.hts)]
        assert self.espeak
        return [self.espeak, "-v", _ESPEAK[lang]]

    def path(self, lang: str, key: str) -> Path | None:
        """The clip for ``key`` in ``lang``, rendered now if it is not cached; ``None`` for
        a key or language without a clip, or when the synthesiser is missing."""
        if lang not in catalogue_languages() or not self.available(lang):
            return None
        text = speakable(lang).get(key)
        if text is None:
            return None
        engine = self._engine(lang)
        digest = hashlib.sha256("\0".join([*engine, lang, text]).encode()).hexdigest()[:24]
        out = self.cache / lang / f"{digest}.wav"
        if out.is_file():
            return out
        with self._lock:  # one synthesiser at a time: the kiosk has two cores
            if not out.is_file():
                self._render(lang, engine, text, out)
        return out if out.is_file() else None

    def _render(self, lang: str, engine: list[str], text: str, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".wav.tmp")
        os.close(fd)
        try:
            if lang == "ja":  # Open JTalk reads the text from a file (or stdin)
                cmd = [*engine, "-ow", tmp]
                run_input: str | None = text
            else:
                cmd = [*engine, "-w", tmp, text]
                run_input = None
            subprocess.run(cmd, input=run_input, text=True, capture_output=True,
                           timeout=30, check=True)
            if Path(tmp).stat().st_size > 44:  # more than a WAV header
                os.replace(tmp, out)
        except (OSError, subprocess.SubprocessError):
            pass  # no clip: the page stays silent for this text, the screen says it
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    def prerender(self, langs: list[str] | None = None) -> int:
        """Render every clip of ``langs`` (default: all, Japanese first) not cached yet;
        the number of clips available afterwards."""
        n = 0
        for lang in langs or sorted(catalogue_languages(), key=lambda x: x != "ja"):
            if not self.available(lang):
                continue
            for key in speakable(lang):
                if self.path(lang, key) is not None:
                    n += 1
        return n
