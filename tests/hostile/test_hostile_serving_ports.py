"""Who may connect to edge-model-server: its ports bind to loopback unless --grpc_host / --rest_api_host
say otherwise."""
from __future__ import annotations

import pytest

from tests.support.hostile_serving import MODEL, is_loopback, listening_sockets
from tests.support.paths import TFSERVING_TESTDATA

pytestmark = pytest.mark.slow  # edge-model-server processes of their own


def test_ports_bind_to_loopback_by_default(hostile_model_server) -> None:
    found = listening_sockets(hostile_model_server.pid)
    ports = {port for _, port in found}
    assert {hostile_model_server.port, hostile_model_server.rest_port} <= ports, found
    assert all(is_loopback(ip) for ip, _ in found), found


def test_ports_bind_where_configured(model_server_factory) -> None:
    """Exposing the ports is an explicit choice: --grpc_host / --rest_api_host."""
    server = model_server_factory(f"--model_name={MODEL}", f"--model_base_path={TFSERVING_TESTDATA / 'saved_model_half_plus_two_cpu'}",
                                  "--grpc_host=0.0.0.0", "--rest_api_host=0.0.0.0")
    found = dict((port, ip) for ip, port in listening_sockets(server.pid))
    assert found[server.port] in ("0.0.0.0", "::") and found[server.rest_port] in ("0.0.0.0", "::"), found
