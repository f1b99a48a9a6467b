"""edge.transport.mqtt on its own: broker URLs (the reporter against a real broker:
tests/integration/test_transport_outbox.py)."""
from __future__ import annotations

import pytest

from edge.transport.mqtt import parse_broker_url


def test_parse_broker_url() -> None:
    assert parse_broker_url("mqtt://broker") == ("broker", 1883, False)
    assert parse_broker_url("mqtts://broker:9999") == ("broker", 9999, True)
    with pytest.raises(ValueError, match="mqtt://host"):
        parse_broker_url("http://broker")
