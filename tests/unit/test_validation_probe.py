"""The probe engine without a cluster: scripts (run for real under busybox), parsing of recorded outputs,
batching, retries."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time

import pytest
from local_session import LocalSession

from cni_runbook.kube.exec import ExecResult
from cni_runbook.validation.probe import (
    Command,
    CommandResult,
    Probe,
    batch_timeout,
    build_script,
    interpret,
    parse_output,
    probe_argv,
    serve_script,
    ProberPool,
    run_batches,
    run_probes,
)

# Recorded from a real batch (busybox sh + agnhost connect + busybox ping), tabs kept.
RECORDED = (
    "@@P\t3\t0\t1\t1795707882366624\t1795707882379268\tPING 127.0.0.1 (127.0.0.1): 1000 data bytes\x1f"
    "1008 bytes from 127.0.0.1: seq=0 ttl=64 time=0.037 ms\x1f\x1f--- 127.0.0.1 ping statistics ---\x1f"
    "1 packets transmitted, 1 packets received, 0% packet loss\x1fround-trip min/avg/max = 0.037/0.037/0.037 ms\n"
    "@@P\t0\t0\t1\t1795707882365303\t1795707882430147\t\n"
    "@@P\t5\t1\t2\t1795707882637053\t1795707882658786\tREFUSED: read udp 127.0.0.1:58482->127.0.0.1:9: read: "
    "connection refused\n"
    "@@P\t1\t1\t2\t1795707882635672\t1795707882675269\tREFUSED\n"
    "@@P\t2\t1\t2\t1795707882644201\t1795707882688460\tDNS: lookup no-such-name.invalid on 10.96.0.10:53: "
    "no such host\n"
    "@@P\t4\t137\t2\t1795707882591738\t1795707885594904\t\n"
    "@@DONE\n"
)


def test_parse_recorded_batch():
    parsed = parse_output(RECORDED, expected=6)
    assert parsed.complete and not parsed.garbage
    assert sorted(parsed.lines) == [0, 1, 2, 3, 4, 5]
    assert parsed.lines[0].returncode == 0 and parsed.lines[0].elapsed_ms == pytest.approx(64.844)
    assert parsed.lines[1].attempts == 2
    assert "ping statistics" in parsed.lines[3].output and "\n" in parsed.lines[3].output


def test_interpret_recorded_batch():
    probes = [Probe("ns/a", "10.0.0.1", 8080), Probe("ns/a", "10.0.0.1", 1), Probe("ns/a", "no-such-name.invalid", 80),
              Probe("ns/a", "10.0.0.1", 0, "ICMP", size=1000), Probe("ns/a", "10.0.0.1", 80, "HTTP"),
              Probe("ns/a", "10.0.0.1", 9, "UDP")]
    parsed = parse_output(RECORDED, expected=6)
    res = [interpret(p, parsed.lines[i], 2.0) for i, p in enumerate(probes)]
    assert [r.ok for r in res] == [True, False, False, True, False, False]
    assert res[0].reason == "" and res[0].attempts == 1
    assert res[1].reason == "connection refused" and res[1].attempts == 2
    assert res[2].reason.startswith("dns failure: lookup no-such-name.invalid")
    assert res[3].latency_ms == pytest.approx(0.037)  # ping's RTT, not the process wall time
    assert res[4].reason.startswith("timeout")
    assert res[5].reason == "connection refused"


@pytest.mark.parametrize("garbage", [
    "",
    "random noise\nmore noise\n",
    "@@P\t0\t0\n",  # truncated line
    "@@P\tx\t0\t1\t1\t2\t\n",  # non-numeric index
    "@@P\t0\tzero\t1\t1\t2\tboom\n",  # non-numeric rc
    "\x00\x01binary\xff\n@@P",
])
def test_parse_garbage_gives_no_lines(garbage):
    parsed = parse_output(garbage, expected=3)
    assert parsed.lines == {} and not parsed.complete


def test_parse_partial_output_keeps_good_lines_and_ignores_out_of_range_and_duplicates():
    out = ("noise\n@@P\t0\t0\t1\t100\t1100\t\n@@P\t0\t1\t1\t100\t1100\tREFUSED\n"
           "@@P\t7\t0\t1\t1\t2\t\n@@P\t1\t1\t1\t5\t4\tTIMEOUT\n@@P\t2\t0\t1")
    parsed = parse_output(out, expected=3)
    assert sorted(parsed.lines) == [0, 1]
    assert parsed.lines[0].returncode == 0 and parsed.lines[0].elapsed_ms == 1.0  # first line wins
    assert parsed.lines[1].elapsed_ms is None  # clock went backwards: no latency rather than a wrong one
    assert not parsed.complete and parsed.garbage == ["noise", "@@P\t2\t0\t1"]


def test_probe_commands_use_busybox_applets_by_name():
    assert probe_argv(Probe("n/p", "10.0.0.1", 80), 2) == ("busybox", "nc", "-w", "2", "10.0.0.1", "80")
    assert probe_argv(Probe("n/p", "echo.ns", 80), 2) == ("/agnhost", "connect", "echo.ns:80", "--timeout=2s")
    assert probe_argv(Probe("n/p", "fd00::1", 53, "UDP"), 1.5)[2:] == ("[fd00::1]:53", "--timeout=1.5s",
                                                                       "--protocol=udp")
    assert probe_argv(Probe("n/p", "svc", 80, "HTTP", path="healthz"), 2)[-1] == "http://svc:80/healthz"
    assert probe_argv(Probe("n/p", "10.0.0.2", 0, "ICMP", size=1472), 2) == (
        "busybox", "ping", "-c", "1", "-W", "2", "-s", "1472", "10.0.0.2")
    assert probe_argv(Probe("n/p", "kubernetes.default", 0, "DNS", resolver="10.0.0.10"), 2) == (
        "busybox", "nslookup", "kubernetes.default", "10.0.0.10")
    with pytest.raises(ValueError):
        probe_argv(Probe("n/p", "x", 1, "QUIC"), 1)


def test_interpret_reasons():
    p = Probe("n/p", "10.0.0.1", 80)
    assert interpret(p, CommandResult(None, 0, None, "", "batch timed out after 12s"), 2).ok is None
    assert interpret(p, CommandResult(1, 1, 3.0, "OTHER: dial tcp 10.0.0.1:80: connect: no route to host"),
                     2).reason == "no route to host"
    assert interpret(p, CommandResult(1, 1, 3.0, "TIMEOUT"), 2).reason == "timeout: no answer within 2s"
    refused = "nc: can't connect to remote host (10.0.0.1): Connection refused"  # busybox nc, TCP to an IP
    assert interpret(p, CommandResult(1, 1, 1.0, refused), 2).reason == "connection refused"
    assert interpret(p, CommandResult(1, 1, 2000.0, "nc: timed out"), 2).reason == "timeout: no answer within 2s"
    assert interpret(p, CommandResult(127, 1, 3.0, "sh: /agnhost: not found"), 2).ok is None
    sctp = Probe("n/p", "10.0.0.1", 80, "SCTP")
    r = interpret(sctp, CommandResult(1, 1, 3.0, "OTHER: socket: protocol not supported"), 2)
    assert r.ok is None and r.reason.startswith("skipped: SCTP")
    http = Probe("n/p", "10.0.0.1", 80, "HTTP")
    assert interpret(http, CommandResult(1, 1, 1.0, "wget: server returned error: HTTP/1.1 503 Service Unavailable"),
                     2).reason == "http error: HTTP/1.1 503 Service Unavailable"
    icmp = Probe("n/p", "10.0.0.1", 0, "ICMP", size=9000)
    assert "MTU" in interpret(icmp, CommandResult(1, 1, 1.0, "ping: sendto: Message too long"), 2).reason
    assert interpret(icmp, CommandResult(1, 1, 1.0, "ping: permission denied (are you root?)"), 2).ok is None


def test_batch_timeout_grows_with_waves_and_attempts():
    cmds = [Command(("true",), 2.0, 1)] * 10
    assert batch_timeout(cmds, parallelism=32) < batch_timeout(cmds, parallelism=5)
    assert batch_timeout([Command(("true",), 2.0, 3)]) > batch_timeout([Command(("true",), 2.0, 1)])
    script = build_script(cmds, parallelism=4)
    assert script.count("\nwait\n") == 3  # after 4, after 8, and the final one
    assert script.rstrip().endswith("@@DONE")


class FakeExec:
    """Answers each exec from a table {(target, port): (rc, output)}; counts execs and concurrency."""

    def __init__(self, table, delay=0.05, fail_pods=(), hang_pods=()):
        self.table, self.delay, self.fail_pods, self.hang_pods = table, delay, set(fail_pods), set(hang_pods)
        self.calls = []
        self.active = 0
        self.max_active = 0
        self.lock = threading.Lock()

    def __call__(self, kube, namespace, pod, command, container=None, timeout=30):
        with self.lock:
            self.calls.append((pod, timeout))
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            time.sleep(self.delay)
            if pod in self.fail_pods:
                raise RuntimeError("pods \"%s\" not found" % pod)
            if pod in self.hang_pods:  # first exec: one line then silence; the retry: silence
                first = [c[0] for c in self.calls].count(pod) == 1
                return ExecResult("@@P\t0\t0\t1\t1\t2\t\n" if first else "", "", None)
            lines = []
            for i, line in enumerate(l for l in command[-1].splitlines() if l.startswith("p ")):
                words = line.removesuffix(" &").split()
                if "nc" in words:  # nc -w T IP PORT
                    host, port = words[-2], words[-1]
                else:
                    addr = next(a for a in words if ":" in a and not a.startswith("--"))
                    host, port = addr.rsplit(":", 1)
                rc, out = self.table.get((host, int(port)), (1, "TIMEOUT"))
                lines.append(f"@@P\t{i}\t{rc}\t1\t1000\t2000\t{out}")
            return ExecResult("\n".join(lines) + "\n@@DONE\n", "", 0)
        finally:
            with self.lock:
                self.active -= 1


def _cmds(targets, port=8080):
    return [Command(("nc", "-w", "2", t, str(port)), 2.0) for t in targets]


def test_run_batches_one_exec_per_pod_bounded_concurrency():
    pods = [f"ns/c{i}" for i in range(6)]
    targets = [f"10.0.0.{i}" for i in range(6)]
    fake = FakeExec({(t, 8080): (0, "") for t in targets[:5]})
    seen = []
    outcomes = run_batches(None, {p: _cmds(targets) for p in pods}, concurrency=3, exec_fn=fake,
                           progress=seen.append)
    assert len(fake.calls) == 6 and fake.max_active <= 3
    assert [r.returncode for r in outcomes["ns/c0"].results] == [0, 0, 0, 0, 0, 1]
    assert len(seen) == 6 and seen[-1].startswith("[6/6]")


def test_run_batches_exec_failure_and_batch_timeout_are_undetermined_and_retried_once():
    fake = FakeExec({("10.0.0.1", 80): (0, "")}, delay=0, fail_pods={"bad"}, hang_pods={"slow"})
    outcomes = run_batches(None, {"ns/bad": _cmds(["10.0.0.1"], 80), "ns/slow": _cmds(["10.0.0.1", "10.0.0.2"], 80),
                                  "ns/good": _cmds(["10.0.0.1"], 80)}, exec_retries=1, exec_fn=fake)
    assert outcomes["ns/bad"].results[0].returncode is None
    assert outcomes["ns/bad"].results[0].error.startswith("exec error: pods")
    slow = outcomes["ns/slow"].results
    assert slow[0].returncode == 0 and slow[1].returncode is None and slow[1].error.startswith("batch timed out")
    assert outcomes["ns/good"].results[0].returncode == 0
    calls = [c[0] for c in fake.calls]
    assert calls.count("bad") == 2 and calls.count("slow") == 2 and calls.count("good") == 1  # one bounded retry


BUSYBOX = shutil.which("busybox")


@pytest.mark.skipif(not BUSYBOX, reason="busybox (Debian busybox-static) is not installed")
def test_script_runs_under_busybox_sh(tmp_path):
    """The real script under busybox sh, with busybox applets for the probe commands."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in ("sh", "timeout", "awk", "tr", "tail", "adjtimex", "sleep", "printf", "echo", "false", "true"):
        (bindir / applet).symlink_to(BUSYBOX)
    cmds = [Command(("true",), 1, 1), Command(("false",), 1, 2), Command(("sleep", "5"), 1, 1),
            Command(("sh", "-c", "echo 'two\tlines'; echo second"), 1, 1)]
    started = time.monotonic()
    proc = subprocess.run([str(bindir / "sh"), "-c", build_script(cmds)], capture_output=True, text=True,
                          env={"PATH": str(bindir)}, timeout=30)
    assert time.monotonic() - started < batch_timeout(cmds)
    parsed = parse_output(proc.stdout, expected=4)
    assert parsed.complete, proc.stdout + proc.stderr
    assert parsed.lines[0].returncode == 0 and parsed.lines[0].elapsed_ms is not None
    assert parsed.lines[1].returncode == 1 and parsed.lines[1].attempts == 2
    assert parsed.lines[2].returncode == 137  # killed by `timeout -s KILL 3`
    assert parsed.lines[3].output == "two lines\nsecond"


