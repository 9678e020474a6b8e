"""The probe engine (v2): many connectivity probes, one in-pod prober per source pod.

A :class:`Probe` asks "can pod ``src`` reach ``target:port`` over ``protocol``?".
Probes run in the source pods, through ONE long-lived exec per source pod (through the
API server, so it works where the operator reaches nothing else): a small prober under
busybox ``ash`` (:data:`PROBER_SHELL`; the agnhost image has busybox: upstream's alpine
base, the lab's busybox-static) reads batches of probes on stdin, starts every probe of
a batch at once, each bounded by ``busybox timeout -s KILL``, and prints one line per
probe as it finishes::

    @@R<TAB>index<TAB>exit code<TAB>attempts<TAB>first start us<TAB>start us<TAB>end us<TAB>output (one line)

(start and end of the last attempt; ``first start`` of the first one)

then ``@@E<TAB>batch``. Python parses those lines (:func:`parse_output`). The batches
reach the loop through a relay job (see :data:`SERVE_LOOP`: busybox ash's ``read`` loses
a partly read line to a SIGCHLD). :meth:`ProberPool.commands` runs other in-pod commands
(e.g. reading a pod's MTU) on the same probers.
:class:`ProberPool` keeps the probers between runs (stage 04 probes dozens of matrices
on the same pods: exec start-up is paid once per pod, not per matrix);
:func:`run_probes` is one run with a pool of its own. Source pods are probed at once
(up to ``concurrency``), so a matrix costs its slowest probe plus, on the first run,
one exec start-up, not pods x exec start-up (v1 started an exec per pod and matrix,
eight at a time, and timed every probe with four extra processes; see
benchmarks/validation_suite.py).

What a probe costs in the pod is two forks and the probe tool itself: the clock is
ash's ``$EPOCHREALTIME`` (microseconds, no process), output clean-up is parameter
expansion. Streaming (probing pairs at a fixed interval around an operation) lives in
:mod:`.stream` and uses the same in-pod commands (:func:`probe_argv`).

Commands per protocol (inside the pod, always the busybox applet, because upstream
agnhost's PATH has OpenBSD ``nc`` and bind's ``nslookup`` in front of busybox's):

* TCP to an IP address: ``busybox nc -w T IP PORT`` (stdin /dev/null; exits once
  connected and the server closes on our EOF, which every TCP server probed here does).
* TCP to a name, UDP, SCTP: ``/agnhost connect HOST:PORT --timeout=Ts
  [--protocol=udp|sctp]`` (Go's resolver; busybox nc has no UDP); agnhost prints
  TIMEOUT / REFUSED / DNS / OTHER on failure. UDP needs a server that answers
  (agnhost netexec's UDP port echoes).
* HTTP: ``busybox wget -q -O /dev/null http://HOST:PORT/PATH`` (2xx/3xx passes).
* ICMP: ``busybox ping -c 1 -W T -s SIZE HOST`` (needs CAP_NET_RAW in the pod); its
  latency is the reported round-trip time. Linux sets don't-fragment on packets that
  fit the local MTU, so a ``size`` of MTU-28 is a path-MTU probe.
* DNS: ``busybox nslookup NAME [RESOLVER]`` (``target`` is the name to resolve,
  ``port`` is ignored); latency is the lookup's wall time.

Timing: ``latency_ms`` is the wall time of the command inside the pod (process start +
the probe), from ash's microsecond clock; ICMP probes report ping's own RTT.

Retries: a failed probe is retried inside the prober up to ``attempts`` times
(``attempts`` records how many it took); a batch whose exec failed or went silent is
re-run once on a fresh exec when ``attempts > 1``. Nothing waits without a bound: every
command runs under ``timeout -s KILL`` and every batch has a deadline
(:func:`batch_timeout`); a prober that missed one is closed, not reused.

"Until" runs (``ProberPool(..., until=[wanted outcome per probe], until_s=S)``): each probe
is re-run in its pod, ``RETRY_PAUSE_S`` apart, until it shows its wanted outcome or S seconds
have passed since its first attempt. Every cell converges on its own, so a wait for a change
(stage 04: a policy enforced, then removed) is never a round of whole matrices repeated behind
its slowest (blocked, timed-out) probe.

agnhost netexec's ``/dial`` through the API server's pod proxy was considered and not
taken (from its source, test/images/agnhost/netexec): it needs netexec in the source pod,
speaks only HTTP/UDP/SCTP to netexec servers (no plain TCP connect, ICMP or DNS), waits a
fixed 5 s for an answer whatever the probe timeout, and reports no latency.

:func:`run_batches` (the same machinery for arbitrary commands under plain ``sh``, e.g.
iperf3 in an image without busybox) serves the perf measurements.
"""

from __future__ import annotations

import ipaddress
import math
import re
import shlex
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from ..kube.exec import ExecResult, ExecSession, exec_in_pod

Progress = Callable[[str], None]

