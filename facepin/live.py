"""The live capture: camera frames streamed to the service while the challenge runs, over
one WebSocket (``/v1/reservations/live``), paced and timed by the service.

Why a stream and not an upload: a client that uploads frames with its own timestamps
decides what time it is. Here every frame is stamped when it arrives; the prompts are
chosen, ordered and timed by the service (:class:`facepin.liveness.LivenessSession`) and
sent while the frames come, so a recording made beforehand does not know which movement
is asked for, or when. Bounds: one frame per :data:`MIN_FRAME_INTERVAL` (faster ones are
dropped, so a sequence cannot be poured in at once), :data:`MAX_FRAMES` frames,
:data:`MAX_SECONDS` per capture, :data:`MAX_FRAME_BYTES` per frame, and
:data:`MAX_LIVE` captures at once per worker.

Each frame must look like what a camera sends (:func:`camera_frame`): a baseline or
progressive JPEG in colour, of one size for the whole capture, within the size bounds.
The card's own photo is a greyscale JPEG 2000; that is refused by name.

What this cannot prove: that a camera produced the frames. A modified app or a virtual
camera can stream anything — the protocol document's "Residual risk" says what a
deployment adds (a certified capture SDK, platform attestation of the app).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from cardio.errors import CardioError
from facepin.face import FaceEngine
from facepin.liveness import LivenessSession, Verdict

FPS = 10.0
"""The frame rate the service asks for: enough to follow a head turn (a turn takes half a
second or more), and what a worker measures in real time for a few captures at once."""
MIN_FRAME_INTERVAL = 1 / 30
"""Frames closer together than this (faster than a camera's 30 fps) are dropped."""
MAX_FRAMES = 900
"""Frames received at most (dropped ones included): 30 fps for the whole capture."""
MAX_SECONDS = 45.0
MAX_FRAME_BYTES = 1 << 20
MAX_EVIDENCE_BYTES = 256 * 1024
EVIDENCE_SECONDS = 15.0
"""The card's evidence must arrive this soon after the connection opens."""
MAX_LIVE = 4
"""Captures measured at once by one worker; more wait (``facepin.service``), then are
refused ``503``."""
MIN_SIDE = 240
MAX_SIDE = 1920
MAX_PIXELS = 1920 * 1080
QUEUE = 3
"""Frames waiting to be measured; when the measuring falls behind, newer frames are
dropped rather than held (the time stamp of each kept frame is its arrival), so the
prompts never lag far behind what the camera shows."""

JPEG_MAGIC = b"\xff\xd8\xff"
JP2_MAGICS = (b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")


class FrameRefused(CardioError):
    """A frame that is not a camera frame; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def camera_frame(data: bytes, size: tuple[int, int] | None = None) -> np.ndarray:
    """The frame as RGB, or :class:`FrameRefused`. ``size``: the capture's frame size
    (width, height), fixed by its first frame."""
    if len(data) > MAX_FRAME_BYTES:
        raise FrameRefused("frame_too_large", f"a frame is more than {MAX_FRAME_BYTES} bytes")
    if data.startswith(JP2_MAGICS):
        raise FrameRefused("not_a_camera_frame", "a JPEG 2000 image (the card's photo format)"
                           " is not a camera frame; send the camera's JPEG frames")
    if not data.startswith(JPEG_MAGIC):
        raise FrameRefused("not_a_camera_frame", "a frame must be a JPEG from the camera")
    try:
        img = Image.open(io.BytesIO(data))
        if img.format != "JPEG":
            raise FrameRefused("not_a_camera_frame", "a frame must be a JPEG from the camera")
        w, h = img.size
        if img.mode != "RGB":
            raise FrameRefused("not_a_camera_frame", f"a camera frame is in colour (this one"
                               f" is {img.mode})")
        if not (min(w, h) >= MIN_SIDE and max(w, h) <= MAX_SIDE and w * h <= MAX_PIXELS):
            raise FrameRefused("not_a_camera_frame", f"a frame of {w} × {h} is not a camera"
                               f" frame (sides {MIN_SIDE}–{MAX_SIDE}, at most {MAX_PIXELS:,}"
                               " pixels)")
        if size is not None and (w, h) != size:
            raise FrameRefused("not_a_camera_frame", "the frame size changed during the"
                               " capture")
        img.load()
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        if isinstance(exc, UnidentifiedImageError):
            raise FrameRefused("not_a_camera_frame", "a frame cannot be decoded") from None
        raise FrameRefused("not_a_camera_frame", "a frame cannot be decoded") from None
    rgb = np.asarray(img, dtype=np.uint8)
    # A colour JPEG of a grey picture has no colour at all; a camera's frames always do
    # (noise, light). Sampled on a grid: the whole frame is not needed for this.
    grid = rgb[::4, ::4].astype(np.int16)
    if int(np.abs(grid[..., 0] - grid[..., 1]).max()) <= 2 and \
            int(np.abs(grid[..., 1] - grid[..., 2]).max()) <= 2:
        raise FrameRefused("not_a_camera_frame", "a greyscale picture is not a camera frame")
    return rgb


@dataclass
class CaptureResult:
    verdict: Verdict
    frames: int
    dropped: int
    seconds: float
    work: float
    """Seconds spent measuring frames (the decision's own cost)."""


Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def run_capture(receive: Receive, send: Send, session: LivenessSession,
                      engine: FaceEngine) -> CaptureResult:
    """Read frames from the WebSocket (``receive`` gives ASGI messages), stamp each on
    arrival, measure them in a worker thread, and send each new prompt as soon as the
    session shows it. Ends when the session decides, the client stops sending (a text
    message ``{"type": "end"}`` or a disconnect) or a bound is reached. Raises
    :class:`FrameRefused` for a frame that is not a camera frame."""
    start = time.monotonic()
    queue: asyncio.Queue[tuple[bytes, float] | None] = asyncio.Queue(QUEUE)
    counts = {"received": 0, "dropped": 0}
    work = 0.0

    async def reader() -> None:
        last: float | None = None
        try:
            while True:
                msg = await receive()
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("bytes")
                t = time.monotonic() - start
                if data is None:  # text: the client has no more frames
                    break
                counts["received"] += 1
                if counts["received"] > MAX_FRAMES or t > MAX_SECONDS:
                    break
                if (last is not None and t - last < MIN_FRAME_INTERVAL) or queue.full():
                    counts["dropped"] += 1
                    continue
                last = t
                queue.put_nowait((data, t))
        finally:
            while queue.full():  # room for the end marker
                queue.get_nowait()
                counts["dropped"] += 1
            queue.put_nowait(None)

    size: list[tuple[int, int]] = []

    def measure(data: bytes, t: float) -> Verdict:
        rgb = camera_frame(data, size[0] if size else None)
        if not size:
            size.append((rgb.shape[1], rgb.shape[0]))
        return session.feed_frame(engine, rgb, t)

    task = asyncio.create_task(reader())
    shown: object = None
    try:
        while True:
            item = await queue.get()
            if item is None:
                break
            began = time.monotonic()
            verdict = await asyncio.to_thread(measure, *item)
            work += time.monotonic() - began
            if session.showing is not shown:
                shown = session.showing
                await send({"type": "prompt",
                            "prompt": None if session.showing is None else
                            session.showing.value})
                session.shown_at(time.monotonic() - start)
            if verdict is not Verdict.IN_PROGRESS:
                break
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return CaptureResult(session.finish(), counts["received"], counts["dropped"],
                         time.monotonic() - start, work)
