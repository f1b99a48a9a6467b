"""Names edgectl's commands and its parser share (standard library only)."""
from __future__ import annotations

OPERATOR_NAME = "fleet-operator"  # the CN (or username) the ACL gives access to every device
HOMEASSISTANT_NAME = "homeassistant"  # the CN (or username) of Home Assistant: reads, presses rollback
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"
DEFAULT_STAGES = ("canary=1%", "25%", "100%")  # `edgectl fleet rollout start` without --stage
