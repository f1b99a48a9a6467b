"""Model lifecycle core of ``edge-model-server`` (the TF Serving-compatible server).

    source.py       finds versions on disk                (FileSystemStoragePathSource)
    policy.py       decides which to serve, load/unload   (ServableVersionPolicy, AvailabilityPreservingPolicy)
    runtime.py      loads and runs one version            (SavedModel / LiteRT loader, request checks)
    warmup.py       replays assets.extra/tf_serving_warmup_requests
    batching.py     merges concurrent requests            (BasicBatchScheduler)
    manager.py      ties them together                    (AspiredVersionsManager + ServableStateMonitor)
    model_config.py which models: flags, ModelServerConfig file, config file watcher
"""
from edge.errors import ModelConfigError
from edge.model_server.manager import (
    ManagerMetrics,
    Servable,
    ServableManager,
    ServableState,
    ServingError,
    VersionStatus,
)
from edge.model_server.model_config import (
    ModelConfigWatcher,
    ModelSource,
    load_model_config_file,
    sources_from_flags,
    sources_from_proto,
)
from edge.model_server.policy import All, Latest, Specific, VersionPolicy, aspired_versions
from edge.model_server.warmup import write_warmup_records

__all__ = [
    "All",
    "Latest",
    "ManagerMetrics",
    "ModelConfigError",
    "ModelConfigWatcher",
    "ModelSource",
    "Servable",
    "ServableManager",
    "ServableState",
    "ServingError",
    "Specific",
    "VersionPolicy",
    "VersionStatus",
    "aspired_versions",
    "load_model_config_file",
    "sources_from_flags",
    "sources_from_proto",
    "write_warmup_records",
]
