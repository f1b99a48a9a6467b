#!/bin/sh
# Regenerate the pinned stacks from requirements*.in with uv (cross-platform from PyPI metadata):
#   packaging/compile-constraints.sh
# x86_64 (Debian 12 / Ubuntu 24.04, CI): Python 3.11, glibc 2.36. aarch64 (JetPack 6): Python 3.10, glibc 2.35.
set -eu
cd "$(dirname "$0")"
UV=${UV:-uv}
common="--no-config --index-url https://pypi.org/simple --no-header --annotation-style line"
$UV pip compile $common --python-platform x86_64-manylinux_2_36 --python-version 3.11 \
    requirements-x86_64.in -o constraints/x86_64-py311.txt
$UV pip compile $common --python-platform aarch64-manylinux_2_35 --python-version 3.10 \
    requirements-aarch64.in -o constraints/aarch64-py310.txt
