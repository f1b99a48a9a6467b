"""Registry -> local store: resolve a tag, download + verify into staging, move in atomically.

The order of operations is what makes a power cut at any point harmless:

1. ``pull_model`` downloads by digest (resumable) and verifies digest and signature, then
   safe-extracts into a new folder under ``<store>/<model>/.staging/``. Dot-folders are invisible
   to the loader and to TF Serving (only numeric folders are versions). A version older than one
   already accepted is refused here (:func:`edge.rollout.policy.stale_version`), never moved in.
2. Every file and folder of the extracted version is fsynced.
3. The state records ``installing = {version, digest}`` (atomic state write).
4. ``rename(.staging/<x>, <store>/<model>/<version>)`` — atomic within one filesystem — then the
   model folder is fsynced. A version folder is therefore either absent or complete.
5. The state records the digest under ``installed`` and clears ``installing``.

At startup :meth:`ModelInstaller.cleanup` removes whatever is left in ``.staging`` (a download or
unpack cut short), and :func:`edge.models.state.recover` adopts a folder whose rename happened
before its record. Deleting a version is the reverse: rename it to a dot-folder, then remove it.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey

from edge.errors import ModelInstallError, StaleVersionError
from edge.models.artifact.attached import attached_blobs
from edge.models.artifact.channel import CHANNEL_ARTIFACT_TYPE, ChannelStatement, newest_statement
from edge.models.artifact.modelsig import BUNDLE_MEDIA_TYPE, MAX_BUNDLE_BYTES
from edge.models.artifact.pull import PulledModel, Target, pull_model
from edge.models.state import ModelState, StateStore
from edge.models.store import is_version_dir, list_versions
from edge.rollout.policy import stale_version
from edge.util.fsutil import fsync_dir
from edge.util.ociref import Reference

logger = logging.getLogger(__name__)

STAGING = ".staging"



@dataclass(frozen=True)
class Installed:
    version: int
    digest: str
    path: Path
    signed_by: str | None = None
    downloaded: bool = True  # False when the digest was already on disk
    signature: str | None = None  # "model-signing", "ed25519" (deprecated) or None (no key configured)
    variant: dict[str, Any] | None = None  # the variant of a multi-platform version


def is_channel(ref: Reference) -> bool:
    """A channel is a non-numeric tag followed by tag, not by digest (`stable`, `canary`)."""
    return ref.digest is None and ref.tag is not None and not ref.tag.isdigit()


def fsync_tree(root: Path) -> None:
    """fsync every regular file and folder under `root` (bottom-up), so a rename publishes data on disk."""
    for dirpath, _dirnames, filenames in os.walk(root, topdown=False, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(dirpath))


def remove_version_dir(model_base: Path, version: int) -> None:
    """Make a version folder invisible at once (rename to a dot-name), then delete it."""
    for path in (model_base / str(version), model_base / f"{version:08d}"):
        if path.is_dir() and not path.is_symlink():
            trash = model_base / f".trash-{path.name}-{os.getpid()}"
            os.replace(path, trash)
            fsync_dir(model_base)
            shutil.rmtree(trash, ignore_errors=True)


class ModelInstaller:
    """Downloads model versions from a registry into one model's folder of the store."""

    def __init__(
        self,
        model_base: Path,
        client: Any,  # edge.registry.RegistryClient
        state_store: StateStore,
        public_key: Any = None,  # from edge.models.artifact.signing.load_model_public_key
        max_bytes: int = 2 << 30,
        puller: Callable[..., Any] | None = None,
        target: Target | None = None,  # which variants this device takes (default: this machine, no accelerator)
    ) -> None:
        self.model_base = Path(model_base)
        self.model_name = self.model_base.name
        self.staging = self.model_base / STAGING
        self.client = client
        self.state_store = state_store
        self.public_key = public_key
        self.max_bytes = max_bytes
        self.target = target or Target.here()
        if puller is None:
            puller = pull_model
        self._pull = puller

    def cleanup(self) -> None:
        """Remove interrupted unpacks and deletes (run at startup). Partial downloads (``*.part``)
        stay: the next pull resumes them, and the blob digest is checked at the end anyway."""
        self.model_base.mkdir(parents=True, exist_ok=True)
        if self.staging.exists():
            for leftover in self.staging.iterdir():
                if leftover.name.endswith(".part") and leftover.is_file():
                    continue
                logger.info("removing interrupted install %s", leftover)
                if leftover.is_dir() and not leftover.is_symlink():
                    shutil.rmtree(leftover, ignore_errors=True)
                else:
                    leftover.unlink(missing_ok=True)
        for trash in self.model_base.glob(".trash-*"):
            shutil.rmtree(trash, ignore_errors=True)

    def resolve(self, ref: Reference) -> str:
        """The digest `ref` points to now (a cheap HEAD)."""
        return ref.digest or self.client.resolve(ref)

    def install(self, ref: Reference, state: ModelState, progress: Callable[[int, int], None] | None = None) -> Installed:
        """Download, verify and move `ref` into the store; updates and saves `state`.

        Registry and artifact errors propagate unchanged (the caller classifies them); store
        conflicts raise ModelInstallError.
        """
        self.staging.mkdir(parents=True, exist_ok=True)
        pulled = self._pull(self.client, ref, self.staging, public_key=self.public_key,
                            max_bytes=self.max_bytes, progress=progress, target=self.target)
        try:
            return self._move_in(pulled, state)
        finally:
            if Path(pulled.path).exists():
                shutil.rmtree(pulled.path, ignore_errors=True)

    def channel_statement(self, ref: Reference, digest: str) -> tuple[ChannelStatement | None, list[str]] | None:
        """The newest verified channel statement for the channel tag `ref` at `digest` (and why others were
        skipped); None when this device does not judge channels (no EC model key, or `ref` is no channel)."""
        if not isinstance(self.public_key, EllipticCurvePublicKey) or not is_channel(ref):
            return None
        assert ref.tag is not None
        found = attached_blobs(self.client, ref.repository, digest, CHANNEL_ARTIFACT_TYPE, BUNDLE_MEDIA_TYPE,
                               max_bytes=MAX_BUNDLE_BYTES)
        return newest_statement(found, self.public_key, ref.repository, ref.tag, digest)

    def _move_in(self, pulled: PulledModel, state: ModelState) -> Installed:
        if pulled.name != self.model_name:
            raise ModelInstallError(f"artifact {pulled.digest[:19]} is model {pulled.name!r}; this device serves "
                               f"{self.model_name!r} (push it to this model's repository or fix [model].name)")
        version = int(pulled.version)
        stale = stale_version(state, version, pulled.digest, time.time())
        if stale is not None:
            raise StaleVersionError(stale)
        target = self.model_base / str(version)
        known = state.installed.get(version)
        if target.exists() or (self.model_base / f"{version:08d}").exists():
            if known == pulled.digest and is_version_dir(target):
                return Installed(version, pulled.digest, target, pulled.signed_by, True, pulled.signature,
                                 pulled.variant)
            raise ModelInstallError(
                f"version {version} is already installed with digest {known or 'unknown (placed by hand)'}; "
                f"the artifact {pulled.digest} is a different build: publish it under a new version number"
            )
        source = Path(pulled.path)
        if not ((source / "saved_model.pb").is_file() or (source / "model.tflite").is_file()):
            raise ModelInstallError(f"artifact {pulled.digest[:19]} has no saved_model.pb at its top level")
        fsync_tree(source)
        state.installing = {"version": version, "digest": pulled.digest}
        self.state_store.save(state)
        os.rename(source, target)  # same filesystem: atomic
        fsync_dir(self.model_base)
        fsync_dir(self.staging)
        state.installed[version] = pulled.digest
        state.artifacts[pulled.digest] = {"variant": pulled.variant, "signature": pulled.signature,
                                          "signed_by": pulled.signed_by}
        state.installing = None
        self.state_store.save(state)
        logger.info("installed %s version %d (%s)", self.model_name, version, pulled.digest)
        return Installed(version, pulled.digest, target, pulled.signed_by, True, pulled.signature, pulled.variant)

    def remove(self, version: int, state: ModelState) -> None:
        """Delete a version folder (never call for the serving or previous one)."""
        remove_version_dir(self.model_base, version)
        state.artifacts.pop(state.installed.pop(version, ""), None)
        self.state_store.save(state)

    def prune(self, state: ModelState, keep: int) -> list[int]:
        """Keep `keep` version folders (serving and previous always, then the newest); delete the rest."""
        present = [v.version for v in list_versions(self.model_base)]
        protected = {state.serving_version, state.previous_version}
        keepers = {v for v in present if v in protected}
        for version in sorted(present, reverse=True):  # then the newest others, up to `keep` in all
            if len(keepers) >= keep:
                break
            keepers.add(version)
        removed = [v for v in present if v not in keepers]
        for version in removed:
            logger.info("removing old version %d of %s", version, self.model_name)
            remove_version_dir(self.model_base, version)
            state.artifacts.pop(state.installed.pop(version, ""), None)
        if removed:
            self.state_store.save(state)
        return removed
