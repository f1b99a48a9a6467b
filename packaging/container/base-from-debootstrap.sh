#!/bin/sh
# A Debian 12 base image for the Containerfile, made from Debian's own archive (no image registry):
#   packaging/container/base-from-debootstrap.sh [MIRROR]     -> localhost/edge-debian-base:bookworm
# Needs debootstrap and podman (Debian packages), as root.
set -eu
MIRROR=${1:-http://deb.debian.org/debian}
ROOTFS=$(mktemp -d /tmp/edge-rootfs.XXXXXX)
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,adduser bookworm "$ROOTFS" "$MIRROR" >/dev/null
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/*
tar -C "$ROOTFS" -c . | podman import - localhost/edge-debian-base:bookworm
