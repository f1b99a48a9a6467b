"""The desired-state record on disk: the generation accepted, its document, what was done about it.

``desired-state.json`` beside the model store (``[fleet] state_file``), written atomically (temp
file, fsync, rename). It is what makes a stale document recognisable after a restart (the
generation), what keeps a config revision from being applied twice, and where the baselines of
fleet-managed settings live (:mod:`edge.device.desired_config`)::

    {"format": 1, "generation": 7, "target_sha256": "…", "desired": {…}, "accepted_at": 1795626490.1,
     "stepped_generation": 7, "config": {"revision": 3, "values_sha256": "…", "baseline": {…}},
     "config_outcome": {"revision": 3, "state": "applied", "reason": null},
     "refused": {"generation": 5, "reason": "…", "at": …}, "announced": [7, "converged"]}

An unreadable file is logged and set aside (``.corrupt``); the device then starts over at generation
0, and the next retained document brings it back.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.device.desired_config import ConfigRecord
from edge.util.fsutil import atomic_write_bytes

logger = logging.getLogger(__name__)


@dataclass
class DesiredRecord:
    generation: int = 0
    target_sha256: str | None = None
    desired: dict[str, Any] | None = None
    accepted_at: float | None = None
    stepped_generation: int = 0  # the generation whose model step (deploy / rollback) was taken last
    config: ConfigRecord = field(default_factory=ConfigRecord)
    config_outcome: dict[str, Any] | None = None  # {"revision", "state", "reason"}
    # the config record before a revision that needed a restart: back to it if the gateway could not start
    # with that revision and put the previous file back (edge.config.pending)
    config_before: ConfigRecord | None = None
    refused: dict[str, Any] | None = None  # the last document refused: {"generation", "reason", "at"}
    announced: tuple[int, str] | None = None  # the last outcome event sent: (generation, state)

    def to_json(self) -> dict[str, Any]:
        return {"format": 1, "generation": self.generation, "target_sha256": self.target_sha256,
                "desired": self.desired, "accepted_at": self.accepted_at,
                "stepped_generation": self.stepped_generation, "config": self.config.to_json(),
                "config_outcome": self.config_outcome, "refused": self.refused,
                "config_before": self.config_before.to_json() if self.config_before else None,
                "announced": list(self.announced) if self.announced else None}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> DesiredRecord:
        announced = doc.get("announced")
        generation = doc.get("generation")
        stepped = doc.get("stepped_generation")
        return cls(
            generation=generation if isinstance(generation, int) else 0,
            target_sha256=doc.get("target_sha256") if isinstance(doc.get("target_sha256"), str) else None,
            desired=doc.get("desired") if isinstance(doc.get("desired"), dict) else None,
            accepted_at=float(doc["accepted_at"]) if isinstance(doc.get("accepted_at"), (int, float)) else None,
            stepped_generation=stepped if isinstance(stepped, int) else 0,
            config=ConfigRecord.from_json(doc.get("config")),
            config_outcome=doc.get("config_outcome") if isinstance(doc.get("config_outcome"), dict) else None,
            config_before=ConfigRecord.from_json(doc["config_before"]) if isinstance(doc.get("config_before"), dict)
            else None,
            refused=doc.get("refused") if isinstance(doc.get("refused"), dict) else None,
            announced=(int(announced[0]), str(announced[1])) if isinstance(announced, list) and len(announced) == 2
            else None,
        )


class DesiredRecordStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> DesiredRecord:
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            return DesiredRecord.from_json(doc)
        except FileNotFoundError:
            return DesiredRecord()
        except (OSError, ValueError, TypeError) as exc:
            logger.error("desired-state record %s unreadable (%s); starting over at generation 0", self.path, exc)
            try:
                self.path.replace(self.path.with_name(self.path.name + ".corrupt"))
            except OSError:
                pass
            return DesiredRecord()

    def save(self, record: DesiredRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.path, json.dumps(record.to_json(), indent=1, sort_keys=True).encode() + b"\n")