@pytest.fixture()
def busybox_only(tmp_path):
    """A PATH with nothing but busybox (no awk, tr, tail, adjtimex: the prober must not need them)."""
    if not BUSYBOX:
        pytest.skip("busybox (Debian busybox-static) is not installed")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "busybox").symlink_to(BUSYBOX)
    return {"PATH": str(bindir)}


def test_long_lived_prober_under_busybox_ash(busybox_only):
    """The real serving loop: microsecond clock, retries, the hard kill, multi-line output folded,
    truncation to the tail, and several batches through one session."""
    from cni_runbook.validation.probe import PROBER_SHELL, _Prober

    prober = _Prober(LocalSession(None, "ns", "p", [*PROBER_SHELL, serve_script(max_output=50)], env=busybox_only),
                     parallelism=2)  # waves of two: the barriers between them are exercised too
    try:
        cmds = [Command(("busybox", "true"), 1, 1), Command(("busybox", "false"), 1, 2),
                Command(("busybox", "sleep", "5"), 1, 1),
                Command(("busybox", "seq", "1", "2"), 1, 1), Command(("busybox", "seq", "1", "500"), 1, 1)]
        started = time.monotonic()
        lines, error = prober.run(cmds, batch_timeout(cmds))
        assert error == "" and time.monotonic() - started < 8
        assert lines[0].returncode == 0 and 0 < lines[0].elapsed_ms < 1000
        assert lines[1].returncode == 1 and lines[1].attempts == 2
        assert lines[2].returncode == 137 and lines[2].elapsed_ms < 4500  # killed by `timeout -s KILL 3`
        assert lines[3].output == "1\n2"
        assert len(lines[4].output) <= 50 and lines[4].output.endswith("499\n500")
        with pytest.raises(ValueError):
            prober.run([Command(("busybox", "sh", "-c", "echo two words"), 1, 1)], 5)
        again, error = prober.run(cmds[:1], 5)
        assert error == "" and again[0].returncode == 0 and prober.batches == 2
    finally:
        prober.close()


