"""Probe capture specs are checked before OpenCV sees them."""

from __future__ import annotations

import pytest

from facepin.capture import frames
from facepin.face import FaceError


@pytest.mark.parametrize("spec", ["camera:-1", "camera:x", "camera:", "camera:64",
                                  "camera:99999999999999999999", "camera:٣"])
def test_a_bad_camera_index_is_a_face_error(spec: str) -> None:
    """camera:-1 crashed the whole process in OpenCV (SIGSEGV, exit 139); camera:x and a
    number beyond a C long were internal errors (exit 70)."""
    pytest.importorskip("cv2")
    with pytest.raises(FaceError, match="camera:N with N from 0 to 63"):
        next(frames(spec))
