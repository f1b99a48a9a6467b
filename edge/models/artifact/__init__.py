"""Model versions as OCI artifacts: packing, safe unpacking, signatures, and pulling by digest.

Artifact format (``application/vnd.edge.model.v1``)
---------------------------------------------------
A model version is one OCI image manifest (``application/vnd.oci.image.manifest.v1+json``,
``schemaVersion: 2``) with ``artifactType: application/vnd.edge.model.v1`` and:

- **config** blob ``application/vnd.edge.model.config.v1+json``: the JSON document that
  ``edgectl model package`` writes to ``assets.extra/model.json`` in the version folder::

      {"format": 1, "name": "classifier", "version": 3,
       "input": {"name": "image", "dtype": "uint8", "shape": [-1, 224, 224, 3]},
       "outputs": {"scores": {"dtype": "float32", "shape": [-1, 1000]}},
       "labels": 1000, "golden": 4, "created": "2026-01-31T12:00:00Z", "source": "<url or path>"}

  (``-1`` = any size; ``labels`` and ``golden`` are counts.)
- **one layer** ``application/vnd.edge.model.layer.v1.tar+gzip``: the version folder's contents
  with relative paths (``saved_model.pb``, ``variables/...``, ``assets.extra/...``). Deterministic:
  sorted, mtime 0, uid/gid 0, no user/group names, modes 0644/0755, regular files and
  directories only; the gzip header has no name and mtime 0. The same folder packs to the same digest.
- **annotations**: ``org.opencontainers.image.created``, ``org.opencontainers.image.source``,
  ``org.opencontainers.image.version``, ``dev.edge.model.name``, ``dev.edge.model.version``,
  ``dev.edge.model.input`` (compact JSON of ``input``).

Tags name versions (``3``) and channels (``stable``, ``canary``, ...); devices pull by digest.

**Signature** (optional): ed25519 over the manifest digest string (``sha256:<hex>``, ASCII),
stored under the sibling tag ``sha256-<hex>.sig`` (cosign-style naming) as an OCI manifest with
``artifactType: application/vnd.edge.model.signature.v1``, the empty config
(``application/vnd.oci.empty.v1+json``, ``{}``) and one layer
``application/vnd.edge.model.signature.v1+json``::

    {"digest": "sha256:...", "algorithm": "ed25519",
     "key_id": "<sha256 of the raw 32-byte public key, hex>", "signature": "<base64>"}

The signature manifest also carries ``subject`` (the signed manifest's descriptor), but
docker-registry 2.8 has no referrers API, so readers find signatures by the tag name only.

Unpacking (:func:`safe_extract`) refuses absolute paths, ``..``, links of any kind, device and
fifo members, duplicate members, corrupt or truncated gzip, and more than ``max_bytes`` of
content (counted while streaming, so a gzip bomb cannot fill the disk).
"""