def test_pool_probes_loopback_keeps_sessions_and_order(busybox_only, server):
    _, base = server
    port = int(base.rsplit(":", 1)[1])
    opened = []

    def factory(kube, namespace, pod, command, container=None):
        opened.append(pod)
        return LocalSession(kube, namespace, pod, command, env=busybox_only)

    probes = [Probe(f"ns/{src}", "127.0.0.1", p, proto, path="/") for src in ("a", "b", "c")
              for p, proto in ((port, "TCP"), (1, "TCP"), (port, "HTTP"))]
    probes.append(Probe("ns/a", "bad target;rm", 80))
    with ProberPool(session_factory=factory) as pool:
        first = pool(None, probes, timeout_s=1.0)
        second = pool(None, probes[:3], timeout_s=1.0)
    assert [r.probe for r in first] == probes
    assert [r.ok for r in first[:3]] == [True, False, True] and first[1].reason == "connection refused"
    assert all(r.latency_ms is not None and r.latency_ms < 1000 for r in first[:3])
    assert first[-1].ok is None and first[-1].reason.startswith("invalid target")
    assert [r.ok for r in second] == [True, False, True]
    assert sorted(opened) == ["a", "b", "c"]  # the second run reused the sessions


def test_pool_exec_failures_and_silent_probers_are_undetermined_and_bounded(busybox_only, monkeypatch):
    from cni_runbook.validation import probe as P

    monkeypatch.setattr(P, "BATCH_OVERHEAD_S", 0.5)
    calls = []

    def factory(kube, namespace, pod, command, container=None):
        calls.append(pod)
        if pod == "bad":
            raise RuntimeError('pods "bad" not found')
        if pod == "mute":  # a prober that never answers
            return LocalSession(kube, namespace, pod, [BUSYBOX, "sleep", "30"])
        return LocalSession(kube, namespace, pod, command, env=busybox_only)

    probes = [Probe("ns/bad", "127.0.0.1", 1), Probe("ns/mute", "127.0.0.1", 1), Probe("ns/good", "127.0.0.1", 1)]
    started = time.monotonic()
    results = run_probes(None, probes, timeout_s=0.5, attempts=2, session_factory=factory)
    assert time.monotonic() - started < 15
    assert results[0].ok is None and results[0].reason.startswith("exec error: pods")
    assert results[1].ok is None and results[1].reason.startswith("batch timed out")
    assert results[2].ok is False and results[2].reason == "connection refused"
    assert calls.count("bad") == 2 and calls.count("mute") == 2 and calls.count("good") == 1  # one bounded retry