PROTOCOLS = ("TCP", "UDP", "SCTP", "HTTP", "ICMP", "DNS")
LINE_TAG = "@@P"  # a batch's line (plain sh, :func:`run_batch`)
PROBER_TAG = "@@R"  # the long-lived prober's line: @@P's fields and the first attempt's start
DONE_TAG = "@@DONE"
RETRY_PAUSE_S = 0.2
#: exec start-up and output transfer on top of the probe time
BATCH_OVERHEAD_S = 10.0
_SAFE_TARGET = re.compile(r"^[A-Za-z0-9_.:\-\[\]%]+$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./\-?=&%]*$")


@dataclass(frozen=True)
class Probe:
    src: str  # source pod "namespace/name"
    target: str  # IP or DNS name
    port: int
    protocol: str = "TCP"  # TCP | UDP | SCTP | HTTP | ICMP | DNS
    name: str = ""  # test name / label for grouping
    path: str = ""  # HTTP only: the URL path, e.g. "/healthz"
    size: int = 0  # ICMP only: payload bytes (0: ping's default 56)
    resolver: str = ""  # DNS only: the server to ask (IP); "" = the pod's resolv.conf

    @property
    def address(self) -> str:
        host = f"[{self.target}]" if ":" in self.target and not self.target.startswith("[") else self.target
        return f"{host}:{self.port}"


@dataclass
class ProbeResult:
    probe: Probe
    ok: bool | None  # None = could not be determined (exec failed, timeout of the batch)
    latency_ms: float | None
    attempts: int
    reason: str  # "" when ok, else why (refused, timeout, dns failure, exec error ...)
    output: str = ""  # the probe command's own last words (one line), for the curious
    #: "until" runs only: from the start of the run in the source pod (its first probe's first
    #: attempt) to this probe's last answer, on the pod's clock
    waited_ms: float | None = None


@dataclass(frozen=True)
class Command:
    """One command to run inside a pod as part of a batch (the engine's unit)."""

    argv: tuple[str, ...]
    timeout_s: float
    attempts: int = 1
    #: re-run until the command succeeds (True) or fails (False), for up to ``until_s``
    want: bool | None = None
    until_s: float = 0.0


@dataclass
class CommandResult:
    returncode: int | None  # None: no result line (batch incomplete or exec failed)
    attempts: int
    elapsed_ms: float | None
    output: str  # stdout+stderr of the last attempt, newlines turned into "\n" markers removed
    error: str = ""  # why there is no result (exec error, batch timeout)
    #: "until" commands: first attempt's start and last attempt's end (pod clock, epoch us)
    first_us: int | None = None
    last_us: int | None = None


@dataclass
class BatchOutcome:
    """What one exec of one pod returned (kept for diagnostics and the benchmark)."""

    pod: str
    results: list[CommandResult]
    exec_seconds: float
    execs: int = 1
    stderr: str = ""


# --------------------------------------------------------------------------- script


#: how the prober is started in a source pod (busybox ash: $EPOCHREALTIME, ${v//a/b}, read -t)
PROBER_SHELL = ("busybox", "ash", "-c")
SH_SHELL = ("sh", "-c")

_PRELUDE = r"""now() { adjtimex 2>/dev/null | awk '/tv_sec/{s=$2} /tv_usec/{u=$2} END{if (s != "") printf "%%d%%06d", s, u}'; }
p() {
  i=$1; n=$2; k=$3; shift 3; a=0
  while :; do
    a=$((a+1)); t0=$(now)
    o=$(timeout -s KILL "$k" "$@" 2>&1); rc=$?
    t1=$(now)
    [ "$rc" = 0 ] && break
    [ "$a" -ge "$n" ] && break
    sleep %(pause)s
  done
  [ -z "$o" ] || o=$(printf '%%s' "$o" | tr '\n\t\r' '\037  ' | tail -c %(maxout)d)
  printf '@@P\t%%s\t%%s\t%%s\t%%s\t%%s\t%%s\n' "$i" "$rc" "$a" "$t0" "$t1" "$o"
}
"""

#: the prober's functions (busybox ash; no process besides the probe command itself)
ASH_PRELUDE = r"""set -f
NL='
'
TAB='	'
US=$(printf '\037')
CR=$(printf '\r')
clean() {
  o=${o//$NL/$US}; o=${o//$TAB/ }; o=${o//$CR/ }
  [ ${#o} -le %(maxout)d ] || o=${o:$((${#o}-%(maxout)d))}
}
p() {
  i=$1; n=$2; w=$3; d=$4; k=$5; shift 5; a=0; f=$EPOCHREALTIME; f=${f%%.*}${f#*.}
  while :; do
    a=$((a+1)); t0=$EPOCHREALTIME
    o=$(busybox timeout -s KILL "$k" "$@" 2>&1 </dev/null); rc=$?
    t1=$EPOCHREALTIME
    case "$w$rc" in 10|0[1-9]*|?127) break ;; esac
    [ "$a" -lt "$n" ] || [ $((${t1%%.*}${t1#*.} - f)) -lt "$d" ] || break
    busybox sleep %(pause)s
  done
  [ -z "$o" ] || clean
  printf '@@R\t%%s\t%%s\t%%s\t%%s\t%%s%%s\t%%s%%s\t%%s\n' "$i" "$rc" "$a" "$f" "${t0%%.*}" "${t0#*.}" "${t1%%.*}" "${t1#*.}" "$o"
}
"""


