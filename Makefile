# The two commands every newcomer and CI use: `make up` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: install up down test lint bench bench-toolbox bench-lifecycle template

install:
	@bash install/deps.sh

# RUNTIME=auto|oci|qemu|cloud-hypervisor picks what runs sandboxes (docs/runtimes.md).
up: install
	@$(VENV)/bin/dnah up $(if $(PAYMENTS),--payments $(PAYMENTS)) $(if $(RUNTIME),--runtime $(RUNTIME)) $(ARGS)

down:
	@$(VENV)/bin/dnah down

template: install
	@$(VENV)/bin/dnah template build

test: install
	@$(VENV)/bin/dnah template build --vm
	@bash tests/devnet/node/install.sh >/dev/null
	@$(PY) -m pytest -n 2 $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; exit 1; fi; exit $$rc

lint: install
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy

bench: install
	@$(PY) -m load.bench_core $(ARGS)

bench-toolbox: install
	@$(PY) -m load.bench_toolbox $(ARGS)

bench-lifecycle: install
	@$(PY) -m load.bench_lifecycle $(ARGS)