def test_a_batch_arriving_in_pieces_while_probes_finish_loses_no_line(busybox_only):
    """busybox ash's ``read`` drops what it has read of a line when a signal interrupts it; the
    serving loop gets a SIGCHLD per finished probe. A batch split in the middle of a line, with
    probes ending while the rest is on its way, must still start every probe and confirm."""
    from cni_runbook.validation.probe import END_TAG, PROBER_SHELL

    session = LocalSession(None, "ns", "p", [*PROBER_SHELL, serve_script()], env=busybox_only)
    try:
        lines = [f"P {i} 1 1 0 3 busybox sleep 0.0{i % 10}" for i in range(12)] + ["E 7", ""]
        text = "\n".join(lines)
        cut = text.index("P 6 ") + 3  # in the middle of line 6
        session.write(text[:cut])
        time.sleep(0.4)  # the first probes end while the loop waits for the rest of line 6
        session.write(text[cut:])
        out, deadline = "", time.monotonic() + 10
        while f"{END_TAG}\t7" not in out and time.monotonic() < deadline:
            out += session.read(0.2)[0]
        parsed = parse_output(out, expected=12)
        assert f"{END_TAG}\t7" in out, out
        assert sorted(parsed.lines) == list(range(12)), out
        # Q ends the prober (the relay stops at Q, so the pipeline does not wait for stdin's end)
        session.write("Q\n")
        deadline = time.monotonic() + 5
        while session.is_open() and time.monotonic() < deadline:
            out += session.read(0.2)[0]
        assert not session.is_open()
    finally:
        session.close()


