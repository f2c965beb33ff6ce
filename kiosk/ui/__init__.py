"""The kiosk's touch screen as a local web page (issue 14).

``cardio kiosk run`` serves it on loopback when its TOML has a ``[web]`` section: the
:class:`~kiosk.ui.hub.WebHub` keeps what the screen shows (between sessions its own start
and "set your card" screens, during one the session's), broadcasts it over a WebSocket,
and turns the person's taps and key presses into the runner's events. The page itself is
plain HTML/CSS/JS with message catalogues as data (``kiosk/ui/messages/*.json``): a new
language is one JSON file. ``docs/kiosk-ui.md`` describes screens, catalogues and the PIN
path.
"""
