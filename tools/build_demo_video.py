"""Build the demo camera video from real photos (scikit-image), with a sidecar of expected labels.

    python -m tools.build_demo_video --out build/demo/camera.avi [--size 1280x720] [--fps 30]
        [--seconds 24] [--quality 10] [--codec mjpg|xvid] [--check-model VERSION_DIR]

The video (MJPG in AVI, readable by ``cv2.VideoCapture`` and ffmpeg) shows chelsea the cat, a
coffee cup, the astronaut portrait and a rocket on its launch pad, one equal segment each, with
a slow pan and zoom over a cover-cropped view of the photo and a little sensor noise. Frames
are deterministic for a given seed. ``PATH.json`` describes the segments::

    {"format": 1, "fps": 30, "width": 1280, "height": 720, "frame_count": 720,
     "segments": [{"photo": "chelsea", "start_frame": 0, "end_frame": 179,
                   "expect_any_of": ["tabby cat", ...]}, ...]}

Frame numbers are 0-based and ``end_frame`` is inclusive (the segment's last frame);
``expect_any_of`` holds class names exactly as in the demo model's ``labels.txt``.
``--check-model`` classifies the middle frame of each segment with a built demo model version
folder and fails if a top-1 falls outside ``expect_any_of``. MJPG is written with OpenCV's own
encoder (``--quality`` works there); ``--codec xvid`` (MPEG-4 part 2 via FFmpeg) is ~5x smaller.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from tools.demo_photos import DEMO_PHOTOS, expected_labels, load_photo

logger = logging.getLogger(__name__)

SIDECAR_FORMAT = 1
DEFAULT_SEED = 20240601
MAX_ZOOM = 1.18  # zoom reached at the end of a segment (1.0 = photo just covers the frame)
PAN_FRACTION = 0.7  # share of the free pan range travelled during a segment
NOISE_SIGMA = 2.0  # grey levels of Gaussian sensor noise
# OpenCV's built-in MJPG encoder is far less efficient than libjpeg at the same number: 10 gives
# ~55 KB per 720p frame (about libjpeg 60 in size) and looks clean on these upscaled photos.
DEFAULT_QUALITY = 10
CODECS: dict[str, tuple[int, str]] = {
    "mjpg": (cv2.CAP_OPENCV_MJPEG, "MJPG"),
    "xvid": (cv2.CAP_FFMPEG, "XVID"),
}


@dataclass(frozen=True)
class Segment:
    photo: str
    start_frame: int
    end_frame: int  # inclusive: the segment's last frame
    expect_any_of: list[str]

    @property
    def middle_frame(self) -> int:
        return (self.start_frame + self.end_frame) // 2


def sidecar_path(video: Path) -> Path:
    """Where the segment description of ``video`` lives (``<video>.json``)."""
    return Path(str(video) + ".json")


def parse_size(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 1280x720, got {text!r}") from None
    if width < 64 or height < 64 or width % 2 or height % 2:
        raise argparse.ArgumentTypeError(f"size {text} must be even and at least 64x64")
    return width, height


def plan_segments(frame_count: int) -> list[Segment]:
    """Split ``frame_count`` frames into one equal segment per demo photo."""
    bounds = [round(i * frame_count / len(DEMO_PHOTOS)) for i in range(len(DEMO_PHOTOS) + 1)]
    return [Segment(photo, bounds[i], bounds[i + 1] - 1, expected_labels(photo))
            for i, photo in enumerate(DEMO_PHOTOS)]


def camera_matrix(photo_shape: tuple[int, int], size: tuple[int, int], progress: float,
                  direction: int) -> np.ndarray:
    """Affine map photo -> frame for a slow zoom-in and pan; ``progress`` runs 0..1.

    The view always lies inside the photo (cover crop), so no border ever shows.
    """
    photo_h, photo_w = photo_shape
    width, height = size
    ease = 0.5 - 0.5 * math.cos(math.pi * progress)
    scale = max(width / photo_w, height / photo_h) * (1.0 + (MAX_ZOOM - 1.0) * ease)
    view_w, view_h = width / scale, height / scale
    # Free range of the view centre; pan across PAN_FRACTION of it, vertical drift half as much.
    free_x, free_y = (photo_w - view_w) / 2, (photo_h - view_h) / 2
    centre_x = photo_w / 2 + direction * free_x * PAN_FRACTION * (ease - 0.5) * 2
    centre_y = photo_h / 2 + free_y * PAN_FRACTION * 0.5 * (ease - 0.5) * 2
    return np.array([[scale, 0.0, width / 2 - scale * centre_x],
                     [0.0, scale, height / 2 - scale * centre_y]], dtype=np.float64)


def render_frames(segment: Segment, size: tuple[int, int], rng: np.random.Generator,
                  direction: int):
    """Yield the BGR uint8 frames of ``segment``."""
    photo_bgr = cv2.cvtColor(load_photo(segment.photo), cv2.COLOR_RGB2BGR)
    count = segment.end_frame - segment.start_frame + 1
    for i in range(count):
        progress = i / max(count - 1, 1)
        matrix = camera_matrix(photo_bgr.shape[:2], size, progress, direction)
        frame = cv2.warpAffine(photo_bgr, matrix, size, flags=cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REFLECT)
        noise = rng.normal(0.0, NOISE_SIGMA, frame.shape).astype(np.float32)
        yield np.clip(frame.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def open_writer(path: Path, codec: str, fps: int, size: tuple[int, int],
                quality: int) -> cv2.VideoWriter:
    """An OpenCV writer for ``codec``: "mjpg" (every frame a JPEG) or "xvid" (MPEG-4 part 2)."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; choose one of {', '.join(CODECS)}")
    api, fourcc = CODECS[codec]
    writer = cv2.VideoWriter(str(path), api, cv2.VideoWriter_fourcc(*fourcc), float(fps), size)
    if not writer.isOpened():
        raise OSError(f"OpenCV cannot write {codec} video to {path}")
    if codec == "mjpg":
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
    return writer


