"""Registry authentication: Basic, and Bearer tokens from the registry's token server.

The first request goes out anonymous (or with a cached token); on ``401`` the client reads
``WWW-Authenticate``. ``Basic`` -> retry with the username/password; ``Bearer realm=...,
service=...,scope=...`` -> fetch a token from the realm (GET with the credentials when given, else
anonymously; with an identity token, the OAuth2 ``refresh_token`` grant as a POST), cache it per
repository and retry. Credentials are given, or looked up once, on the first challenge (docker
config and credential helpers, :mod:`edge.transport.dockerconfig`), so an anonymous registry never
runs a helper.
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable

import requests

from edge.errors import RegistryAuthError
from edge.transport.bounded import short_reason
from edge.transport.dockerconfig import Credentials

logger = logging.getLogger(__name__)

CLIENT_ID = "edge"
CredentialLookup = Callable[[], "Credentials | None"]


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="x",service="y",scope="z"`` -> ("bearer", {...})."""
    scheme, _, params = header.strip().partition(" ")
    found = dict(re.findall(r'(\w+)="([^"]*)"', params))
    return scheme.lower(), found


class RegistryAuth:
    """Credentials and tokens for one registry (one per client; not thread-safe)."""

    def __init__(self, registry: str, session: requests.Session, timeout_s: float,
                 credentials: Credentials | None = None, lookup: CredentialLookup | None = None) -> None:
        self.registry = registry
        self._session = session
        self._timeout_s = timeout_s
        self._credentials = credentials
        self._lookup = lookup if credentials is None else None
        self.basic = False  # the registry asked for Basic auth
        self._tokens: dict[str, str] = {}  # repository -> bearer token

    @property
    def credentials(self) -> Credentials | None:
        if self._lookup is not None:
            lookup, self._lookup = self._lookup, None
            self._credentials = lookup()
            if self._credentials is not None:
                logger.info("registry %s: using credentials from %s", self.registry, self._credentials.source)
        return self._credentials

    def headers(self, repository: str) -> dict[str, str]:
        token = self._tokens.get(repository)
        return {"Authorization": f"Bearer {token}"} if token else {}

    def basic_auth(self) -> tuple[str, str] | None:
        found = self._credentials
        if self.basic and found is not None and found.username:
            return found.username, found.password or ""
        return None

    def describe(self) -> str:
        """How the credentials were refused, for the 401 message."""
        found = self._credentials
        if found is None:
            return ("it needs credentials (--username/--password, EDGE_REGISTRY_USERNAME/PASSWORD, registry.username/"
                    "password, or a docker config.json / credential helper)")
        return f"credentials were refused{f' ({found.source})' if found.source else ''}"

    def handle(self, response: requests.Response, repository: str) -> bool:
        """Answer a 401 challenge; True when a retry makes sense."""
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            found = self.credentials
            if found is None or self.basic:
                return False
            if not found.username:
                raise RegistryAuthError(f"registry {self.registry} uses Basic auth, but {found.source or 'the config'} "
                                        "holds an identity token; give a username and password")
            self.basic = True
            return True
        if scheme == "bearer" and params.get("realm"):
            token = self._fetch_token(params)
            if self._tokens.get(repository) == token:
                return False
            self._tokens[repository] = token
            return True
        return False

    def _fetch_token(self, params: dict[str, str]) -> str:
        realm = params["realm"]
        query: dict[str, str] = {k: params[k] for k in ("service", "scope") if k in params}
        found = self.credentials
        try:
            if found is not None and found.identity_token:
                form: dict[str, str] = {"grant_type": "refresh_token", "refresh_token": found.identity_token, "client_id": CLIENT_ID,
                        **query}
                reply = self._session.post(realm, data=form, timeout=self._timeout_s)
            else:
                auth = (found.username, found.password or "") if found is not None and found.username else None
                reply = self._session.get(realm, params=query, auth=auth, timeout=self._timeout_s)
        except requests.exceptions.RequestException as exc:
            raise RegistryAuthError(f"registry {self.registry}: token server {realm} unreachable: "
                                    f"{short_reason(exc)}") from None
        if reply.status_code in (401, 403):
            raise RegistryAuthError(f"registry {self.registry}: token server refused the credentials "
                                    f"({reply.status_code}); check username/password") from None
        if reply.status_code != 200:
            raise RegistryAuthError(f"registry {self.registry}: token server answered {reply.status_code}")
        try:
            doc = reply.json()
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not token or not isinstance(token, str):
            raise RegistryAuthError(f"registry {self.registry}: token server sent no token")
        return token
