#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian machine (run as root): Debian packages, a virtual
# environment in .venv, and this project installed into it with its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(python3 python3-venv python3-pip python3-dev gcc openssl fonts-ipafont-gothic
      fonts-ipafont-mincho
      pcscd libpcsclite-dev vsmartcard-vpcd opensc pcsc-tools iproute2 util-linux
      postgresql haproxy cups-ipp-utils avahi-daemon dbus poppler-utils
      chromium chromium-driver nodejs fonts-nanum fonts-wqy-microhei fonts-noto-cjk
      open-jtalk open-jtalk-mecab-naist-jdic espeak-ng)
# chromium (+ driver) and nodejs: the kiosk UI's browser tests (axe-core from npm); fonts-nanum:
# Hangul for the Korean screens, fonts-wqy-microhei: simplified Chinese (the IPA fonts have
# neither); fonts-noto-cjk: the kiosk screen's proportional UI face (Noto Sans CJK JP/SC/KR);
# open-jtalk (+ its NAIST dictionary) and espeak-ng: the kiosk's spoken guidance, rendered
# offline (Japanese and the other languages).
# npm: Debian's package, unless the installed nodejs brings its own (NodeSource's does, and
# Debian's npm would conflict with it).
command -v npm >/dev/null 2>&1 || DEBS+=(npm)

missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${missing[*]} (run as root to install them)" >&2
  else
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.cardio-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e '.[dev]'
  echo "$want" > "$stamp"
fi

# axe-core for the kiosk UI's browser tests (injected into every screen), from the npm
# registry into a git-ignored cache; skipped when already there.
AXE_VERSION=4.14.1
axe=.cache/npm/node_modules/axe-core/axe.min.js
if [ ! -f "$axe" ] || ! grep -q "\"version\": \"$AXE_VERSION\"" .cache/npm/node_modules/axe-core/package.json 2>/dev/null; then
  if command -v npm >/dev/null 2>&1; then
    mkdir -p .cache/npm
    npm install --silent --no-audit --no-fund --prefix .cache/npm "axe-core@$AXE_VERSION" >/dev/null \
      || echo "setup: could not install axe-core from the npm registry" >&2
  else
    echo "setup: npm is missing: axe-core not installed (the UI's accessibility scan skips)" >&2
  fi
fi

# The Japanese voice for Open JTalk: the HTS voice "mei" (CC BY 3.0, from MMDAgent) that the
# pyopenjtalk package ships; Debian's bookworm has no HTS voice package. Taken from its
# source distribution on PyPI into a git-ignored cache (kiosk/ui/voice.py looks there).
VOICE_PKG=pyopenjtalk==0.4.1
voice=.cache/voice/mei_normal.htsvoice
if [ ! -f "$voice" ]; then
  tmp=$(mktemp -d)
  if .venv/bin/python -m pip download -q --no-deps -d "$tmp" "$VOICE_PKG" \
      >/dev/null 2>&1; then
    mkdir -p .cache/voice
    tar -xzf "$tmp"/pyopenjtalk-*.tar.gz -C "$tmp" --wildcards '*/pyopenjtalk/htsvoice/*' \
      && cp "$tmp"/pyopenjtalk-*/pyopenjtalk/htsvoice/mei_normal.htsvoice \
            "$tmp"/pyopenjtalk-*/pyopenjtalk/htsvoice/LICENSE_mei_normal.htsvoice .cache/voice/ \
      || echo "setup: could not unpack the Japanese voice" >&2
  else
    echo "setup: could not download $VOICE_PKG (the Japanese voice): the kiosk speaks" \
         "only the other languages" >&2
  fi
  rm -rf "$tmp"
fi
