#!/bin/bash
# Build the edge-gateway Debian package: a self-contained virtualenv under /opt/edge-gateway, the
# systemd units, /etc/edge/gateway.toml as a conffile, man pages, completions and an `edge` system user.
#
#   packaging/deb/build.sh --wheel dist/edge_gateway-0.2.0-py3-none-any.whl [--extras opencv,litert]
#                          [--constraints packaging/constraints/x86_64-py311.txt] [--out dist] [--revision 1]
#
# Dependencies come from PyPI as published binary wheels, pinned by the constraints file (pip's own
# options apply: PIP_NO_INDEX=1 PIP_FIND_LINKS=wheelhouse/ builds offline). The virtualenv is made
# with the target's /usr/bin/python3 (Debian's), so the package depends on that Python minor version.
# The unit is installed, not enabled or started: configure /etc/edge/gateway.toml (or `edgectl init`),
# then `systemctl enable --now edge-gateway`. Checked with lintian (packaging/deb/lintian-overrides).
set -euo pipefail
# the package's venv must see only what pip puts in it (a PYTHONPATH would make pip skip our own wheel)
unset PYTHONPATH PYTHONHOME

WHEEL="" EXTRAS="opencv,litert" OUT="dist" REVISION="1"
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CONSTRAINTS="$REPO/packaging/constraints/$(uname -m)-py$(/usr/bin/python3 -c 'import sys; print("%d%d" % sys.version_info[:2])').txt"
while [ $# -gt 0 ]; do
    case "$1" in
        --wheel) WHEEL=$2; shift 2 ;;
        --extras) EXTRAS=$2; shift 2 ;;
        --constraints) CONSTRAINTS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --revision) REVISION=$2; shift 2 ;;
        *) echo "build.sh: unknown argument $1 (see the header of this script)" >&2; exit 2 ;;
    esac
done
[ -f "$WHEEL" ] || { echo "build.sh: --wheel FILE is required (make dist builds it)" >&2; exit 2; }
[ -f "$CONSTRAINTS" ] || { echo "build.sh: no pinned stack $CONSTRAINTS for this machine" >&2; exit 2; }
command -v dpkg-deb >/dev/null || { echo "build.sh: dpkg-deb not found" >&2; exit 2; }

PKG=edge-gateway
VERSION=$(basename "$WHEEL" | cut -d- -f2)
ARCH=$(dpkg --print-architecture)
PY=/usr/bin/python3
PYV=$($PY -c 'import sys; print("%d.%d" % sys.version_info[:2])')
PYNEXT=$($PY -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
OPT=/opt/$PKG
VENV=$OPT/venv
EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$REPO" log -1 --format=%ct 2>/dev/null || date +%s)}
STAGE=$(mktemp -d /tmp/edge-deb.XXXXXX)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/DEBIAN" "$OUT"

echo "building $PKG $VERSION-$REVISION ($ARCH, Python $PYV) with extras [$EXTRAS]"
$PY -m venv "$STAGE$VENV"
"$STAGE$VENV/bin/pip" install -q --disable-pip-version-check --no-compile --only-binary=:all: \
    -c "$CONSTRAINTS" "$(cd "$(dirname "$WHEEL")" && pwd)/$(basename "$WHEEL")[$EXTRAS]"
SP="$STAGE$VENV/lib/python$PYV/site-packages"
DATA="$SP/edge/_data"
[ -f "$DATA/systemd/edge-gateway.service" ] || { echo "build.sh: the wheel has no edge/_data (built without setup.py?)" >&2; exit 1; }

# Not needed at run time; pip would also let a device change what the package owns.
rm -rf "$STAGE$VENV"/bin/pip* "$SP"/pip "$SP"/pip-* "$STAGE$VENV"/bin/activate* "$STAGE$VENV"/bin/Activate.ps1
rm -rf "$SP"/tensorflow/include  # 287 MB of C++ headers, when TensorFlow is in the extras
# the venv's scripts and pyvenv.cfg name the folder they were made in: the staging prefix goes
grep -rlI --null "$STAGE" "$STAGE$VENV" | xargs -0 -r sed -i "s|$STAGE||g"
find "$STAGE$VENV" -name __pycache__ -type d -prune -exec rm -rf {} +  # compiled by postinst instead
# wheels ship +x on .py and metadata files: keep it only on ELF files and #! scripts
find "$SP" -type f -perm /111 -print0 | while IFS= read -r -d '' f; do
    case "$(head -c4 "$f" | od -An -c | tr -d ' ')" in "177ELF"|"#!"*) ;; *) chmod a-x "$f" ;; esac
done
find "$SP" -type f -name '*.so*' -perm /111 -exec chmod a-x {} +
find "$STAGE$VENV" -type d -empty -delete

