# prodready.vps developer entry points. Every target sets up what it needs.
#   make demo         converge playbooks/site.yml on a local container
#   make test         every CI gate: lint, sanity, unit, Molecule
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
VENV ?= .venv
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export ANSIBLE_COLLECTIONS_PATH := $(CURDIR)/.collections
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
# Scenarios to run (default: all); e.g. make molecule SCENARIOS="logrotate"
SCENARIOS ?=

.PHONY: help venv docker images lint sanity unit molecule test demo demo-clean build changelog

help:
	@echo "make demo        converge the whole site on the local container prodready-demo"
	@echo "make demo-clean  remove the demo container"
	@echo "make test        everything CI runs (lint, sanity, unit, molecule)"
	@echo "make lint | sanity | unit | molecule [SCENARIOS=...] | build | changelog"

venv: $(VENV)/.installed

$(VENV)/.installed: requirements/dev.txt
	@echo "==> virtualenv $(VENV) from requirements/dev.txt"
	@test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	@$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements/dev.txt 2>&1 \
	  | { grep -v -e '^WARNING: Location .* is ignored' -e '^$$' || true; }
	@touch $@

docker:
	@scripts/ensure-docker.sh

images: docker
	@scripts/build-base-image.sh 12
	@scripts/build-base-image.sh 13

lint: venv
	@scripts/gate-lint.sh

sanity: venv
	@scripts/gate-sanity.sh

unit: venv
	@scripts/gate-unit.sh

molecule: venv images
	@scripts/gate-molecule.sh $(SCENARIOS)

test: venv
	@scripts/test-all.sh

build: venv
	@ansible-galaxy collection build --force --output-path .build/

changelog: venv
	@antsibull-changelog release

demo: venv
	@scripts/ensure-docker.sh
	@scripts/build-base-image.sh 12
	@scripts/demo.sh

demo-clean:
	@docker rm -f prodready-demo >/dev/null 2>&1 && echo "removed prodready-demo" || echo "no prodready-demo container"