def _launch_lines(commands: Sequence[Command], parallelism: int) -> list[str]:
    lines = []
    for index, cmd in enumerate(commands):
        argv = " ".join(shlex.quote(a) for a in cmd.argv)
        lines.append(f"p {index} {max(1, cmd.attempts)} {kill_after(cmd.timeout_s, cmd.argv)} {argv} &")
        if (index + 1) % parallelism == 0:
            lines.append("wait")
    lines.append("wait")
    lines.append(f"echo {DONE_TAG}")
    return lines


def build_script(commands: Sequence[Command], parallelism: int = 32, max_output: int = 2000) -> str:
    """The plain-``sh`` script that runs ``commands`` (in waves of ``parallelism``) and reports each."""
    lines = [_PRELUDE % {"pause": RETRY_PAUSE_S, "maxout": max_output}, *_launch_lines(commands, parallelism)]
    return "\n".join(lines) + "\n"


#: what a probe command may take beyond its own timeout before it is killed (process start-up:
#: a 50 MB agnhost under load needs seconds, seen on the lab with 20 of them starting at once)
KILL_MARGIN_S = 2.0
#: the same for agnhost (UDP, SCTP, TCP to names): a burst of 50 MB Go processes starting at once
#: on a loaded node took over 3 s on the lab (stage 04 probes 16 per pod at once)
AGNHOST_KILL_MARGIN_S = 10.0


def kill_after(seconds: float, argv: Sequence[str] = ()) -> str:
    """The whole seconds ``timeout -s KILL`` gets for a command of ``seconds`` (busybox: integers)."""
    margin = AGNHOST_KILL_MARGIN_S if argv and argv[0] == "/agnhost" else KILL_MARGIN_S
    return str(max(1, math.ceil(seconds + margin)))


def _fmt_seconds(seconds: float) -> str:
    # busybox tools take whole seconds
    return str(max(1, math.ceil(seconds)))


def _command_cost(c: Command) -> float:
    """The longest one command of a batch can take (its attempts, or its "until" time and a last try)."""
    one = int(kill_after(c.timeout_s, c.argv)) + RETRY_PAUSE_S
    return c.until_s + one if c.want is not None else c.attempts * one


def batch_timeout(commands: Sequence[Command], parallelism: int = 32) -> float:
    """The longest a batch can take before its exec is abandoned."""
    if not commands:
        return BATCH_OVERHEAD_S
    total = 0.0
    for start in range(0, len(commands), parallelism):
        wave = commands[start:start + parallelism]
        total += max(_command_cost(c) for c in wave)
    return total + BATCH_OVERHEAD_S


# --------------------------------------------------------------------------- parsing


@dataclass
class ParsedOutput:
    lines: dict[int, CommandResult] = field(default_factory=dict)
    complete: bool = False  # the @@DONE marker was seen
    garbage: list[str] = field(default_factory=list)  # lines that are not ours


def parse_output(stdout: str, expected: int | None = None) -> ParsedOutput:
    """Read the per-command lines of a batch; tolerant of garbage and truncation.

    A malformed or truncated ``@@P`` line is ignored (its command then counts as
    "no result"), as are indexes outside ``range(expected)``; a repeated index keeps
    the first line.
    """
    parsed = ParsedOutput()
    for raw in stdout.splitlines():
        line = raw.rstrip("\r")
        if line == DONE_TAG:
            parsed.complete = True
            continue
        until = line.startswith(PROBER_TAG + "\t")
        if not (until or line.startswith(LINE_TAG + "\t")):
            if line.strip():
                parsed.garbage.append(line[:200])
            continue
        fields = line.split("\t", 7 if until else 6)
        if len(fields) < (8 if until else 7):
            parsed.garbage.append(line[:200])
            continue
        first = fields.pop(4) if until else ""
        _, idx, rc, attempts, t0, t1, output = fields
        try:
            index, code, tries = int(idx), int(rc), int(attempts)
        except ValueError:
            parsed.garbage.append(line[:200])
            continue
        if index < 0 or (expected is not None and index >= expected) or index in parsed.lines:
            continue
        elapsed = None
        if t0.isdigit() and t1.isdigit() and int(t1) >= int(t0):
            elapsed = (int(t1) - int(t0)) / 1000.0
        span = (int(first), int(t1)) if first.isdigit() and t1.isdigit() and int(t1) >= int(first) else (None, None)
        parsed.lines[index] = CommandResult(code, tries, elapsed, output.replace("\x1f", "\n").strip(),
                                            first_us=span[0], last_us=span[1])
    return parsed