# units (ExecStart names the venv's programs), config, man pages, completions, doc
for unit in "$DATA"/systemd/*.service; do
    name=$(basename "$unit")
    install -D -m644 "$unit" "$STAGE/lib/systemd/system/$name"
    sed -i -E "s|^ExecStart=(edge-gateway\|edge-model-server) |ExecStart=$VENV/bin/\1 |" "$STAGE/lib/systemd/system/$name"
done
install -D -m644 "$DATA/examples/gateway.toml" "$STAGE/etc/edge/gateway.toml"
for page in "$DATA"/man/*.1; do
    install -D -m644 "$page" "$STAGE/usr/share/man/man1/$(basename "$page")"
    gzip -9n "$STAGE/usr/share/man/man1/$(basename "$page")"
done
for script in "$DATA"/completion/*.bash; do
    install -D -m644 "$script" "$STAGE/usr/share/bash-completion/completions/$(basename "$script" .bash)"
done
for script in "$DATA"/completion/_*; do
    install -D -m644 "$script" "$STAGE/usr/share/zsh/vendor-completions/$(basename "$script")"
done
mkdir -p "$STAGE/usr/bin"
for program in edge-gateway edgectl edge-model-server; do ln -s "$VENV/bin/$program" "$STAGE/usr/bin/$program"; done
install -D -m644 "$HERE/lintian-overrides" "$STAGE/usr/share/lintian/overrides/$PKG"
DOC=$STAGE/usr/share/doc/$PKG
mkdir -p "$DOC"
cat > "$DOC/copyright" <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: edge-gateway
Source: https://pypi.org/project/edge-gateway/

Files: *
Copyright: 2026 The edge authors
License: Apache-2.0
 On Debian systems, the full text of the Apache License 2.0 can be found in
 /usr/share/common-licenses/Apache-2.0. The Python packages in /opt/$PKG/venv
 keep their own licence files next to them.
EOF
cat > "$STAGE/changelog" <<EOF
$PKG ($VERSION-$REVISION) unstable; urgency=medium

  * edge-gateway $VERSION: the daemon, edgectl and edge-model-server in a
    self-contained virtualenv.

 -- edge maintainers <edge@example.invalid>  $(date -R -u -d "@$EPOCH")
EOF
gzip -9nc "$STAGE/changelog" > "$DOC/changelog.Debian.gz" && rm "$STAGE/changelog"

cat > "$STAGE/DEBIAN/control" <<EOF
Package: $PKG
Version: $VERSION-$REVISION
Architecture: $ARCH
Maintainer: edge maintainers <edge@example.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
Depends: python3 (>= $PYV), python3 (<< $PYNEXT), adduser, libc6
Recommends: mosquitto-clients
Section: net
Priority: optional
Homepage: https://pypi.org/project/edge-gateway/
Description: camera classification gateway for edge boxes
 Captures frames from cameras (V4L2, RTSP, HTTP, files, GStreamer),
 classifies them with TensorFlow or LiteRT models kept current from an
 OCI registry, and reports results and health over MQTT 5. Includes
 edgectl (provisioning, fleet) and edge-model-server (a drop-in for
 tensorflow_model_server). Ships its own Python virtualenv in /opt.
EOF
echo /etc/edge/gateway.toml > "$STAGE/DEBIAN/conffiles"
cat > "$STAGE/DEBIAN/postinst" <<EOF
#!/bin/sh
set -e
if [ "\$1" = configure ]; then
    if ! getent passwd edge >/dev/null; then
        adduser --system --group --home /var/lib/edge --no-create-home --gecos "edge gateway" edge
    fi
    # V4L2 cameras and Jetson GPU device nodes are root:video
    if getent group video >/dev/null; then adduser --quiet edge video || true; fi
    install -d -m 0750 -o edge -g edge /var/lib/edge /var/lib/edge/models
    chgrp edge /etc/edge /etc/edge/gateway.toml && chmod 0750 /etc/edge && chmod 0640 /etc/edge/gateway.toml
    $VENV/bin/python -m compileall -q $VENV/lib >/dev/null 2>&1 || true
fi
# registered, not enabled or started: configure /etc/edge/gateway.toml first (edgectl init, edgectl doctor)
if [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
exit 0
EOF
cat > "$STAGE/DEBIAN/prerm" <<EOF
#!/bin/sh
set -e
if [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
    deb-systemd-invoke stop edge-gateway.service edge-model-server.service >/dev/null || true
fi
# the .pyc postinst wrote are not in the file list: remove them so dpkg can remove the folders
find $OPT -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
exit 0
EOF
cat > "$STAGE/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = purge ]; then rm -rf /var/lib/edge /etc/edge; fi
if [ -d /run/systemd/system ]; then systemctl --system daemon-reload >/dev/null || true; fi
exit 0
EOF
chmod 755 "$STAGE/DEBIAN/postinst" "$STAGE/DEBIAN/prerm" "$STAGE/DEBIAN/postrm"
(cd "$STAGE" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
find "$STAGE" -newermt "@$EPOCH" -exec touch -h -d "@$EPOCH" {} +
DEB="$OUT/${PKG}_${VERSION}-${REVISION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zxz -z${XZ_LEVEL:-1} --build "$STAGE" "$DEB" >/dev/null
echo "$DEB"
