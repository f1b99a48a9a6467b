"""Rollout with the `tfserving` backend: edge-model-server (policy latest{2}) watches the store the
installer writes; the candidate is validated once the server reports it AVAILABLE, then pinned."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from edge.app.wiring import load_candidate
from edge.config.loader import parse_config
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from edge.models.state import ModelState, RolloutState, StateStore
from edge.rollout.installer import ModelInstaller
from edge.rollout.manager import RolloutManager, RolloutSettings
from edge.serving.tfserving import TFServingClassifier
from edge.util.ociref import Reference
from provisioning.publish import push_version
from tests.support.fakes import RolloutRecorder, SolidCamera, start_ticker
from tests.support.frames import BLUE, RED
from tests.support.waits import wait_until

pytestmark = pytest.mark.slow


def test_tfserving_rollout_switches_after_available_and_refuses_bad(
        tmp_path: Path, registry, model_server_factory, colour_packages) -> None:
    client = registry.client()
    channel = Reference.parse(f"{registry.address}/models/colour:stable")
    d1, _ = push_version(client, channel, colour_packages["good1"])
    store = tmp_path / "store"
    base = store / "colour"
    shutil.copytree(colour_packages["good1"], base / "1")
    state_store = StateStore(base)
    state = ModelState(state=RolloutState.SERVING, serving_version=1, serving_digest=d1, installed={1: d1}, validated=[d1])
    state_store.save(state)
    model_config = tmp_path / "models.config"
    model_config.write_text(
        'model_config_list { config { name: "colour" base_path: "%s" model_platform: "tensorflow" '
        "model_version_policy { latest { num_versions: 2 } } } }\n" % base)
    server = model_server_factory(f"--model_config_file={model_config}", "--file_system_poll_wait_seconds=1",
                                  wait_models=["colour"])
    config = parse_config({"device_id": "d", "cameras": [{"name": "c", "source": "rtsp://127.0.0.1:1/x"}],
                           "model": {"name": "colour", "store": str(store)},
                           "serving": {"backend": "tfserving", "target": server.grpc_target}})
    rec = RolloutRecorder()
    manager = RolloutManager(
        ref=channel, installer=ModelInstaller(base, registry.client(), state_store), state_store=state_store,
        state=state, loader=lambda v: load_candidate(config, v),
        settings=RolloutSettings(poll_interval_s=1.0, probation_s=1.5, keep_versions=2, backoff_initial_s=0.5),
        emit=lambda n, p: rec.events.append((n, p)))
    frame_ready, stop = threading.Event(), threading.Event()
    start_ticker(frame_ready, 0.02, stop)
    first = TFServingClassifier(server.grpc_target, "colour", version=1, store=store)
    pipeline = InferencePipeline(FrameBatcher([SolidCamera("red", RED), SolidCamera("blue", BLUE)], frame_ready, 4,
                                              0.002), first, rec.batches.append)
    manager.pipeline = pipeline
    pipeline.start()
    manager.start()
    try:
        d2, _ = push_version(client, channel, colour_packages["good2"])
        wait_until(lambda: "model_probation_passed" in rec.names(), 120, message="v2 through probation")
        assert rec.last("model_switched")["digest"] == d2
        wait_until(lambda: rec.batches and rec.batches[-1].model_version == 2, 30)
        versions = [b.model_version for b in list(rec.batches)]
        assert versions == sorted(versions) and set(versions) == {1, 2}
        assert pipeline.frames_failed == 0
        assert pipeline.classifier.info.runtime == "tfserving" and pipeline.classifier.info.version == 2

        push_version(client, channel, colour_packages["permuted"])  # version 4, wrong outputs
        wait_until(lambda: "model_validation_failed" in rec.names(), 120)
        assert "top-1" in rec.last("model_validation_failed")["reason"]
        assert not (base / "4").exists() and pipeline.classifier.info.version == 2
        seen = len(rec.batches)
        wait_until(lambda: len(rec.batches) > seen + 20, 30)
        assert {b.model_version for b in rec.batches[seen:]} == {2} and pipeline.frames_failed == 0
    finally:
        stop.set()
        manager.stop()
        pipeline.stop()
        server.stop()