# --------------------------------------------------------------------------- execution


ExecFn = Callable[..., ExecResult]


def _split_pod(src: str) -> tuple[str, str]:
    if "/" not in src:
        raise ValueError(f"source pod {src!r} must be 'namespace/name'")
    namespace, name = src.split("/", 1)
    return namespace, name


def run_batch(kube, pod: str, commands: Sequence[Command], *, container: str | None = None,
              parallelism: int = 32, exec_retries: int = 0, exec_fn: ExecFn = exec_in_pod,
              max_output: int = 2000) -> BatchOutcome:
    """Run ``commands`` in ``pod`` ("namespace/name") under plain ``sh`` with one exec (plus
    bounded exec retries); ``max_output`` caps what each command reports (its tail is kept).
    """
    namespace, name = _split_pod(pod)
    make, shell = build_script, SH_SHELL
    script = make(commands, parallelism, max_output)
    timeout = batch_timeout(commands, parallelism)
    results: list[CommandResult | None] = [None] * len(commands)
    errors = ""
    stderr = ""
    started = time.monotonic()
    execs = 0
    for _ in range(1 + max(0, exec_retries)):
        todo = [i for i, r in enumerate(results) if r is None]
        if not todo:
            break
        if len(todo) != len(commands):  # re-run only what is still unknown
            sub = [commands[i] for i in todo]
            script, timeout = make(sub, parallelism, max_output), batch_timeout(sub, parallelism)
        execs += 1
        try:
            res = exec_fn(kube, namespace, name, [*shell, script], container=container, timeout=timeout)
        except Exception as exc:  # noqa: BLE001 - an API error of one pod must not sink the others
            errors = f"exec error: {_short_api_error(exc)}"
            continue
        stderr = res.stderr
        parsed = parse_output(res.stdout, expected=len(todo))
        for local, index in enumerate(todo):
            if local in parsed.lines:
                results[index] = parsed.lines[local]
        if res.returncode is None and not parsed.complete:
            errors = f"batch timed out after {timeout:.0f}s"
        elif res.returncode not in (0, None):
            errors = f"exec error: exit {res.returncode}: {_last_line(res.stderr or res.stdout)}"
        elif not parsed.complete:
            errors = "batch output incomplete"
        else:
            errors = "no result line for this probe"
    final = [r if r is not None else CommandResult(None, 0, None, "", errors or "no result") for r in results]
    return BatchOutcome(pod, final, time.monotonic() - started, execs, stderr)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def _short_api_error(exc: Exception) -> str:
    from ..kube.client import api_error_message

    message = api_error_message(exc)
    return " ".join(str(message).split())[:300]


def run_batches(kube, batches: dict[str, list[Command]], *, concurrency: int = 8, container: str | None = None,
                parallelism: int = 32, exec_retries: int = 0, progress: Progress | None = None,
                exec_fn: ExecFn = exec_in_pod, max_output: int = 2000) -> dict[str, BatchOutcome]:
    """Run every pod's batch, at most ``concurrency`` execs at a time."""
    outcomes: dict[str, BatchOutcome] = {}
    if not batches:
        return outcomes
    workers = max(1, min(concurrency, len(batches)))
    clients = _ThreadClients(kube) if workers > 1 else None

    def one(pod: str, cmds: list[Command]) -> BatchOutcome:
        client = clients.get() if clients else kube
        return run_batch(client, pod, cmds, container=container, parallelism=parallelism,
                         exec_retries=exec_retries, exec_fn=exec_fn, max_output=max_output)

    try:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(one, pod, cmds): pod for pod, cmds in batches.items()}
            for done, future in enumerate(as_completed(futures), 1):
                pod = futures[future]
                outcome = future.result()
                outcomes[pod] = outcome
                if progress:
                    finished = sum(r.returncode == 0 for r in outcome.results)
                    progress(f"[{done}/{len(batches)}] {pod}: {finished}/{len(outcome.results)} commands "
                             f"succeeded in {outcome.exec_seconds:.1f}s")
    finally:
        if clients:
            clients.close()
    return outcomes


class _ThreadClients:
    """One API client per worker thread.

    ``kubernetes.stream.stream`` swaps the ApiClient's ``request`` method for the
    duration of an exec and puts back what it found; two threads exec'ing through
    one ApiClient can leave it swapped for good (every later plain request then
    fails with "Handshake status 200 OK"). A client per thread avoids that.
    """

    def __init__(self, kube) -> None:
        self.kube = kube
        self.local = threading.local()
        self.made: list = []
        self.lock = threading.Lock()

    def get(self):
        if self.kube is None or not hasattr(self.kube, "kubeconfig"):
            return self.kube  # a test double
        client = getattr(self.local, "kube", None)
        if client is None:
            client = type(self.kube)(self.kube.kubeconfig, self.kube.context, self.kube.request_timeout)
            self.local.kube = client
            with self.lock:
                self.made.append(client)
        return client

    def close(self) -> None:
        for client in self.made:
            client.close()


