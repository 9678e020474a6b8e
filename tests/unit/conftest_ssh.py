"""A real OpenSSH server on 127.0.0.1 for tests that run real Ansible over real SSH.

Import the fixture into a test module: ``from conftest_ssh import loopback_ssh  # noqa: F401``.

The server runs ``/usr/sbin/sshd -D`` with a throwaway host key and a throwaway ed25519 client
key, both created in the test's tmp directory; it accepts key-based root login on a free port of
127.0.0.1 only. It is always terminated at the end of the module, and the fixture skips (with the
reason) when the test is not root or sshd/ssh-keygen are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class LoopbackSSH:
    host: str
    port: int
    user: str
    private_key: Path
    workdir: Path

    def host_vars(self, **extra: object) -> dict[str, object]:
        """Ansible host vars that reach this server."""
        return {
            "ansible_host": self.host,
            "ansible_port": self.port,
            "ansible_user": self.user,
            "ansible_ssh_private_key_file": str(self.private_key),
            # root's ~/.bashrc on these machines puts pyenv shims first on PATH; interpreter
            # discovery would pick a shim that does not work in a non-interactive session.
            "ansible_python_interpreter": "/usr/bin/python3",
            **extra,
        }

    @property
    def envvars(self) -> dict[str, str]:
        """Ansible settings for tests: no shared control sockets, no known_hosts writes, and an SSH
        connect timeout for a loaded machine (Ansible's 10 s default let a slow loopback handshake
        pass for an unreachable host; a refused port still fails at once)."""
        return {
            "ANSIBLE_HOST_KEY_CHECKING": "False",
            "ANSIBLE_TIMEOUT": "60",
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o IdentitiesOnly=yes -o LogLevel=ERROR",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_REMOTE_TMP": str(self.workdir / "remote-tmp"),
            "ANSIBLE_LOCAL_TEMP": str(self.workdir / "local-tmp"),
        }


def global_ipv4() -> str | None:
    """A non-loopback IPv4 address of this machine, or None.

    Ansible's ansible_all_ipv4_addresses leaves out loopback, so Kubespray's "ip is a local
    address" check needs one of these as the ``ip`` var. Nothing is ever sent to it.
    """
    out = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            return parts[parts.index("inet") + 1].split("/")[0]
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> None:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cni-runbook-test", "-f", str(path)],
        check=True,
        capture_output=True,
    )


def _wait_for_banner(port: int, proc: subprocess.Popen[bytes], deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on {LOOPBACK}:{port} within {deadline_s}s")


@pytest.fixture(scope="module")
def loopback_ssh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoopbackSSH]:
    if os.geteuid() != 0:
        pytest.skip("real-SSH tests need root (sshd must switch users and accept root login)")
    if not Path(SSHD).exists() or shutil.which("ssh-keygen") is None or shutil.which("ssh") is None:
        pytest.skip(f"real-SSH tests need OpenSSH ({SSHD}, ssh, ssh-keygen)")
    work = tmp_path_factory.mktemp("sshd")
    for sub in ("remote-tmp", "local-tmp"):
        (work / sub).mkdir()
    host_key, client_key = work / "ssh_host_ed25519_key", work / "id_ed25519"
    _keygen(host_key)
    _keygen(client_key)
    authorized = work / "authorized_keys"
    authorized.write_text((work / "id_ed25519.pub").read_text())
    authorized.chmod(0o600)
    config = work / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"HostKey {host_key}",
                f"AuthorizedKeysFile {authorized}",
                f"PidFile {work / 'sshd.pid'}",
                "PermitRootLogin prohibit-password",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "StrictModes no",
                "Subsystem sftp internal-sftp",
                "LogLevel ERROR",
                "",
            ]
        )
    )
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    port = _free_port()
    log = (work / "sshd.log").open("wb")
    proc = subprocess.Popen(
        [SSHD, "-D", "-e", "-f", str(config), "-p", str(port), "-o", f"ListenAddress={LOOPBACK}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for_banner(port, proc)
        yield LoopbackSSH(LOOPBACK, port, "root", client_key, work)
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # sshd and any session children it started
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
