"""A small OCI distribution (registry v2 API) client: manifests, blobs, tags, Basic and Bearer auth.

No TensorFlow here: the device side imports this to watch tags and download model artifacts.

- References are ``host[:port]/repo/path[:tag][@sha256:<hex>]``; the registry host is always
  explicit (there is no Docker Hub default).
- Auth: Basic and Bearer (:mod:`edge.transport.oci_auth`); credentials given, or found in the docker
  config and credential helpers (:mod:`edge.transport.dockerconfig`). ``401``/``403`` after that ->
  RegistryAuthError.
- Referrers (OCI 1.1): :meth:`RegistryClient.referrers` asks the referrers API and, where the
  registry has none (docker-registry 2.8 answers 404), reads the referrers tag ``sha256-<hex>``;
  :meth:`RegistryClient.push_referrer` keeps that tag's index up to date when the registry does not
  confirm the subject (no ``OCI-Subject`` header).
- Content is verified: manifests fetched by digest and every blob are hashed (sha256) and a
  mismatch raises DigestMismatch. Blob downloads are resumable (``<dest>.part`` + ``Range``).
- Bounded in size and time against a hostile or broken registry (TUF's endless-data and
  slow-retrieval attacks): manifests and small blobs are read up to a limit, layers up to the size
  their manifest declares; every request has ``timeout_s`` to connect and between bytes, and a body
  must keep arriving at ``MIN_RATE_BYTES_PER_S`` or more (:mod:`edge.transport.bounded`), judged over each ``timeout_s``
  window, so a registry that trickles a byte at a time cannot hold a download open forever.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any
from urllib.parse import urljoin

import requests

from edge.errors import DigestMismatch, RegistryAuthError, RegistryError, RegistryNotFound
from edge.transport.bounded import READ_ERRORS, body_chunks, read_limited, short_reason
from edge.transport.dockerconfig import Credentials
from edge.transport.oci_auth import CredentialLookup, RegistryAuth
from edge.util.fsutil import fsync_dir
from edge.util.ociref import Reference, is_digest, sha256_digest

logger = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST])
MAX_MANIFEST_BYTES = 4 << 20  # the distribution spec's limit
CHUNK_BYTES = 1 << 20  # download read size
UPLOAD_CHUNK_BYTES = 8 << 20  # blobs above this are pushed in PATCH chunks
NO_REFERRERS_API = (404, 400, 405, 501)  # 404 as the spec says; older registries answer with the others

Progress = Callable[[int, int], None]  # (bytes done, bytes total; total 0 = unknown)


def _error_detail(response: requests.Response) -> str:
    try:
        errors = response.json().get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or response.reason
    except (ValueError, AttributeError):
        return response.reason or str(response.status_code)


class RegistryClient:
    """One registry (``host:port``); thread-compatible, not thread-safe (one client per thread)."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None,
                 insecure: bool = False, ca_file: Path | None = None, timeout_s: float = 30.0,
                 credentials: CredentialLookup | None = None) -> None:
        """`username`/`password` when given; else `credentials` is asked once, at the first challenge
        (e.g. ``lambda: dockerconfig.lookup(registry)``)."""
        self.registry = registry
        self.base_url = f"{'http' if insecure else 'https'}://{registry}"
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.verify = str(ca_file) if ca_file else True
        self._session.headers["User-Agent"] = "edge-registry-client/1"
        given = Credentials(username, password or "", source="the given username/password") if username else None
        self.auth = RegistryAuth(registry, self._session, timeout_s, given, None if given else credentials)

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- transport and auth -------------------------------------------------------------------

    def _send(self, method: str, url: str, repository: str, headers: dict[str, str], **kwargs: Any) -> requests.Response:
        merged = {**self.auth.headers(repository), **headers}
        try:
            return self._session.request(method, url, headers=merged, auth=self.auth.basic_auth(),
                                         timeout=self.timeout_s, allow_redirects=True, **kwargs)
        except requests.exceptions.SSLError as exc:
            raise RegistryError(f"registry {self.registry}: TLS error ({exc.__class__.__name__}); pass a CA file "
                                "(ca_file / --ca-file) or --insecure for a plain-http registry") from None
        except requests.exceptions.ConnectionError as exc:
            raise RegistryError(f"cannot connect to registry {self.registry}: {short_reason(exc)}") from None
        except requests.exceptions.Timeout:
            raise RegistryError(f"registry {self.registry}: no answer within {self.timeout_s:g}s") from None
        except requests.exceptions.RequestException as exc:
            raise RegistryError(f"registry {self.registry}: request failed: {exc}") from None

    def _request(self, method: str, path_or_url: str, repository: str, *, what: str,
                 headers: dict[str, str] | None = None, ok: tuple[int, ...] = (200,), **kwargs: Any) -> requests.Response:
        url = path_or_url if path_or_url.startswith("http") else self.base_url + path_or_url
        headers = headers or {}
        response = self._send(method, url, repository, headers, **kwargs)
        for _ in range(2):
            if response.status_code != 401 or not self.auth.handle(response, repository):
                break
            body = kwargs.get("data")
            if isinstance(body, io.IOBase):  # a file being uploaded: start it again
                body.seek(0)
            response = self._send(method, url, repository, headers, **kwargs)
        if response.status_code in ok:
            return response
        status = response.status_code
        detail = _error_detail(response) if method != "HEAD" else response.reason
        response.close()
        if status == 401:
            raise RegistryAuthError(f"registry {self.registry}: not authorised for {what}: {self.auth.describe()}")
        if status == 403:
            raise RegistryAuthError(f"registry {self.registry}: access to {what} denied (403)")
        if status == 404:
            raise RegistryNotFound(f"{what} not found on registry {self.registry} ({detail})")
        raise RegistryError(f"registry {self.registry}: {method} {what} failed: HTTP {status} {detail}")

    # --- manifests ----------------------------------------------------------------------------

    def resolve(self, ref: Reference) -> str:
        """The digest a reference points at (HEAD on the manifest; no body transferred)."""
        if ref.digest:
            return ref.digest
        what = f"{ref.repository}:{ref.reference}"
        response = self._request("HEAD", f"/v2/{ref.repository}/manifests/{ref.reference}", ref.repository,
                                 what=what, headers={"Accept": MANIFEST_ACCEPT})
        digest = response.headers.get("Docker-Content-Digest")
        if digest and is_digest(digest):
            return digest
        return self.get_manifest(ref.repository, ref.reference)[1]

    def get_manifest(self, repository: str, reference: str) -> tuple[dict[str, Any], str, bytes]:
        """(parsed, digest, raw bytes). By digest, the bytes are checked against it."""
        what = f"{repository}{'@' if is_digest(reference) else ':'}{reference}"
        response = self._request("GET", f"/v2/{repository}/manifests/{reference}", repository, what=what,
                                 headers={"Accept": MANIFEST_ACCEPT}, stream=True)
        raw = read_limited(response, MAX_MANIFEST_BYTES, f"manifest {what}", self.timeout_s)
        digest = sha256_digest(raw)
        expected = reference if is_digest(reference) else response.headers.get("Docker-Content-Digest")
        if expected and expected != digest:
            raise DigestMismatch(f"manifest {what} from {self.registry} hashes to {digest}, expected {expected}")
        try:
            parsed = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"manifest {what} from {self.registry} is not JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise RegistryError(f"manifest {what} from {self.registry} is not a JSON object")
        return parsed, digest, raw

    def push_manifest(self, repository: str, tag: str, manifest: dict[str, Any]) -> str:
        """PUT a manifest (compact JSON) under ``tag``; returns its digest."""
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        return self.push_manifest_bytes(repository, tag, raw, manifest.get("mediaType", OCI_MANIFEST))

    def push_manifest_bytes(self, repository: str, tag: str, raw: bytes, media_type: str) -> str:
        """PUT exact manifest bytes (re-tagging keeps the digest); returns the digest."""
        return self._put_manifest(repository, tag, raw, media_type)[0]

    def _put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> tuple[str, requests.Response]:
        digest = sha256_digest(raw)
        response = self._request("PUT", f"/v2/{repository}/manifests/{reference}", repository,
                                 what=f"{repository}:{reference}", headers={"Content-Type": media_type}, data=raw,
                                 ok=(201, 200))
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest:
            raise DigestMismatch(f"registry {self.registry} stored manifest {repository}:{reference} as {stored}, sent {digest}")
        logger.info("pushed manifest %s/%s:%s (%s)", self.registry, repository, reference, digest)
        return digest, response

    # --- referrers (OCI 1.1) ----------------------------------------------------------------------

    def referrers(self, repository: str, digest: str, artifact_type: str | None = None) -> list[dict[str, Any]]:
        """Descriptors of the manifests whose ``subject`` is `digest`, of `artifact_type` when given: from
        the referrers API, else from the referrers tag ``sha256-<hex>`` (absent: none)."""
        what = f"referrers of {repository}@{digest}"
        response = self._request("GET", f"/v2/{repository}/referrers/{digest}", repository, what=what, stream=True,
                                 headers={"Accept": OCI_INDEX}, ok=NO_REFERRERS_API + (200,),
                                 params={"artifactType": artifact_type} if artifact_type else None)
        if response.status_code == 200:
            raw = read_limited(response, MAX_MANIFEST_BYTES, what, self.timeout_s)
            try:
                index = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise RegistryError(f"registry {self.registry}: the {what} are not JSON") from None
        else:  # no referrers API (docker-registry 2.8 answers 404): the tag schema
            response.close()
            try:
                index, _, _ = self.get_manifest(repository, referrers_tag(digest))
            except RegistryNotFound:
                return []
            if index.get("mediaType") != OCI_INDEX:
                logger.warning("%s: tag %s is not a referrers index; ignoring it", repository, referrers_tag(digest))
                return []
        found = index.get("manifests") if isinstance(index, dict) else None
        return [m for m in found or [] if isinstance(m, dict) and isinstance(m.get("digest"), str)
                and (artifact_type is None or m.get("artifactType") == artifact_type)]

    def push_referrer(self, repository: str, manifest: dict[str, Any]) -> str:
        """PUT a manifest that has a ``subject`` (by digest, untagged); when the registry does not confirm
        the subject (``OCI-Subject``), add it to the referrers tag's index. Returns its digest."""
        subject = manifest["subject"]["digest"]
        raw = json.dumps(manifest, separators=(",", ":"), sort_keys=True).encode()
        media_type = manifest.get("mediaType", OCI_MANIFEST)
        digest, response = self._put_manifest(repository, sha256_digest(raw), raw, media_type)
        if response.headers.get("OCI-Subject") == subject:
            return digest
        tag = referrers_tag(subject)
        try:
            index, _, _ = self.get_manifest(repository, tag)
        except RegistryNotFound:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
        if index.get("mediaType") != OCI_INDEX or not isinstance(index.get("manifests"), list):
            raise RegistryError(f"{repository}:{tag} holds something other than a referrers index; not changing it")
        if all(m.get("digest") != digest for m in index["manifests"] if isinstance(m, dict)):
            descriptor = {"mediaType": media_type, "digest": digest, "size": len(raw),
                          "artifactType": manifest.get("artifactType") or manifest["config"]["mediaType"]}
            if manifest.get("annotations"):
                descriptor["annotations"] = manifest["annotations"]
            index["manifests"].append(descriptor)
            self.push_manifest(repository, tag, index)
        return digest

    def list_tags(self, repository: str) -> list[str]:
        """All tags of a repository, sorted (follows ``Link`` pagination)."""
        tags: list[str] = []
        url = f"/v2/{repository}/tags/list?n=1000"
        while url:
            response = self._request("GET", url, repository, what=f"repository {repository}")
            tags.extend(response.json().get("tags") or [])
            link = response.headers.get("Link", "")
            match = re.match(r"<([^>]+)>", link)
            url = urljoin(self.base_url, match.group(1)) if match else ""
        return sorted(set(tags))

    # --- blobs --------------------------------------------------------------------------------

    def has_blob(self, repository: str, digest: str) -> bool:
        try:
            self._request("HEAD", f"/v2/{repository}/blobs/{digest}", repository, what=f"blob {repository}@{digest}")
        except RegistryNotFound:
            return False
        return True

    def fetch_blob(self, repository: str, digest: str, *, max_bytes: int = MAX_MANIFEST_BYTES) -> bytes:
        """A small blob (config, signature) into memory, verified."""
        what = f"blob {repository}@{digest}"
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}", repository, what=what, stream=True)
        data = read_limited(response, max_bytes, what, self.timeout_s)
        if sha256_digest(data) != digest:
            raise DigestMismatch(f"{what} from {self.registry} hashes to {sha256_digest(data)}")
        return data

    def download_blob(self, repository: str, digest: str, dest: Path, progress: Progress | None = None,
                      *, expected_size: int | None = None) -> Path:
        """Download a blob to ``dest`` (verified, fsynced, atomically renamed), resuming a ``.part``."""
        dest = Path(dest)
        part = dest.with_suffix(dest.suffix + ".part")
        what = f"blob {repository}@{digest}"
        hasher = hashlib.sha256()
        offset = part.stat().st_size if part.is_file() else 0
        if expected_size is not None and offset > expected_size:
            part.unlink()
            offset = 0
        headers: dict[str, str] = {}
        if offset:
            with part.open("rb") as existing:
                for chunk in iter(lambda: existing.read(CHUNK_BYTES), b""):
                    hasher.update(chunk)
            headers["Range"] = f"bytes={offset}-"
        response = self._request("GET", f"/v2/{repository}/blobs/{digest}", repository, what=what,
                                 headers=headers, ok=(200, 206, 416), stream=True)
        if response.status_code == 416:  # nothing left to send: the .part should be complete
            response.close()
            total = offset
        else:
            if response.status_code == 200 and offset:
                logger.info("registry %s ignored the Range request for %s; downloading from 0", self.registry, what)
                hasher, offset = hashlib.sha256(), 0
            elif response.status_code == 206 and not response.headers.get("Content-Range", "").startswith(
                    f"bytes {offset}-"):
                response.close()
                raise RegistryError(f"{what}: registry {self.registry} answered the resume request with range "
                                    f"{response.headers.get('Content-Range')!r}, asked for bytes {offset}-")
            length = int(response.headers.get("Content-Length") or 0)
            total = offset + length if length else (expected_size or 0)
            if expected_size is not None and total > expected_size:
                response.close()
                raise RegistryError(f"{what}: registry announces {total} bytes, manifest says {expected_size}")
            logger.info("downloading %s from %s (from byte %d of %d)", what, self.registry, offset, total)
            done = offset
            with part.open("ab" if offset else "wb") as out, response:
                try:
                    for chunk in body_chunks(response, CHUNK_BYTES, self.timeout_s, what):
                        done += len(chunk)
                        if expected_size is not None and done > expected_size:
                            raise RegistryError(f"{what}: registry sent more than the {expected_size} bytes announced")
                        out.write(chunk)
                        hasher.update(chunk)
                        if progress is not None:
                            progress(done, total)
                except READ_ERRORS as exc:
                    out.flush()
                    raise RegistryError(f"{what}: download from {self.registry} interrupted at byte {done}: "
                                        f"{short_reason(exc)} (it resumes from there next time)") from None
                out.flush()
                os.fsync(out.fileno())
            total = done
        actual = "sha256:" + hasher.hexdigest()
        if actual != digest:
            part.unlink(missing_ok=True)
            raise DigestMismatch(f"{what} from {self.registry}: content hashes to {actual} ({total} bytes); "
                                 "the registry holds corrupt data or the digest is wrong")
        os.replace(part, dest)
        fsync_dir(dest.parent)
        return dest

    def push_blob(self, repository: str, path_or_bytes: Path | bytes, progress: Progress | None = None) -> str:
        """Upload a blob unless the registry has it; returns its digest."""
        if isinstance(path_or_bytes, (bytes, bytearray)):
            data = bytes(path_or_bytes)
            digest, size = sha256_digest(data), len(data)
            opener: Callable[[], IO[bytes]] = lambda: io.BytesIO(data)  # noqa: E731
        else:
            path = Path(path_or_bytes)
            hasher = hashlib.sha256()
            with path.open("rb") as f:
                for chunk in iter(lambda: f.read(CHUNK_BYTES), b""):
                    hasher.update(chunk)
            digest, size = "sha256:" + hasher.hexdigest(), path.stat().st_size
            opener = lambda: path.open("rb")  # noqa: E731
        if self.has_blob(repository, digest):
            logger.info("blob %s already in %s/%s", digest, self.registry, repository)
            if progress is not None:
                progress(size, size)
            return digest
        what = f"blob upload to {repository}"
        start = self._request("POST", f"/v2/{repository}/blobs/uploads/", repository, what=what, ok=(202,))
        location = urljoin(self.base_url, start.headers["Location"])
        with opener() as body:
            if size <= UPLOAD_CHUNK_BYTES:
                self._request("PUT", _with_digest(location, digest), repository, what=what, data=body.read(),
                              headers={"Content-Type": "application/octet-stream"}, ok=(201,))
            else:
                sent = 0
                while sent < size:
                    chunk = body.read(UPLOAD_CHUNK_BYTES)
                    reply = self._request("PATCH", location, repository, what=what, data=chunk, ok=(202,),
                                          headers={"Content-Type": "application/octet-stream",
                                                   "Content-Range": f"{sent}-{sent + len(chunk) - 1}"})
                    location = urljoin(self.base_url, reply.headers["Location"])
                    sent += len(chunk)
                    if progress is not None:
                        progress(sent, size)
                self._request("PUT", _with_digest(location, digest), repository, what=what, ok=(201,))
        if progress is not None:
            progress(size, size)
        logger.info("pushed %s (%d bytes) to %s/%s", digest, size, self.registry, repository)
        return digest


def referrers_tag(digest: str) -> str:
    """The OCI 1.1 referrers tag of a digest: ``sha256:<hex>`` -> ``sha256-<hex>``."""
    return digest.replace(":", "-", 1)


def is_attachment_tag(tag: str) -> bool:
    """Tags that hold attachments, not versions: referrers indexes and cosign's ``.sig``/``.att``/``.sbom``."""
    return bool(re.fullmatch(r"sha256-[0-9a-f]{64}(\.[A-Za-z0-9]+)?", tag))


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"