# --------------------------------------------------------------------------- probes


def probe_argv(probe: Probe, timeout_s: float) -> tuple[str, ...]:
    """The in-pod argv of one probe (see the module docstring); busybox applets by name."""
    proto = probe.protocol.upper()
    secs = _fmt_seconds(timeout_s)
    if proto == "TCP" and _is_ip(probe.target):
        return ("busybox", "nc", "-w", secs, probe.target.strip("[]"), str(probe.port))
    if proto in ("TCP", "UDP", "SCTP"):
        argv = ["/agnhost", "connect", probe.address, f"--timeout={timeout_s:g}s"]
        if proto != "TCP":
            argv.append(f"--protocol={proto.lower()}")
        return tuple(argv)
    if proto == "HTTP":
        path = probe.path if probe.path.startswith("/") else "/" + probe.path
        # no -T: Debian's static busybox wget crashes with it; `timeout -s KILL` bounds it instead
        return ("busybox", "wget", "-q", "-O", "/dev/null", f"http://{probe.address}{path}")
    if proto == "DNS":
        argv = ["busybox", "nslookup", probe.target]
        return (*argv, probe.resolver) if probe.resolver else tuple(argv)
    if proto == "ICMP":
        argv = ["busybox", "ping", "-c", "1", "-W", secs]
        if probe.size:
            argv += ["-s", str(probe.size)]
        return (*argv, probe.target)
    raise ValueError(f"unknown protocol {probe.protocol!r}; expected one of {', '.join(PROTOCOLS)}")


def check_probe(probe: Probe) -> str:
    """Why a probe cannot be run ('' when it is fine)."""
    if probe.protocol.upper() not in PROTOCOLS:
        return f"unknown protocol {probe.protocol!r}"
    if not _SAFE_TARGET.match(probe.target or ""):
        return f"invalid target {probe.target!r}"
    if probe.resolver and not _SAFE_TARGET.match(probe.resolver):
        return f"invalid resolver {probe.resolver!r}"
    if probe.protocol.upper() not in ("ICMP", "DNS") and not 0 < probe.port < 65536:
        return f"invalid port {probe.port}"
    if not _SAFE_PATH.match(probe.path):
        return f"invalid HTTP path {probe.path!r}"
    if "/" not in probe.src:
        return f"source pod {probe.src!r} must be 'namespace/name'"
    return ""


_RTT = re.compile(r"time=([0-9.]+) ?ms")


def interpret(probe: Probe, result: CommandResult, timeout_s: float) -> ProbeResult:
    """Turn one command result into a ProbeResult with a readable reason."""
    out = result.output
    last = _last_line(out) if out else ""
    if result.returncode is None:
        return ProbeResult(probe, None, None, result.attempts, result.error or "no result", last)
    proto = probe.protocol.upper()
    latency = result.elapsed_ms
    if proto == "ICMP":
        rtt = _RTT.findall(out)
        if rtt:
            latency = float(rtt[-1])
    if result.returncode == 0:
        return ProbeResult(probe, True, latency, result.attempts, "", last)
    code = result.returncode
    ok: bool | None = False
    if code in (137, 143, 124):
        reason = f"timeout: no answer within {timeout_s:g}s (killed)"
    elif code == 127 or "applet not found" in out.lower():
        ok, reason = None, f"probe tool missing in the source image: {last}"
    elif proto in ("TCP", "UDP", "SCTP"):
        ok, reason = _agnhost_reason(proto, out, last, timeout_s)
    elif proto == "HTTP":
        ok, reason = _wget_reason(out, last, timeout_s)
    elif proto == "DNS":
        ok, reason = _nslookup_reason(out, last, timeout_s)
    else:
        ok, reason = _ping_reason(out, last, timeout_s)
    return ProbeResult(probe, ok, latency, result.attempts, reason, last)


def _is_ip(target: str) -> bool:
    try:
        ipaddress.ip_address(target.strip("[]"))
    except ValueError:
        return False
    return True


def _agnhost_reason(proto: str, out: str, last: str, timeout_s: float) -> tuple[bool | None, str]:
    """Failure reason of agnhost connect, or of busybox nc (TCP to an IP)."""
    text = out.strip()
    if text.startswith("nc:"):  # busybox: "nc: can't connect to remote host (IP): Connection refused"
        low = text.lower()
        if "refused" in low:
            return False, "connection refused"
        if "timed out" in low:
            return False, f"timeout: no answer within {timeout_s:g}s"
    if text.startswith("TIMEOUT") or "i/o timeout" in text:
        return False, f"timeout: no answer within {timeout_s:g}s"
    if text.startswith("REFUSED"):
        return False, "connection refused"
    if text.startswith("DNS"):
        return False, f"dns failure: {text.split(':', 1)[-1].strip()[:200]}"
    low = text.lower()
    if proto == "SCTP" and ("protocol not supported" in low or "not implemented" in low):
        return None, "skipped: SCTP is not supported here (kernel without the sctp module?)"
    if "no route to host" in low:
        return False, "no route to host"
    if "network is unreachable" in low:
        return False, "network is unreachable"
    if text.startswith("UNKNOWN"):
        return None, f"probe error: {last}"
    return False, f"error: {last or 'no output'}"