def _build_params(size: tuple[int, int], fps: int, frame_count: int, quality: int, seed: int,
                  codec: str) -> dict:
    return {"format": SIDECAR_FORMAT, "fps": fps, "width": size[0], "height": size[1],
            "frame_count": frame_count, "seed": seed, "quality": quality, "codec": codec}


def is_up_to_date(out: Path, size: tuple[int, int], fps: int, seconds: float,
                  quality: int = DEFAULT_QUALITY, seed: int = DEFAULT_SEED,
                  codec: str = "mjpg") -> bool:
    """True when ``out`` and its sidecar exist and were built with these parameters."""
    frame_count = max(len(DEMO_PHOTOS), int(round(fps * seconds)))
    try:
        doc = json.loads(sidecar_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not out.is_file():
        return False
    wanted = _build_params(size, fps, frame_count, quality, seed, codec)
    return all(doc.get(key) == value for key, value in wanted.items()) and doc.get(
        "segments") == [asdict(s) for s in plan_segments(frame_count)]


def write_video(out: Path, size: tuple[int, int], fps: int, seconds: float,
                quality: int = DEFAULT_QUALITY, seed: int = DEFAULT_SEED,
                codec: str = "mjpg") -> list[Segment]:
    """Write the demo video and its sidecar atomically; returns the segments."""
    frame_count = max(len(DEMO_PHOTOS), int(round(fps * seconds)))
    segments = plan_segments(frame_count)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.stem}.", suffix=out.suffix or ".avi",
                                    dir=out.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(0o644)  # mkstemp creates 0600
    try:
        writer = open_writer(tmp, codec, fps, size, quality)
        rng = np.random.default_rng(seed)
        try:
            for index, segment in enumerate(segments):
                for frame in render_frames(segment, size, rng, 1 if index % 2 == 0 else -1):
                    writer.write(frame)
        finally:
            writer.release()
        check_readable(tmp, frame_count, size)
        sidecar = {**_build_params(size, fps, frame_count, quality, seed, codec),
                   "segments": [asdict(s) for s in segments]}
        tmp_sidecar = sidecar_path(tmp)
        tmp_sidecar.write_text(json.dumps(sidecar, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, out)
        os.replace(tmp_sidecar, sidecar_path(out))
    finally:
        tmp.unlink(missing_ok=True)
        sidecar_path(tmp).unlink(missing_ok=True)
    return segments


def check_readable(video: Path, frame_count: int, size: tuple[int, int]) -> None:
    """Read ``video`` back with OpenCV and check its frame count and size."""
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise OSError(f"OpenCV cannot open {video} for reading")
        read = 0
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            if (frame.shape[1], frame.shape[0]) != size:
                raise OSError(f"{video}: frame {read} is {frame.shape[1]}x{frame.shape[0]}")
            read += 1
    finally:
        capture.release()
    if read != frame_count:
        raise OSError(f"{video}: read back {read} frames, wrote {frame_count}")


def load_segments(video: Path) -> list[Segment]:
    """Segments of ``video`` from its sidecar."""
    doc = json.loads(sidecar_path(video).read_text(encoding="utf-8"))
    return [Segment(**s) for s in doc["segments"]]


def read_frame(video: Path, index: int) -> np.ndarray:
    """Frame ``index`` of ``video`` as RGB uint8."""
    capture = cv2.VideoCapture(str(video))
    try:
        capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = capture.read()
    finally:
        capture.release()
    if not ok:
        raise OSError(f"{video}: cannot read frame {index}")
    return cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)


