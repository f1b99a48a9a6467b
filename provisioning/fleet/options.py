"""The `--model` and `--config` options of `edgectl fleet rollout start` and `edgectl fleet desired set`,
checked as a device checks a desired document, so that what every device would refuse is refused here,
before anything is written to the broker.

A desired document's config values are applied without a signature, so a device refuses a trust anchor
among them (:mod:`edge.config.trust_keys`); those keys change only with a document signed by the fleet
root key (`edgectl trust sign config`). Kept apart from :mod:`provisioning.fleet.rollouts` so that the
commands that only read the fleet (`fleet ls`, `rollout status`) do not load the config schema.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from edge.config.trust_keys import touched_anchors
from edge.errors import DesiredStateError, UsageError
from edge.util.shadow import ModelTarget, parse_config, parse_model

logger = logging.getLogger(__name__)


def model_option(ref: str, digest: str) -> ModelTarget:
    """`--model REF` (resolved to `digest`) as a desired document's model target."""
    try:
        return parse_model({"ref": ref.split("@")[0], "digest": digest}, "--model")
    except DesiredStateError as exc:
        raise UsageError(str(exc)) from None


def config_option(text: str) -> dict[str, Any]:
    """`--config JSON`: fleet-managed config values, checked as a desired document's are; trust anchors
    are refused naming them."""
    try:
        values = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"--config: not valid JSON: {exc}") from None
    try:
        parse_config({"revision": 0, "values": values}, "--config")
    except DesiredStateError as exc:
        raise UsageError(str(exc)) from None
    anchors = touched_anchors(_setting_paths(values))
    if anchors:
        one = len(anchors) == 1
        raise UsageError(f"--config: {', '.join(anchors)} {'is a trust anchor' if one else 'are trust anchors'}, "
                         f"which every device refuses from desired state; change {'it' if one else 'them'} with a "
                         "document signed by the fleet root key: `edgectl trust sign config --key FLEET_ROOT_KEY "
                         "--device DEVICE --patch PATCH`, sent with `edgectl fleet cmd DEVICE config --signed FILE`")
    return dict(values)


def _setting_paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """The settings `values` names, as paths (cameras by name, as a device patches them). A whole
    `cameras` array is left to the device: whether it changes a camera's source depends on its cameras."""
    for key, value in values.items():
        path = (*prefix, key)
        if isinstance(value, dict):
            yield from _setting_paths(value, path)
        elif path != ("cameras",):
            yield path