def _wget_reason(out: str, last: str, timeout_s: float) -> tuple[bool | None, str]:
    low = out.lower()
    if "timed out" in low:
        return False, f"timeout: no answer within {timeout_s:g}s"
    if "connection refused" in low:
        return False, "connection refused"
    if "bad address" in low:
        return False, f"dns failure: {last}"
    if "server returned error" in low:
        return False, f"http error: {last.split('error:', 1)[-1].strip()}"
    if "no route to host" in low:
        return False, "no route to host"
    return False, f"error: {last or 'no output'}"


def _nslookup_reason(out: str, last: str, timeout_s: float) -> tuple[bool | None, str]:
    low = out.lower()
    if "timed out" in low or "no servers could be reached" in low:
        return False, f"dns timeout: no answer within {timeout_s:g}s"
    if "nxdomain" in low or "can't find" in low:
        return False, f"dns failure: {last}"
    if "refused" in low:
        return False, "dns server refused the query"
    return False, f"dns error: {last or 'no output'}"


def _ping_reason(out: str, last: str, timeout_s: float) -> tuple[bool | None, str]:
    low = out.lower()
    if "message too long" in low:
        return False, "message too long: the packet exceeds the local interface MTU"
    if "permission denied" in low or "operation not permitted" in low:
        return None, "ping needs CAP_NET_RAW in the source pod"
    if "bad address" in low:
        return False, f"dns failure: {last}"
    if "frag needed" in low or "fragmentation needed" in low:
        return False, "fragmentation needed: a hop has a smaller MTU"
    if "0 packets received" in low:
        return False, f"no reply within {timeout_s:g}s"
    return False, f"error: {last or 'no output'}"


# --------------------------------------------------------------------------- the prober pool


#: the serving loop of a long-lived prober: "P index attempts want until_us kill argv..." starts
#: a probe, re-run until it succeeds (want 1) or fails (want 0), while it has attempts left or
#: until_us has not passed since its start (plain runs: want 1, until_us 0; "until" runs:
#: attempts 1, :meth:`ProberPool.__call__`'s ``until``),
#: "E batch" waits for the batch's probes and confirms, "Q" ends (so does stdin's end).
#: The lines reach the loop through a relay job that has no children: busybox ash's
#: ``read`` drops the part of a line it has read when a signal interrupts it, and the
#: loop, parent of every probe, gets a SIGCHLD per finished probe; a batch that reached the
#: pod in two chunks lost the line that straddled them (a probe never started, or the
#: batch's end never confirmed). The relay writes each line with one write (atomic in a
#: pipe), so the loop never waits in the middle of a line.
SERVE_LOOP = r"""
exec 3<&0
{ while IFS= read -r l <&3; do printf '%s\n' "$l"; case "$l" in Q*) break ;; esac; done; } | {
while read -r c i n w d k rest; do
  case "$c" in
    P) p "$i" "$n" "$w" "$d" "$k" $rest & ;;
    E) wait; printf '@@E\t%s\n' "$i" ;;
    Q) break ;;
  esac
done
wait
echo @@DONE
}
"""
END_TAG = "@@E"

SessionFactory = Callable[..., object]
#: probes running at once in one source pod (later ones wait for the wave before them)
PARALLELISM = 32
#: agnhost probes (UDP, SCTP, TCP to a name) at once in one pod: each starts a 50 MB Go binary,
#: and 16 per pod in nine pods at once overran even a 10 s kill margin on a loaded lab
HEAVY_PARALLELISM = 4


def _heavy(command: Command) -> bool:
    return bool(command.argv) and command.argv[0] == "/agnhost"


def serve_script(max_output: int = 300) -> str:
    """The long-lived prober: :data:`ASH_PRELUDE` + :data:`SERVE_LOOP` (batches arrive on stdin)."""
    return ASH_PRELUDE % {"pause": RETRY_PAUSE_S, "maxout": max_output} + SERVE_LOOP