def classify_middle_frames(video: Path, version_dir: Path) -> list[tuple[Segment, str, float]]:
    """Top-1 (label, probability) of the demo model for each segment's middle frame."""
    import tensorflow as tf

    from tools.build_demo_model import INPUT_NAME, OUTPUT_NAME, edge_metadata

    meta = edge_metadata()["preprocess"]
    labels = (version_dir / "assets.extra/labels.txt").read_text(encoding="utf-8").splitlines()
    fn = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    segments = load_segments(video)
    batch = np.stack([cv2.resize(read_frame(video, s.middle_frame), (224, 224),
                                 interpolation=cv2.INTER_AREA) for s in segments])
    x = (batch.astype(np.float32) - np.float32(meta["mean"])) / np.float32(meta["std"])
    probs = fn(**{INPUT_NAME: tf.constant(x)})[OUTPUT_NAME].numpy()
    return [(s, labels[int(p.argmax())], float(p.max())) for s, p in zip(segments, probs)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.build_demo_video", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="video path (.avi)")
    parser.add_argument("--size", type=parse_size, default=(1280, 720), help="WIDTHxHEIGHT")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--quality", type=int, default=DEFAULT_QUALITY,
                        help="MJPG quality 1-100 of OpenCV's own encoder (default %(default)s)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--codec", choices=sorted(CODECS), default="mjpg")
    parser.add_argument("--force", action="store_true", help="rebuild even if up to date")
    parser.add_argument("--check-model", type=Path, metavar="VERSION_DIR",
                        help="demo model version folder to check the segment labels with")
    args = parser.parse_args(argv)
    if not 1 <= args.fps <= 120 or args.seconds <= 0 or not 1 <= args.quality <= 100:
        parser.error("--fps must be 1..120, --seconds positive, --quality 1..100")
    logging.basicConfig(level=logging.WARNING)
    started = time.monotonic()
    params = (args.out, args.size, args.fps, args.seconds, args.quality, args.seed, args.codec)
    if not args.force and is_up_to_date(*params):
        print(f"{args.out}: up to date (use --force to rebuild)")
    else:
        try:
            segments = write_video(*params)
        except OSError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        frames = segments[-1].end_frame + 1
        megabytes = args.out.stat().st_size / 1e6
        print(f"wrote {args.out} ({args.size[0]}x{args.size[1]}, {frames} frames, "
              f"{frames / args.fps:.1f}s, {megabytes:.1f} MB) in {time.monotonic() - started:.1f}s")
    if args.check_model is None:
        return 0
    failures = 0
    for segment, label, prob in classify_middle_frames(args.out, args.check_model):
        ok = label in segment.expect_any_of
        failures += not ok
        print(f"  {segment.photo:10s} frame {segment.middle_frame}: {label} {prob:.3f}"
              f"{'' if ok else '  NOT IN ' + repr(segment.expect_any_of)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
