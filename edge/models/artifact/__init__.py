"""Model versions as OCI artifacts: layout, variants, signatures, channel statements, pulling by digest.

Artifact format (``application/vnd.edge.model.v1``)
---------------------------------------------------
A model version is one OCI image manifest (``application/vnd.oci.image.manifest.v1+json``,
``schemaVersion: 2``) with ``artifactType: application/vnd.edge.model.v1`` and:

- **one layer per file** of the version folder, its raw bytes, ``mediaType:
  application/vnd.oci.image.layer.v1.tar`` (what ``oras push`` gives a file) and
  ``annotations: {"org.opencontainers.image.title": "variables/variables.index"}`` (the path in the
  folder, ``/``-separated), so ``oras pull`` writes the folder back. A layer of
  ``application/vnd.oci.image.layer.v1.tar+gzip`` is a whole sub-folder packed by ``oras push DIR``
  (members under ``<title>/``). Edge 0.2's single ``application/vnd.edge.model.layer.v1.tar+gzip``
  layer (the whole folder, no title) is still read.
- **config** blob ``application/vnd.edge.model.config.v1+json``: the bytes of the folder's
  ``assets.extra/model.json`` (so its digest is that file layer's digest)::

      {"format": 1, "name": "classifier", "version": 3,
       "input": {"name": "image", "dtype": "uint8", "shape": [-1, 224, 224, 3]},
       "outputs": {"scores": {"dtype": "float32", "shape": [-1, 1000]}},
       "labels": 1000, "golden": 4, "created": "2026-01-31T12:00:00Z", "source": "<url or path>",
       "variant": {"platform": "linux/arm64", "accelerator": "litert"}}     # variants only

  (``-1`` = any size; ``labels`` and ``golden`` are counts.) ``oras push --artifact-type
  application/vnd.edge.model.v1 --config assets.extra/model.json:application/vnd.edge.model.config.v1+json
  <every file>`` from inside the folder writes the same artifact.
- **annotations**: ``org.opencontainers.image.created``, ``org.opencontainers.image.source``,
  ``org.opencontainers.image.version``, ``dev.edge.model.name``, ``dev.edge.model.version``,
  ``dev.edge.model.input`` (compact JSON of ``input``).

**Variants** (:mod:`.variants`): a version may be an OCI image index
(``application/vnd.oci.image.index.v1+json``, ``artifactType: application/vnd.edge.model.v1``)
whose entries carry ``platform`` (``os``/``architecture``/``variant``) and the annotation
``dev.edge.model.accelerator``; an entry without a platform is the portable variant.

Tags name versions (``3``) and channels (``stable``, ``canary``); devices pull by digest.

**Signature** (:mod:`.modelsig`, :mod:`.verification`): an OpenSSF model-signing bundle (Sigstore
bundle v0.3, DSSE, in-toto statement listing every file's sha256), made with an EC P-256 key,
attached to each model manifest as an OCI 1.1 referrer::

    {"artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
     "config": <the empty descriptor>, "subject": <the model manifest's descriptor>,
     "layers": [{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json", "digest": ..., "size": ...}],
     "annotations": {"dev.sigstore.bundle.content": "dsse-envelope",
                     "dev.sigstore.bundle.predicateType": "https://model_signing/signature/v1.0", ...}}

listed under the referrers tag ``sha256-<hex>`` where the registry has no referrers API (docker
distribution 2.8). Edge 0.2's ed25519 signature under the ``sha256-<hex>.sig`` tag
(:mod:`.legacy`) is verified for one more release by devices configured with an ed25519 key;
cosign's signatures under that tag are ignored.

**Channel statements** (:mod:`.channel`): signed, expiring statements that a channel tag points at
a digest, attached to the tagged manifest; devices report a channel whose newest statement expired.

Unpacking (:mod:`.assemble`, :func:`.tarsafe.safe_extract`) refuses absolute paths, ``..``, links,
device and fifo members, duplicates, corrupt or truncated gzip, and more than ``max_bytes`` of
content (counted while streaming, so a gzip bomb cannot fill the disk).
"""