class _Prober:
    """One source pod's long-lived prober session (used by one thread at a time)."""

    def __init__(self, session, parallelism: int = 64) -> None:
        self.session = session
        self.parallelism = max(1, parallelism)
        self.batches = 0
        self.used = time.monotonic()

    def run(self, commands: Sequence[Command], timeout: float) -> tuple[dict[int, CommandResult], str]:
        """Results by index and, when some are missing, why."""
        bad = [a for c in commands for a in c.argv if not a or any(ch.isspace() for ch in a)]
        if bad:  # the serving loop splits its lines on whitespace
            raise ValueError(f"prober arguments must be single words, got {bad[0]!r}")
        self.batches += 1
        batch = self.batches
        lines = []
        light = [i for i, c in enumerate(commands) if not _heavy(c)]
        heavy = [i for i, c in enumerate(commands) if _heavy(c)]
        # waves: light probes `parallelism` at once, then agnhost ones HEAVY_PARALLELISM at once
        for order, (group, width) in enumerate(((light, self.parallelism), (heavy, HEAVY_PARALLELISM))):
            for n, i in enumerate(group):
                if (n and n % width == 0) or (order and n == 0 and light):
                    lines.append("E 0")  # a wave barrier: wait for the probes started so far
                c = commands[i]
                spec = (1, int(c.want), round(c.until_s * 1e6)) if c.want is not None else (max(1, c.attempts), 1, 0)
                lines.append(f"P {i} {' '.join(map(str, spec))} {kill_after(c.timeout_s, c.argv)} {' '.join(c.argv)}")
        self.session.write("\n".join([*lines, f"E {batch}", ""]))
        deadline = time.monotonic() + timeout
        text, done, error = "", False, ""
        end = f"{END_TAG}\t{batch}"
        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                error = f"batch timed out after {timeout:.0f}s"
                break
            out, _err = self.session.read(min(left, 1.0))
            if out:
                text += out
                done = any(line.rstrip("\r") == end for line in text[-(len(end) + 200):].splitlines())
            elif not self.session.is_open():
                error = f"prober exited (exit {self.session.returncode})"
                break
        self.used = time.monotonic()
        parsed = parse_output(text, expected=len(commands))
        return parsed.lines, error

    def close(self) -> None:
        try:
            self.session.write("Q\n")
        except Exception:  # noqa: BLE001 - it may be gone already
            pass
        try:
            self.session.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


