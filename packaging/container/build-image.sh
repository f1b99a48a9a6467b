#!/bin/sh
# The edge-gateway container image, built from the Debian package and saved as an OCI archive:
#
#   packaging/container/build-image.sh --deb dist/edge-gateway_0.2.0-1_amd64.deb [--out dist]
#        [--base IMAGE | --rootfs DIR] [--tag localhost/edge-gateway:0.2.0] [--no-save]
#
# The base is an existing image (--base debian:bookworm-slim where a registry is reachable), or a Debian 12
# root folder imported as localhost/edge-debian-base:bookworm (--rootfs DIR, e.g. made by debootstrap);
# with neither, that base is made by base-from-debootstrap.sh unless it exists already. Needs podman, as
# root. podman reads its settings as usual; containers.conf beside this script suits machines without
# systemd (CONTAINERS_CONF=packaging/container/containers.conf, as `make dist` does).
# Prints the archive's path (or the tag with --no-save) on the last line.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
DEB="" OUT="dist" BASE="" ROOTFS="" TAG="" SAVE=1
while [ $# -gt 0 ]; do
    case "$1" in
        --deb) DEB=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --base) BASE=$2; shift 2 ;;
        --rootfs) ROOTFS=$2; shift 2 ;;
        --tag) TAG=$2; shift 2 ;;
        --no-save) SAVE=0; shift ;;
        *) echo "build-image.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
[ -f "$DEB" ] || { echo "build-image.sh: --deb FILE is required (packaging/deb/build.sh makes it)" >&2; exit 2; }
[ -z "$BASE" ] || [ -z "$ROOTFS" ] || { echo "build-image.sh: give --base or --rootfs, not both" >&2; exit 2; }
command -v podman >/dev/null || { echo "build-image.sh: podman not found (apt install podman)" >&2; exit 2; }
# edge-gateway_0.2.0-1_amd64.deb -> version 0.2.0-1, architecture amd64
NAME=$(basename "$DEB" .deb)
VERSION=$(echo "$NAME" | cut -d_ -f2)
ARCH=$(echo "$NAME" | cut -d_ -f3)
TAG=${TAG:-localhost/edge-gateway:$VERSION}

if [ -n "$ROOTFS" ]; then
    BASE=localhost/edge-debian-base:bookworm
    tar -C "$ROOTFS" -c . | podman import - "$BASE" >/dev/null
elif [ -z "$BASE" ]; then
    BASE=localhost/edge-debian-base:bookworm
    podman image exists "$BASE" || "$HERE/base-from-debootstrap.sh" >/dev/null
fi

CONTEXT=$(mktemp -d /tmp/edge-image.XXXXXX)
trap 'rm -rf "$CONTEXT"' EXIT
cp "$DEB" "$CONTEXT/edge-gateway.deb"
# --format docker: the OCI image format has no HEALTHCHECK
podman build -q --format docker -f "$HERE/Containerfile" --build-arg "BASE=$BASE" -t "$TAG" "$CONTEXT" >/dev/null
if [ "$SAVE" = 1 ]; then
    mkdir -p "$OUT"
    ARCHIVE="$OUT/edge-gateway_${VERSION}_${ARCH}.oci.tar"
    rm -f "$ARCHIVE"
    podman save -q --format oci-archive -o "$ARCHIVE" "$TAG"
    echo "$ARCHIVE"
else
    echo "$TAG"
fi
