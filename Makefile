# The two README commands: `make run` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
PARAMS  ?= params/lab.yaml
KERNEL  := $(VENV)/share/jupyter/kernels/cni-runbook/kernel.json
# LAB=1 runs the stages for real against the embedded lab once cni_runbook.lab is importable;
# otherwise `make run` plans only (renders and records every stage, touches nothing).
LAB     ?= 0
PLAN     = $(if $(filter 1,$(LAB)),$(shell $(PY) -c 'import cni_runbook.lab.cli' 2>/dev/null || echo --plan),--plan)

.PHONY: run test venv kernel

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(KERNEL): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name cni-runbook --display-name cni-runbook

kernel: $(KERNEL)

# Every stage against params/lab.yaml into a new outputs/<run-id>/ (ARGS="--set ..." to add).
run: kernel
	$(VENV)/bin/cni-runbook run --params $(PARAMS) $(PLAN) $(ARGS)

# Unit, notebook and lab tests; pytest's "no tests collected" (exit 5) is not a failure.
test: kernel
	$(PY) -m pytest $(or $(TESTS),tests); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc
