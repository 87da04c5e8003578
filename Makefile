# The two commands users need: `make demo` and `make test`.
# Both create .venv with pinned dependencies and link the collection first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt | cksum | cut -d' ' -f1)
LINK := .collections/ansible_collections/campusnet/smtpguard

.PHONY: setup demo test unit integration molecule lab lint clean bench ee

setup: $(STAMP) $(LINK)

$(STAMP): requirements.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "smtpguard needs Python 3.11 or newer (ansible-core 2.19); set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

$(LINK):
	@mkdir -p $(dir $(LINK))
	@ln -sfn ../../.. $(LINK)

demo: setup
	@PATH="$(CURDIR)/$(BIN):$$PATH" ./tools/demo.sh

test: setup
	$(BIN)/pytest -q tests/unit tests/integration
	$(MAKE) --no-print-directory molecule

unit: setup
	$(BIN)/pytest -q tests/unit

integration: setup
	$(BIN)/pytest -q tests/integration

# molecule runs the demo scenario from the repository root (extensions/molecule/demo).
molecule: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/molecule test -s demo

# Root only: tests that build network namespaces and run real daemons (tests/lab: the sample
# generator, the fault cases) next to the lab scenarios, which share one lab (tools/lab/lab.py)
# and one attack and drive the cycle through the lab's bastion (tools/lab/run_all.sh).
LAB_SCENARIOS := default check rollback
lab: setup
	LAB_SCENARIOS="$(LAB_SCENARIOS)" tools/lab/run_all.sh

# ruff (width 100) on the Python, ansible-lint's production profile on the YAML.
lint: setup
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-lint.txt
	$(BIN)/ruff check plugins tests tools
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/ansible-lint --offline --profile production \
		playbooks roles extensions/molecule inventory/demo

clean:
	rm -rf $(VENV) .collections demo-output .pytest_cache

# Speed and scale, side by side with wc, grep and fail2ban-regex; not part of test.
# Root: installs fail2ban with apt-get when missing and uses a network namespace for nftables.
bench: setup
	$(BIN)/python benchmarks/run.py

# The execution environment's build context for AWX (ansible-builder 3, pinned in
# requirements-ee.txt): the collection built into a tarball, then ee/context/ with its
# Containerfile. No container is built; see execution-environment.yml for the command.
EE_CONTEXT ?= ee/context
ee: setup
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-ee.txt
	rm -rf ee/build $(EE_CONTEXT)
	$(BIN)/ansible-galaxy collection build --force --output-path ee/build .
	mv ee/build/campusnet-smtpguard-*.tar.gz ee/build/campusnet-smtpguard.tar.gz
	$(BIN)/ansible-builder create --file execution-environment.yml --context $(EE_CONTEXT) \
		--output-filename Containerfile
