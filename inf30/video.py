"""Frame sampling from video files with OpenCV."""

from __future__ import annotations

import math
from collections.abc import Iterator

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".webm", ".mpg", ".mpeg", ".wmv")


class VideoError(Exception):
    """The video cannot be opened or yields no frame."""


def is_video_name(name: str) -> bool:
    return name.lower().endswith(VIDEO_SUFFIXES)


def sample_frames(path: str, every_s: float = 1.0) -> Iterator[tuple[float, np.ndarray]]:
    """Yield (timestamp in seconds, frame) every ``every_s`` seconds, starting at 0.

    Frames are (H, W) uint8 gray or (H, W, 3) uint8 BGR as decoded. Frames are read sequentially
    (``grab``) and only the sampled ones are decoded (``retrieve``). Raises :class:`VideoError` when the
    file cannot be opened or has no frame.
    """
    if every_s <= 0:
        raise ValueError("video sampling interval must be > 0 seconds")
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            raise VideoError("cannot open video")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not fps or not math.isfinite(fps) or fps <= 0 or fps > 1000:
            fps = None
        index = 0
        next_t = 0.0
        yielded = 0
        while cap.grab():
            t = index / fps if fps else cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            index += 1
            if t + 1e-6 < next_t:
                continue
            ok, frame = cap.retrieve()
            if not ok or frame is None:
                continue
            yield round(t, 3), frame
            yielded += 1
            next_t = (math.floor(t / every_s + 1e-6) + 1) * every_s
        if yielded == 0:
            raise VideoError("no decodable frame")
    finally:
        cap.release()