def test_until_reprobes_each_cell_in_the_pod_until_it_shows_its_wanted_outcome(busybox_only, server):
    """``until``: a port that opens 0.6 s into the run is re-probed until reachable (several
    attempts, waited >= 0.6 s on the pod's clock); a cell already as wanted takes one attempt;
    one that never gets there ends after ``until_s`` with its last outcome, not a verdict."""
    import socket

    _, base = server
    open_port = int(base.rsplit(":", 1)[1])
    late = socket.socket()
    late.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    late.bind(("127.0.0.1", 0))
    late_port = late.getsockname()[1]  # bound, not listening: refused until the timer starts it

    stop = threading.Event()

    def serve() -> None:  # accept and close at once, as the probed servers do on our EOF
        late.listen()
        late.settimeout(0.1)
        while not stop.is_set():
            try:
                late.accept()[0].close()
            except TimeoutError:
                continue

    timer = threading.Timer(0.6, serve)
    timer.daemon = True

    def factory(kube, namespace, pod, command, container=None):
        return LocalSession(kube, namespace, pod, command, env=busybox_only)

    probes = [Probe("ns/a", "127.0.0.1", late_port), Probe("ns/a", "127.0.0.1", open_port),
              Probe("ns/b", "127.0.0.1", 1), Probe("ns/b", "127.0.0.1", open_port)]
    try:
        with ProberPool(session_factory=factory) as pool:
            timer.start()
            started = time.monotonic()
            results = pool(None, probes, timeout_s=1.0, until=[True, True, False, False], until_s=1.5)
            wall = time.monotonic() - started
    finally:
        timer.cancel()
        stop.set()
        timer.join(1)
        late.close()
    late_r, open_r, closed_r, never_r = results
    assert late_r.ok is True and late_r.attempts >= 2 and late_r.waited_ms >= 550
    assert open_r.ok is True and open_r.attempts == 1 and open_r.waited_ms < 500
    assert closed_r.ok is False and closed_r.attempts == 1 and closed_r.reason == "connection refused"
    assert never_r.ok is True and never_r.attempts >= 3 and 1500 <= never_r.waited_ms < 2500
    assert wall < 5


def test_until_needs_one_wanted_outcome_per_probe():
    with pytest.raises(ValueError, match="until has 1 values for 2 probes"):
        ProberPool()(None, [Probe("ns/a", "127.0.0.1", 1)] * 2, until=[True])


def test_until_waits_count_from_the_pods_first_start_across_waves(busybox_only, server):
    """Waves of one probe: the second probe starts only after the first gave up (0.6 s); its
    ``waited_ms`` includes that wait (stage 04 reads it as "when this cell showed its value")."""
    _, base = server
    open_port = int(base.rsplit(":", 1)[1])

    def factory(kube, namespace, pod, command, container=None):
        return LocalSession(kube, namespace, pod, command, env=busybox_only)

    probes = [Probe("ns/a", "127.0.0.1", 1), Probe("ns/a", "127.0.0.1", open_port)]
    with ProberPool(session_factory=factory, parallelism=1) as pool:
        never, second = pool(None, probes, timeout_s=1.0, until=[True, True], until_s=0.6)
    assert never.ok is False and never.attempts >= 2 and never.waited_ms >= 600
    assert second.ok is True and second.attempts == 1 and second.waited_ms >= never.waited_ms