class ProberPool:
    """Long-lived probers, one exec session per source pod (and container), reused by every run.

    Call it like :func:`run_probes` (``pool(kube, probes, timeout_s=..., ...)``): the first
    run opens the sessions, later runs write their probes to them, so a stage that probes
    many matrices on the same pods (stage 04) pays exec start-up once. Sessions unused
    for ``idle_s`` are closed at the next run; :meth:`close` (or ``with``) closes them all;
    a session also ends when the operator's process does (its stdin closes).
    """

    def __init__(self, *, idle_s: float = 120.0, session_factory: SessionFactory = ExecSession,
                 max_output: int = 300, parallelism: int = PARALLELISM) -> None:
        self.idle_s = idle_s
        self.parallelism = parallelism
        self.session_factory = session_factory
        self.script = serve_script(max_output)
        self.probers: dict[tuple[str, str | None], _Prober] = {}
        self.lock = threading.Lock()
        self.opened = 0  # execs started (for the benchmark)

    def __enter__(self) -> ProberPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self.lock:
            probers, self.probers = list(self.probers.values()), {}
        for prober in probers:
            prober.close()

    def _get(self, kube, pod: str, container: str | None) -> _Prober:
        key = (pod, container)
        with self.lock:
            prober = self.probers.get(key)
        if prober is not None and prober.session.is_open():
            return prober
        namespace, name = _split_pod(pod)
        session = self.session_factory(kube, namespace, name, [*PROBER_SHELL, self.script], container=container)
        prober = _Prober(session, self.parallelism)
        with self.lock:
            self.probers[key] = prober
            self.opened += 1
        return prober

    def _drop(self, pod: str, container: str | None) -> None:
        with self.lock:
            prober = self.probers.pop((pod, container), None)
        if prober:
            prober.close()

    def _reap(self) -> None:
        now = time.monotonic()
        with self.lock:
            idle = [k for k, p in self.probers.items() if now - p.used > self.idle_s]
        for pod, container in idle:
            self._drop(pod, container)

    def _batch(self, kube, pod: str, commands: list[Command], container: str | None,
               exec_retries: int) -> BatchOutcome:
        started = time.monotonic()
        results: dict[int, CommandResult] = {}
        error = ""
        execs = 0
        for _ in range(1 + max(0, exec_retries)):
            todo = [i for i in range(len(commands)) if i not in results]
            if not todo:
                break
            execs += 1
            try:
                prober = self._get(kube, pod, container)
                sub = [commands[i] for i in todo]
                limit = (batch_timeout([c for c in sub if not _heavy(c)], self.parallelism)
                         + batch_timeout([c for c in sub if _heavy(c)], HEAVY_PARALLELISM))
                found, error = prober.run(sub, limit)
            except Exception as exc:  # noqa: BLE001 - an API error of one pod must not sink the others
                error = f"exec error: {_short_api_error(exc)}"
                self._drop(pod, container)
                continue
            for local, index in enumerate(todo):
                if local in found:
                    results[index] = found[local]
            if error:
                self._drop(pod, container)  # a timed-out or dead prober is not reused
            elif len(results) < len(commands):
                error = "no result line for this probe"
        final = [results.get(i) or CommandResult(None, 0, None, "", error or "no result") for i in range(len(commands))]
        return BatchOutcome(pod, final, time.monotonic() - started, execs)

    def commands(self, kube, batches: dict[str, list[Command]], *, concurrency: int = 32,
                 container: str | None = None) -> dict[str, BatchOutcome]:
        """Run arbitrary in-pod commands (single-word arguments; busybox applets by name) on
        the same probers, e.g. reading a pod's MTU before its matrix: no exec of their own."""
        self._reap()
        outcomes: dict[str, BatchOutcome] = {}
        if not batches:
            return outcomes
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(batches)))) as pool:
            futures = {pool.submit(self._batch, kube, pod, list(cmds), container, 0): pod
                       for pod, cmds in batches.items()}
            for future in as_completed(futures):
                outcomes[futures[future]] = future.result()
        return outcomes

    def __call__(self, kube, probes: list[Probe], *, timeout_s: float = 2.0, attempts: int = 1,
                 concurrency: int = 32, container: str | None = None,
                 progress: Callable[[str], None] | None = None,
                 until: Sequence[bool] | None = None, until_s: float = 0.0) -> list[ProbeResult]:
        """Run ``probes`` (any mix of protocols and ports); results in the order of ``probes``.

        With ``until`` (one wanted outcome per probe: True reachable, False not), each probe is
        re-run in its pod, ``RETRY_PAUSE_S`` apart, until it shows its wanted outcome or
        ``until_s`` has passed since its first attempt; its result is the last attempt's, with
        ``attempts`` and ``waited_ms`` (from the run's first start in that pod to this probe's
        last answer, on the pod's clock: a later wave's probes count their wait for the wave).
        Every cell converges on its own, so nobody waits for a round's slowest probe (stage 04's
        enforcement and restore waits); ``attempts`` is ignored."""
        if timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if until is not None and len(until) != len(probes):
            raise ValueError(f"until has {len(until)} values for {len(probes)} probes")
        self._reap()
        results: list[ProbeResult | None] = [None] * len(probes)
        batches: dict[str, list[Command]] = {}
        owners: dict[str, list[int]] = {}
        for i, probe in enumerate(probes):
            problem = check_probe(probe)
            if problem:
                results[i] = ProbeResult(probe, None, None, 0, problem)
                continue
            want = None if until is None else bool(until[i])
            batches.setdefault(probe.src, []).append(Command(probe_argv(probe, timeout_s), timeout_s,
                                                             max(1, attempts), want, max(0.0, until_s)))
            owners.setdefault(probe.src, []).append(i)
        if batches:
            workers = max(1, min(concurrency, len(batches)))
            retries = 1 if attempts > 1 and until is None else 0
            with ThreadPoolExecutor(max_workers=workers) as pool:
                futures = {pool.submit(self._batch, kube, pod, cmds, container, retries): pod
                           for pod, cmds in batches.items()}
                for done, future in enumerate(as_completed(futures), 1):
                    pod = futures[future]
                    outcome = future.result()
                    # one clock per pod: waits count from the pod's first start (later waves included)
                    base = min((r.first_us for r in outcome.results if r.first_us is not None), default=None)
                    for index, cmd_result in zip(owners[pod], outcome.results):
                        results[index] = interpret(probes[index], cmd_result, timeout_s)
                        if base is not None and cmd_result.last_us is not None:
                            results[index].waited_ms = (cmd_result.last_us - base) / 1000.0
                    if progress:
                        passed = sum(r.returncode == 0 for r in outcome.results)
                        progress(f"[{done}/{len(batches)}] {pod}: {passed}/{len(outcome.results)} probes "
                                 f"succeeded in {outcome.exec_seconds:.2f}s")
        return [r for r in results if r is not None]

    run = __call__


def run_probes(kube, probes: list[Probe], *, timeout_s: float = 2.0, attempts: int = 1,
               concurrency: int = 32, container: str | None = None,
               progress: Callable[[str], None] | None = None,
               session_factory: SessionFactory = ExecSession) -> list[ProbeResult]:
    """Run ``probes`` once, one prober exec per source pod; results in the order of ``probes``.

    ``concurrency`` bounds the source pods probed at once; probes of every protocol and port
    mix freely (a whole set of truth tables is one call). Several runs on the same pods:
    use a :class:`ProberPool`, which keeps the probers between runs.
    """
    with ProberPool(session_factory=session_factory) as pool:
        return pool(kube, probes, timeout_s=timeout_s, attempts=attempts, concurrency=concurrency,
                    container=container, progress=progress)


__all__ = ["Probe", "ProbeResult", "Command", "CommandResult", "BatchOutcome", "ProberPool", "run_probes",
           "run_batch", "run_batches", "build_script", "serve_script", "parse_output",
           "batch_timeout", "probe_argv", "interpret", "PROTOCOLS", "PROBER_SHELL"]
