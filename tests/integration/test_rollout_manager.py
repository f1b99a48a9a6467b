"""The rollout manager's state machine with a real pipeline, real TensorFlow models and a real
docker-registry (validation on golden images alone: test_rollout_validation.py)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.errors import RolloutError
from edge.inference.batcher import FrameBatcher
from edge.inference.pipeline import InferencePipeline
from edge.models.state import StateStore, recover
from edge.models.store import ModelVersion
from edge.rollout.installer import ModelInstaller
from edge.rollout.manager import RolloutManager, RolloutSettings
from edge.serving.embedded import EmbeddedClassifier
from edge.util.ociref import Reference
from provisioning.publish import push_version
from tests.support.fakes import FailsInPipeline, RolloutRecorder, SolidCamera
from tests.support.frames import BLUE, RED
from tests.support.waits import wait_until


@pytest.mark.slow
def test_rollout_state_machine(tmp_path: Path, registry, colour_packages) -> None:
    client = registry.client()
    channel = Reference.parse(f"{registry.address}/models/colour:stable")
    digests = {}

    def promote(key: str) -> str:
        digests[key], _ = push_version(client, channel, colour_packages[key])
        return digests[key]

    promote("good1")
    base = tmp_path / "store" / "colour"
    store = StateStore(base)
    state = recover(store.load(), base)
    installer = ModelInstaller(base, registry.client(), store)
    installer.cleanup()
    rec = RolloutRecorder()
    failing_versions = {3}

    def loader(version: ModelVersion):
        classifier = EmbeddedClassifier(version)
        return FailsInPipeline(classifier) if version.version in failing_versions else classifier

    settings = RolloutSettings(poll_interval_s=1.0, probation_s=1.5, keep_versions=2, backoff_initial_s=0.5)
    manager = RolloutManager(ref=channel, installer=installer, state_store=store, state=state, loader=loader,
                             settings=settings, emit=lambda n, p: rec.events.append((n, p)),
                             publish_state=rec.states.append)
    # 1. First install (no servable version yet): bootstrap
    first = manager.bootstrap(threading.Event())
    assert first is not None and first.info.version == 1
    assert rec.names() == ["model_download_started", "model_downloaded", "model_switched"]
    cameras = [SolidCamera("red", RED), SolidCamera("blue", BLUE)]
    pipeline = InferencePipeline(FrameBatcher(cameras, threading.Event(), 4, 0.002), first, rec.batches.append)
    pipeline.start()
    manager.pipeline = pipeline
    manager.start()
    try:
        # 2. A new version on the channel: polled, installed, validated, switched, probation passed.
        promote("good2")
        wait_until(lambda: "model_probation_passed" in rec.names(), 60, message="v2 through probation")
        assert rec.last("model_switched")["version"] == 2 and rec.last("model_switched")["from_version"] == 1
        assert manager.state.state == "serving" and manager.state.previous_version == 1
        wait_until(lambda: len(rec.batches) > 20 and rec.batches[-1].model_version == 2, 20)
        versions = [b.model_version for b in list(rec.batches)]
        assert versions == sorted(versions) and set(versions) == {1, 2}  # switched exactly once
        assert pipeline.frames_failed == 0
        serving = pipeline.classifier.health()  # the retained `model` state says which runtime and precision serve
        assert (manager.summary()["runtime"], manager.summary()["precision"]) == (serving["runtime"], "fp32")
        assert serving["runtime"] in ("litert", "openvino", "tensorflow")
        for batch in rec.batches:
            assert [int(np.argmax(s)) for s in batch.scores] == [0 if i.frame.camera == "red" else 2 for i in batch.items]

        # 3. v3 passes validation but fails under traffic: automatic rollback during probation.
        promote("good3")
        wait_until(lambda: "model_rolled_back" in rec.names(), 60, message="automatic rollback")
        rolled = rec.last("model_rolled_back")
        assert rolled["automatic"] and rolled["version"] == 2 and rolled["from_version"] == 3
        assert "error rate" in rolled["reason"]
        assert manager.state.serving_version == 2 and manager.state.state == "rolled-back"
        assert digests["good3"] in manager.state.bad and not (base / "3").exists()
        seen = len(rec.batches)
        wait_until(lambda: len(rec.batches) > seen + 10, 20)
        assert rec.batches[-1].model_version == 2
        # known bad: polling does not deploy it again
        downloads = rec.names().count("model_download_started")
        checks = manager.checks
        wait_until(lambda: manager.checks >= checks + 2, 20)
        assert rec.names().count("model_download_started") == downloads
        with pytest.raises(RolloutError, match="no previous version"):
            manager.rollback()

        # 4. A version failing validation: refused, folder removed, v2 keeps serving.
        promote("permuted")
        wait_until(lambda: "model_validation_failed" in rec.names(), 60)
        assert "top-1" in rec.last("model_validation_failed")["reason"]
        assert not (base / "4").exists() and manager.state.serving_version == 2
        assert pipeline.classifier.info.version == 2

        # 5. Registry down: reported, retried, serving untouched.
        registry.stop()
        manager.deploy()
        wait_until(lambda: "model_check_failed" in rec.names(), 30)
        assert manager.state.serving_version == 2 and "cannot resolve" in manager.state.last_error
        registry.start()

        # 6. An explicit deploy of good1's digest (installed, validated before): older than v3, which was
        #    accepted (validated) before its probation failed, so rollback protection refuses it...
        failing_versions.clear()
        manager.deploy(f"{channel.registry}/{channel.repository}@{digests['good1']}")
        wait_until(lambda: any("rollback refused: version 1 is older than version 3" in e["reason"]
                               for n, e in rec.events if n == "model_install_failed"), 60)
        assert manager.state.serving_version == 2 and digests["good1"] in manager.state.bad
        # ... until a signed rollback document allows it (what `rollback {"signed": ...}` records); then a
        #    manual rollback goes back to the previous version on disk, no signature needed.
        manager.allow_rollback(1, digests["good1"], time.time() + 600, counter=1)
        manager.deploy(f"{channel.registry}/{channel.repository}@{digests['good1']}")
        wait_until(lambda: rec.last("model_switched")["version"] == 1, 60)
        assert manager.state.rollback_allowed == {} and manager.state.highest_version == 3
        result = manager.rollback()
        assert result == {"version": 2, "digest": digests["good2"], "from_version": 1}
        assert pipeline.classifier.info.version == 2 and digests["good1"] in manager.state.bad
        assert sum(1 for n in rec.names() if n == "model_rolled_back") == 2
        assert rec.states[-1]["serving"]["version"] == 2
    finally:
        manager.stop()
        pipeline.stop()
