"""Per-platform variants: which manifest of an OCI image index a device installs.

An index entry carries ``platform`` (``os``/``architecture``/``variant``, Go's GOOS/GOARCH values as
in multi-arch images) and may carry the annotation ``dev.edge.model.accelerator`` (``cuda``,
``tensorrt``, ``openvino``, ``litert``, ...); an entry without ``platform`` is portable (the
SavedModel every device can serve). A device keeps the entries it can run (its platform or one
its CPU also runs, containerd's rules; an accelerator it has) and takes, in this order, the
accelerator it prefers most (portable CPU last), the closest platform (exact first, portable last),
the first in the index.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.errors import ArtifactError
from edge.util.platforms import Platform, compatible, normalize

logger = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCELERATOR = "dev.edge.model.accelerator"
@dataclass(frozen=True)
class Choice:
    descriptor: dict[str, Any]
    platform: Platform | None  # None: the portable variant
    accelerator: str | None

    def describe(self) -> dict[str, Any]:
        return {"manifest": self.descriptor["digest"], "platform": str(self.platform) if self.platform else None,
                "accelerator": self.accelerator}


def _entry_platform(descriptor: dict[str, Any]) -> tuple[bool, Platform | None]:
    """(usable, platform): the entry's platform, None when it has none (the portable variant)."""
    raw = descriptor.get("platform")
    if raw is None:
        return True, None
    if not isinstance(raw, dict) or not isinstance(raw.get("os"), str) or not isinstance(raw.get("architecture"), str):
        return False, None
    if (raw["os"], raw["architecture"]) == ("unknown", "unknown") or raw.get("os.features"):
        return False, None  # buildx attestations; OS features are never on a device's list
    variant = raw.get("variant")
    return True, normalize(raw["os"], raw["architecture"], variant if isinstance(variant, str) else "")


def pick_variant(index: dict[str, Any], host: Platform, accelerators: Sequence[str], where: str) -> Choice:
    """The index entry this device installs (see the module docstring), or ArtifactError."""
    entries = index.get("manifests")
    if not isinstance(entries, list) or not entries:
        raise ArtifactError(f"{where}: an image index must list its manifests")
    vector = compatible(host)
    best: tuple[tuple[int, int, int], Choice] | None = None
    offered: list[str] = []
    for position, descriptor in enumerate(entries[:256]):
        if not isinstance(descriptor, dict) or descriptor.get("mediaType") != OCI_MANIFEST:
            continue  # unknown entry kinds are skipped, as the image spec asks
        usable, entry = _entry_platform(descriptor)
        annotations = descriptor.get("annotations")
        accelerator = (annotations.get(ACCELERATOR) if isinstance(annotations, dict) else None) or None
        if not usable or (accelerator is not None and not isinstance(accelerator, str)):
            continue
        offered.append(f"{entry or 'portable'}{f' ({accelerator})' if accelerator else ''}")
        if entry is not None and entry not in vector:
            continue
        if accelerator is not None and accelerator not in accelerators:
            continue
        platform_rank = vector.index(entry) if entry is not None else len(vector)
        accelerator_rank = list(accelerators).index(accelerator) if accelerator else len(accelerators)
        key = (accelerator_rank, platform_rank, position)
        if best is None or key < best[0]:
            best = (key, Choice(descriptor, entry, accelerator))
    if best is None:
        raise ArtifactError(f"{where}: no variant for this device ({host}, accelerators {list(accelerators) or 'none'}); "
                            f"the index offers {', '.join(offered[:8]) or 'nothing usable'}: push a portable variant "
                            "(no platform) or one for this platform")
    return best[1]
