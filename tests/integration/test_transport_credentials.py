"""Registry credentials the ecosystem's way, against real docker-registries (htpasswd, token server):
docker config.json `auths`, credential helpers (a real `docker-credential-*` script on PATH, fed the
server address on stdin), `credsStore`, identity tokens, `$DOCKER_CONFIG`; for `edgectl` and the device."""
from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from edge.app.wiring import registry_client
from edge.config.schema import RegistryConfig
from edge.errors import RegistryAuthError
from edge.transport import dockerconfig
from edge.transport.oci import RegistryClient
from edge.util.ociref import Reference
from provisioning.cli import main
from tests.fixtures.registry import PASSWORD, REFRESH_TOKEN, USERNAME
from tests.support.packages import make_version

HELPER = """#!/bin/sh
# a credential helper as docker runs it: `docker-credential-edgetest get`, the server on stdin
read -r server
printf '%s' "$server" >> "{log}"
if [ "$1" = get ] && [ "$server" = "{registry}" ]; then
  printf '{{"ServerURL": "%s", "Username": "{username}", "Secret": "{secret}"}}' "$server"
  exit 0
fi
echo "credentials not found in native keychain"
exit 1
"""


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`install(registry, username, secret)` writes docker-credential-edgetest onto PATH; its stdin log."""
    folder = tmp_path / "bin"
    folder.mkdir()
    log = tmp_path / "helper.log"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")

    def install(registry: str, username: str = USERNAME, secret: str = PASSWORD, name: str = "edgetest") -> Path:
        script = folder / f"docker-credential-{name}"
        script.write_text(HELPER.format(log=log, registry=registry, username=username, secret=secret))
        script.chmod(0o755)
        return log

    return install


def write_config(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def can_push(client: RegistryClient) -> str:
    with client:
        return client.push_blob("models/fake", os.urandom(64))


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def test_docker_config_auths_and_a_credential_helper_authenticate(basic_registry, tmp_path: Path, helper) -> None:
    address = basic_registry.address
    for key in (address, f"https://{address}/v1/"):  # exact key, and an old-style URL key
        config = write_config(tmp_path / key.replace("/", "_") / "config.json",
                              {"auths": {key: {"auth": basic(USERNAME, PASSWORD)}}})
        client = RegistryClient(address, insecure=True, credentials=lambda c=config: dockerconfig.lookup(address, c))
        assert can_push(client).startswith("sha256:")
    log = helper(address)
    for doc in ({"credHelpers": {address: "edgetest"}}, {"credsStore": "edgetest"}):
        config = write_config(tmp_path / "helpers" / "config.json", doc)
        assert can_push(RegistryClient(address, insecure=True,
                                       credentials=lambda c=config: dockerconfig.lookup(address, c))).startswith("sha256:")
    assert log.read_text() == address * 2  # the server address on stdin, no scheme, no newline
    # wrong credentials, nothing found, a broken or missing helper: one line each
    config = write_config(tmp_path / "wrong" / "config.json", {"auths": {address: {"auth": basic(USERNAME, "nope")}}})
    with pytest.raises(RegistryAuthError, match=rf"credentials were refused \(docker config {config}\)"):
        can_push(RegistryClient(address, insecure=True, credentials=lambda: dockerconfig.lookup(address, config)))
    config = write_config(tmp_path / "none" / "config.json", {"credHelpers": {"other.example": "edgetest"}})
    with pytest.raises(RegistryAuthError, match="needs credentials .*credential helper"):
        can_push(RegistryClient(address, insecure=True, credentials=lambda: dockerconfig.lookup(address, config)))
    config = write_config(tmp_path / "missing" / "config.json", {"credHelpers": {address: "absent"}})
    with pytest.raises(RegistryAuthError, match="docker-credential-absent .*not installed or not on PATH"):
        dockerconfig.lookup(address, config)
    write_config(tmp_path / "bad" / "config.json", {"auths": {address: {"auth": "!!"}}})
    with pytest.raises(RegistryAuthError, match="not base64 of user:password"):
        dockerconfig.lookup(address, tmp_path / "bad" / "config.json")


def test_an_identity_token_gets_a_bearer_token_with_the_refresh_grant(token_registry, tmp_path: Path, helper) -> None:
    address = token_registry.address
    config = write_config(tmp_path / "c1" / "config.json", {"auths": {address: {"identitytoken": REFRESH_TOKEN}}})
    assert can_push(RegistryClient(address, insecure=True, credentials=lambda: dockerconfig.lookup(address, config)))
    helper(address, username="<token>", secret=REFRESH_TOKEN)  # a helper can hand out identity tokens too
    config = write_config(tmp_path / "c2" / "config.json", {"credHelpers": {address: "edgetest"}})
    assert can_push(RegistryClient(address, insecure=True, credentials=lambda: dockerconfig.lookup(address, config)))
    users = [r["user"] for r in token_registry.token_server.requests]
    assert users.count("refresh-token") >= 2 and "!bad" not in users


def test_an_anonymous_registry_never_asks_for_credentials(registry) -> None:
    def lookup() -> None:
        raise AssertionError("credentials looked up for a registry that did not ask for them")

    assert can_push(RegistryClient(registry.address, insecure=True, credentials=lookup))


def test_edgectl_and_the_device_use_the_docker_config(basic_registry, tmp_path: Path, helper, capsys,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    address = basic_registry.address
    helper(address)
    folder = tmp_path / "docker"
    write_config(folder / "config.json", {"credHelpers": {address: "edgetest"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(folder))
    version = make_version(tmp_path / "fake" / "1", version=1)
    assert main(["model", "push", str(version), f"{address}/models/fake:1", "--insecure"]) == 0
    digest = capsys.readouterr().out.strip()
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "elsewhere"))
    explicit = write_config(tmp_path / "explicit.json", {"auths": {address: {"auth": basic(USERNAME, PASSWORD)}}})
    assert main(["model", "promote", f"{address}/models/fake", "1", "--channel", "stable", "--insecure",
                 "--docker-config", str(explicit)]) == 0
    device = RegistryConfig(ref=f"{address}/models/fake:stable", insecure=True, docker_config=explicit)
    with registry_client(device) as client:
        assert client.resolve(Reference.parse(device.ref)) == digest
    with registry_client(RegistryConfig(ref=device.ref, insecure=True)) as client, \
            pytest.raises(RegistryAuthError, match="needs credentials"):
        client.resolve(Reference.parse(device.ref))  # a device reads no docker config unless told to
