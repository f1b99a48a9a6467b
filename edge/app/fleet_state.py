"""Desired state wired into the gateway: the agent, its subscription and its reported topic.

With ``[fleet] desired_state = true`` (the default) the gateway subscribes to
``<prefix>/<device>/desired`` (retained, written by the fleet operator only) and publishes
``<prefix>/<device>/reported`` (retained); :mod:`edge.device.desired` does the work. The model part
needs ``[registry]`` (:class:`~edge.app.model_updates.ModelUpdates` is the agent's model control).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from edge.app.model_updates import ModelUpdates
from edge.config.fleet import desired_state_file
from edge.config.patch import LiveConfig, PatchOutcome
from edge.device.desired import DesiredContext, DesiredStateAgent
from edge.transport.mqtt import InboundMessage
from edge.transport.outbox import MqttReporter

logger = logging.getLogger(__name__)


def desired_agent(live: LiveConfig, reporter: MqttReporter, updates: ModelUpdates | None,
                  emit: Callable[[str, dict[str, Any]], None], request_restart: Callable[[str], None],
                  apply_live: Callable[[PatchOutcome], None]) -> DesiredStateAgent | None:
    """The desired-state agent for this gateway, or None when `[fleet] desired_state = false`."""
    config = live.current
    if not config.fleet.desired_state:
        return None
    agent = DesiredStateAgent(DesiredContext(
        device_id=config.device_id, config=live, apply_live=apply_live, request_restart=request_restart, emit=emit,
        publish_reported=lambda doc: reporter.publish_retained("reported", doc),
        state_path=desired_state_file(config.fleet, config.model.store), model=updates))
    if updates is not None:
        updates.add_listener(agent.poke)
    return agent


def start_desired(agent: DesiredStateAgent, reporter: MqttReporter) -> None:
    """Start the agent, then subscribe: every connect delivers the retained document again."""
    agent.start()

    def on_desired(message: InboundMessage) -> None:
        agent.on_message(message.payload)

    reporter.subscribe(reporter.topic("desired"), on_desired)
