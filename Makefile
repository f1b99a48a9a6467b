# edge — top-level tasks. Everything installs what it needs (run as root on Debian/Ubuntu).
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO_SECONDS ?= 60
DEMO_DIR ?= build/demo
DIST ?= dist
APT_PACKAGES := mosquitto ffmpeg systemd docker-registry libsystemd-dev pkg-config gcc iproute2 chromium fonts-dejavu-core postgresql
# GStreamer `gst:` sources are tested with Debian's OpenCV (built with GStreamer) run by /usr/bin/python3, and
# loopback RTSP cameras are served by GStreamer's RTSP server (python3-gi, gir1.2-gst-rtsp-server-1.0)
APT_PACKAGES += python3-opencv python3-numpy gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-libav gstreamer1.0-tools gstreamer1.0-rtsp python3-gi python3-gst-1.0 gir1.2-gst-rtsp-server-1.0
# delivery: the .deb is checked with lintian and installed into a debootstrap root, the image built with podman
APT_PACKAGES += lintian debootstrap podman runc dpkg-dev
# promtool (tests check /metrics with it), unpacked from Debian's prometheus package: no service, no users
PROMTOOL := build/tools/prometheus/usr/bin/promtool
PYTEST_ARGS ?=

.PHONY: help system-deps venv venv-system-opencv demo demo-assets lint test test-fast bench chaos dist clean promtool

help:
	@echo "make demo   - run the gateway on the demo camera with a live results table (DEMO_SECONDS=$(DEMO_SECONDS))"
	@echo "make test   - install everything, run the linters (ruff, mypy, import contracts) and the test suite"
	@echo "make test-fast - linters and the tests not marked slow (under 2 minutes)"
	@echo "make bench  - print throughput ratios (gateway vs raw runtime vs naive pipeline)"
	@echo "make chaos  - fault-injection suite (root, network namespaces, <= 15 min)"
	@echo "make dist   - build the wheel, the Debian package and the container image into $(DIST)/"

system-deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	$(PY) -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv python3-pip"; \
	$(PY) -c 'import os, sysconfig; assert os.path.exists(sysconfig.get_paths()["include"] + "/Python.h")' \
	  >/dev/null 2>&1 || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
	@# the distribution's broker must not hold 1883 or run as a service we did not start
	@if command -v systemctl >/dev/null 2>&1 && systemctl is-active -q mosquitto 2>/dev/null; then systemctl stop mosquitto || true; fi

# The pinned stack for this machine (packaging/constraints/, made by packaging/compile-constraints.sh).
CONSTRAINTS := packaging/constraints/$(shell uname -m)-py$(shell $(PY) -c 'import sys; print("%d%d" % sys.version_info[:2])').txt
PIN = $(if $(wildcard $(CONSTRAINTS)),-c $(CONSTRAINTS),)

$(BIN)/.installed: pyproject.toml setup.py $(wildcard packaging/constraints/*.txt)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	@# the distribution was called `edge` before 0.2.0 (a name PyPI gives to another project)
	-$(BIN)/pip uninstall -q -y edge 2>/dev/null
	@$(if $(PIN),,echo "note: no pinned stack for this machine ($(CONSTRAINTS)); installing unpinned")
	$(BIN)/pip install -q $(PIN) -e '.[opencv,tf,litert,openvino,ffmpeg,systemd,demo,test]'
	@# OpenVINO's import counts usage under ~/intel for its telemetry; say no once
	-$(BIN)/opt_in_out --opt_out >/dev/null 2>&1
	@# the official TF Serving client, for wire-compatibility tests only; --no-deps because it
	@# requires the full `tensorflow` wheel, which tensorflow-cpu already provides as a module
	$(BIN)/pip install -q --no-deps 'tensorflow-serving-api==2.21.0'
	touch $@

venv: $(BIN)/.installed

# Install mode for boxes whose OpenCV comes from the system (Debian's python3-opencv or JetPack's, built with
# GStreamer): a venv that sees /usr/lib/python3/dist-packages, without the `opencv` extra (a pip OpenCV would
# shadow the system's) and with numpy < 2 (the ABI Debian 12's cv2 is built for). `make venv-system-opencv`
SYSTEM_VENV ?= .venv-system
venv-system-opencv: system-deps
	/usr/bin/python3 -m venv --system-site-packages $(SYSTEM_VENV)
	$(SYSTEM_VENV)/bin/pip install -q 'numpy<2' -e '.[litert,ffmpeg,systemd]'
	$(SYSTEM_VENV)/bin/python -c 'import cv2, camera; print("OpenCV", cv2.__version__, "from", cv2.__file__, "GStreamer:", camera.gstreamer_available())'

demo-assets: venv
	$(BIN)/python -m tools.build_demo_model --out $(DEMO_DIR)/models
	$(BIN)/python -m tools.build_demo_video --out $(DEMO_DIR)/camera.avi

demo: system-deps venv demo-assets
	$(BIN)/python -m tools.demo --seconds $(DEMO_SECONDS) --assets $(DEMO_DIR)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

$(PROMTOOL):
	@mkdir -p build/tools && rm -rf build/tools/prometheus build/tools/prometheus_*.deb
	cd build/tools && (apt-get download prometheus >/dev/null 2>&1 || (apt-get update -qq && apt-get download prometheus >/dev/null))
	dpkg-deb -x build/tools/prometheus_*.deb build/tools/prometheus && rm -f build/tools/prometheus_*.deb

promtool: $(PROMTOOL)

test: system-deps venv lint promtool
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

test-fast: system-deps venv lint promtool
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "not slow" $(PYTEST_ARGS)

bench: system-deps venv demo-assets
	$(BIN)/python bench/pipeline.py --assets $(DEMO_DIR)
	$(BIN)/python bench/model_server.py --assets $(DEMO_DIR)
	$(BIN)/python bench/console.py --assets $(DEMO_DIR)
	$(BIN)/python bench/fleet_rollout.py
	$(BIN)/python bench/fleet_export.py

chaos: system-deps venv
	$(BIN)/python -m tests.chaos.run --minutes 15

# The wheel (PEP 517 build, isolated), the .deb made from it (its stack pinned, from PyPI) and the container
# image made from the .deb (an OCI archive; the base comes from debootstrap where no image registry is reachable).
dist: system-deps venv
	rm -rf $(DIST) && mkdir -p $(DIST)
	$(BIN)/pip wheel --no-deps --disable-pip-version-check -q -w $(DIST) .
	packaging/deb/build.sh --wheel $(DIST)/edge_gateway-*.whl --out $(DIST)
	lintian --fail-on error,warning $(DIST)/edge-gateway_*.deb
	CONTAINERS_CONF=$(CURDIR)/packaging/container/containers.conf \
	  packaging/container/build-image.sh --deb $(DIST)/edge-gateway_*.deb --out $(DIST)
	@ls -l $(DIST)

clean:
	rm -rf $(VENV) build $(DIST) .pytest_cache
