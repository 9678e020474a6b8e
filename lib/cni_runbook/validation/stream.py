"""Streaming probes: every selected pair probed at a fixed interval for the length of an operation.

Use it around anything that may disrupt the network (a CNI upgrade, an agent restart, a
node drain) to learn, per pair, when traffic stopped and for how long::

    from cni_runbook.validation.probe import Probe
    from cni_runbook.validation.stream import stream

    probes = [Probe("ns/client-a", "10.233.65.7", 8080), Probe("ns/client-a", "10.233.66.9", 8081, "UDP")]
    with stream(kube, probes, interval_s=0.2, timeout_s=1.0, progress=print) as s:
        upgrade_the_cni()            # any operation; s.mark("agents rolled") notes a moment
    result = s.result()              # a StreamResult
    result.outages                   # DataFrame, one row per outage window (see below)
    result.nodes                     # DataFrame, one row per node: pairs, windows, total/max outage
    result.summary                   # one line for logs and the record
    fig = result.figure()            # matplotlib Figure: pairs x time (ok / failed / no sample)

How it works: one exec per source pod (through the API server, like :mod:`.probe`) runs a
busybox-``ash`` loop that starts a round of probes every ``interval_s`` (each probe runs in
the background, bounded by ``timeout_s``, so a dead destination does not slow the rounds
down) and prints one line per probe with its in-pod send and answer times (microseconds,
``$EPOCHREALTIME``). The loop ends within a round of a line from the operator (``STOP``)
or of the end of its stdin (the operator went away), or by itself after ``max_s``.
A round the pod starts late (the node's CPU was busy) runs at once when it is less than half
an interval late, and is skipped otherwise (a gap of two intervals or more).

Definitions (all times are the pods' clocks, as seconds since the stream started):

* a **sample** is one probe: ``sent`` (in-pod start), ``done`` (answer or give-up), ``ok``;
* an **outage window** of a pair starts at the ``sent`` time of its first failed sample
  after a good one and ends at the earliest ``done`` time of the good samples after it
  (the moment traffic is seen flowing again; a sample sent during the outage may answer
  late, after a retransmission, when later ones already did); a window still failing when the stream stops is
  ``open`` and ends one interval after its last sample. The resolution is the interval.
* a **gap** is time without samples (``max_gap_s`` per pair): the measurement's own
  health; with a 200 ms interval it should stay under two intervals.

Node attribution (``src_node``/``dst_node``) comes from the API (source pods' nodes,
destination pod IPs and node addresses); pass ``nodes={pod ref or IP: node}`` to override.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..kube.exec import ExecSession
from .probe import ASH_PRELUDE, PROBER_SHELL, CommandResult, Probe, check_probe, interpret, kill_after, probe_argv

Progress = Callable[[str], None]
SessionFactory = Callable[..., Any]

SAMPLE_TAG = "@@S"
START_TAG = "@@START"
DONE_TAG = "@@DONE"
STOP_LINE = "STOP\n"

#: The round loop. Stop: a reader job of its own (no children: nothing interrupts its
#: ``read``; stdin passed as fd 3, a background job's own stdin is /dev/null) waits for
#: the operator's line or stdin's end and signals the loop (USR1); the
#: loop looks at the flag once per round. Timing: ``busybox sleep`` to the next round
#: boundary. (Not ``read -t``: busybox ash restarts its timeout on every SIGCHLD, i.e. on
#: every finished probe, which stretched the rounds; and when the deadline passes
#: mid-line it drops the bytes read so far: a ``STOP`` caught by a late round's
#: millisecond-long ``read -t`` lost its ``S``, the loop never saw ``STOP`` and the
#: prober went on until ``max_s``.)
_LOOP = r"""
stop=
trap 'stop=1' USR1
me=$$
exec 3<&0
{ read -r _line <&3; kill -USR1 "$me"; } &
reader=$!
exec 3<&-
I=%(interval_us)d
t=$EPOCHREALTIME; start=${t%%.*}${t#*.}; end=$((start + %(max_us)d))
printf '@@START\t%%s\n' "$start"
k=0
while [ -z "$stop" ]; do
  round "$k"
  k=$((k+1)); next=$((start + k*I))
  t=$EPOCHREALTIME; now=${t%%.*}${t#*.}
  [ "$now" -lt "$end" ] || break
  if [ $((now - next)) -ge $((I / 2)) ]; then k=$(( (now - start) / I + 1 )); next=$((start + k*I)); fi
  [ -z "$stop" ] || break
  d=$((next - now)); f=$((d %% 1000000 + 1000000))
  [ "$d" -le 0 ] || busybox sleep "$((d / 1000000)).${f#1}"
done
[ -n "$stop" ] || kill "$reader" 2>/dev/null
wait
echo @@DONE
"""

_SAMPLER = r"""
s() {
  r=$1; i=$2; k=$3; shift 3
  t0=$EPOCHREALTIME
  o=$(busybox timeout -s KILL "$k" "$@" 2>&1 </dev/null); rc=$?
  t1=$EPOCHREALTIME
  [ -z "$o" ] || clean
  printf '@@S\t%s\t%s\t%s\t%s%s\t%s%s\t%s\n' "$r" "$i" "$rc" "${t0%.*}" "${t0#*.}" "${t1%.*}" "${t1#*.}" "$o"
}
"""


def stream_script(argvs: Sequence[Sequence[str]], interval_s: float, timeout_s: float, max_s: float,
                  max_output: int = 200) -> str:
    """The in-pod loop probing ``argvs`` (one per pair of this source pod) every ``interval_s``."""
    if interval_s <= 0 or max_s <= 0:
        raise ValueError("interval_s and max_s must be positive")
    body = [f"  s \"$1\" {i} {kill_after(timeout_s, argv)} {' '.join(shlex.quote(a) for a in argv)} &"
            for i, argv in enumerate(argvs)]
    parts = [ASH_PRELUDE.split("p() {")[0] % {"maxout": max_output, "pause": 0}, _SAMPLER,
             "round() {\n" + "\n".join(body or ["  :"]) + "\n}\n",
             _LOOP % {"interval_us": round(interval_s * 1e6), "max_us": round(max_s * 1e6)}]
    return "".join(parts)


@dataclass
class Sample:
    pair: int
    round: int
    sent: float  # epoch seconds (pod clock)
    done: float
    ok: bool | None
    latency_ms: float | None
    reason: str


def parse_sample(line: str) -> tuple[int, int, int, float, float, str] | None:
    """(round, index, rc, sent, done, output) of one ``@@S`` line, None when it is not one."""
    fields = line.rstrip("\r").split("\t", 6)
    if len(fields) < 7 or fields[0] != SAMPLE_TAG:
        return None
    _, r, i, rc, t0, t1, out = fields
    try:
        return int(r), int(i), int(rc), int(t0) / 1e6, int(t1) / 1e6, out.replace("\x1f", "\n").strip()
    except ValueError:
        return None


@dataclass
class Window:
    pair: int
    start: float
    end: float
    open: bool
    samples: int
    reason: str

    @property
    def duration(self) -> float:
        return self.end - self.start


def outage_windows(samples: Sequence[Sample], interval_s: float) -> list[Window]:
    """Outage windows of ONE pair's samples (see the module docstring); undetermined samples
    (``ok is None``: e.g. a missing tool) neither open nor close a window.

    A window ends at the earliest answer among the good samples that follow it: a sample
    sent during the outage may get through late (a SYN retransmitted a second later) while
    the next rounds' samples already answered."""
    out: list[Window] = []
    current: list[Sample] = []
    ordered = sorted(samples, key=lambda s: (s.round, s.sent))
    for index, smp in enumerate(ordered):
        if smp.ok is False:
            current.append(smp)
        elif smp.ok is True and current:
            end = smp.done
            for later in ordered[index + 1:]:
                if later.ok is False or later.sent > end:
                    break
                if later.ok is True:
                    end = min(end, later.done)
            out.append(_window(current, end, False))
            current = []
    if current:
        out.append(_window(current, current[-1].sent + interval_s, True))
    return out


def _window(failed: list[Sample], end: float, is_open: bool) -> Window:
    reason = Counter(s.reason for s in failed).most_common(1)[0][0]
    return Window(failed[0].pair, failed[0].sent, max(end, failed[0].sent), is_open, len(failed), reason)


def max_gap(samples: Sequence[Sample], start: float, stop: float) -> float:
    """The longest time without a sample of one pair, the stream's own start and stop included."""
    times = sorted([start, *(s.sent for s in samples), stop])
    return max((b - a for a, b in zip(times, times[1:])), default=0.0)


# --------------------------------------------------------------------------- result


@dataclass
class StreamResult:
    """What a stream saw. Times in the frames are seconds since ``started`` (epoch seconds)."""

    pairs: pd.DataFrame  # pair, label, src, target, port, protocol, src_node, dst_node, samples, ok, failed, max_gap_s
    series: pd.DataFrame  # pair, round, sent_s, done_s, ok, latency_ms, reason
    outages: pd.DataFrame  # pair, label, protocol, src_node, dst_node, start_s, end_s, duration_s, open, samples, reason
    nodes: pd.DataFrame  # node, pairs, pairs_with_outage, windows, total_outage_s, max_outage_s
    interval_s: float
    started: float
    stopped: float
    marks: list[tuple[float, str]] = field(default_factory=list)  # (seconds since start, label)
    errors: dict[str, str] = field(default_factory=dict)  # source pod -> why its stream failed

    @property
    def duration_s(self) -> float:
        return self.stopped - self.started

    @property
    def max_gap_s(self) -> float:
        return float(self.pairs["max_gap_s"].max()) if len(self.pairs) else 0.0

    @property
    def summary(self) -> str:
        n = len(self.pairs)
        hit = self.outages["pair"].nunique() if len(self.outages) else 0
        longest = float(self.outages["duration_s"].max()) if len(self.outages) else 0.0
        text = (f"{n} pairs every {self.interval_s * 1000:.0f} ms for {self.duration_s:.1f}s: "
                f"{len(self.series)} samples, {len(self.outages)} outage windows on {hit} pairs "
                f"(longest {longest:.2f}s), max gap {self.max_gap_s:.2f}s")
        if self.errors:
            text += f"; {len(self.errors)} source pods failed: " + "; ".join(f"{k}: {v}" for k, v in self.errors.items())
        return text

    def figure(self, title: str | None = None):
        return timeline_figure(self, title)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (pairs, outages, nodes, marks, summary; not the raw series)."""
        return {"summary": self.summary, "interval_s": self.interval_s, "started": self.started,
                "duration_s": self.duration_s, "max_gap_s": self.max_gap_s, "marks": self.marks,
                "errors": self.errors, "pairs": self.pairs.to_dict("records"),
                "outages": self.outages.to_dict("records"), "nodes": self.nodes.to_dict("records")}


def build_result(probes: Sequence[Probe], samples: Sequence[Sample], interval_s: float, started: float,
                 stopped: float, nodes: Mapping[str, str] | None = None, marks: Sequence[tuple[float, str]] = (),
                 errors: Mapping[str, str] | None = None) -> StreamResult:
    """Frames, windows and per-node summary from raw samples (pure: unit-testable)."""
    nodes = nodes or {}
    by_pair: dict[int, list[Sample]] = {i: [] for i in range(len(probes))}
    for smp in samples:
        by_pair.setdefault(smp.pair, []).append(smp)
    pair_rows, outage_rows = [], []
    for i, p in enumerate(probes):
        mine = by_pair.get(i, [])
        label = pair_label(p)
        src_node, dst_node = nodes.get(p.src, ""), nodes.get(p.target, "")
        pair_rows.append({"pair": i, "label": label, "src": p.src, "target": p.target, "port": p.port,
                          "protocol": p.protocol.upper(), "src_node": src_node, "dst_node": dst_node,
                          "samples": len(mine), "ok": sum(s.ok is True for s in mine),
                          "failed": sum(s.ok is False for s in mine),
                          "max_gap_s": round(max_gap(mine, started, stopped), 3)})
        for w in outage_windows(mine, interval_s):
            outage_rows.append({"pair": i, "label": label, "protocol": p.protocol.upper(), "src_node": src_node,
                                "dst_node": dst_node, "start_s": round(w.start - started, 3),
                                "end_s": round(w.end - started, 3), "duration_s": round(w.duration, 3),
                                "open": w.open, "samples": w.samples, "reason": w.reason})
    pairs = pd.DataFrame(pair_rows, columns=["pair", "label", "src", "target", "port", "protocol", "src_node",
                                             "dst_node", "samples", "ok", "failed", "max_gap_s"])
    outages = pd.DataFrame(outage_rows, columns=["pair", "label", "protocol", "src_node", "dst_node", "start_s",
                                                 "end_s", "duration_s", "open", "samples", "reason"])
    series = pd.DataFrame([{"pair": s.pair, "round": s.round, "sent_s": round(s.sent - started, 6),
                            "done_s": round(s.done - started, 6), "ok": s.ok, "latency_ms": s.latency_ms,
                            "reason": s.reason} for s in sorted(samples, key=lambda s: (s.pair, s.round))],
                          columns=["pair", "round", "sent_s", "done_s", "ok", "latency_ms", "reason"])
    return StreamResult(pairs, series, outages, node_summary(pairs, outages), interval_s, started, stopped,
                        list(marks), dict(errors or {}))


def node_summary(pairs: pd.DataFrame, outages: pd.DataFrame) -> pd.DataFrame:
    """Per node: the pairs touching it (as source or destination) and their outages."""
    rows = []
    names = sorted({n for n in [*pairs["src_node"], *pairs["dst_node"]] if n})
    for node in names:
        touching = pairs[(pairs["src_node"] == node) | (pairs["dst_node"] == node)]
        hit = outages[outages["pair"].isin(touching["pair"])]
        rows.append({"node": node, "pairs": len(touching), "pairs_with_outage": hit["pair"].nunique(),
                     "windows": len(hit), "total_outage_s": round(float(hit["duration_s"].sum()), 3),
                     "max_outage_s": round(float(hit["duration_s"].max()), 3) if len(hit) else 0.0})
    return pd.DataFrame(rows, columns=["node", "pairs", "pairs_with_outage", "windows", "total_outage_s",
                                       "max_outage_s"])


def pair_label(p: Probe) -> str:
    return p.name or f"{p.src} -> {p.target}:{p.port}/{p.protocol.upper()}"


def timeline_figure(result: StreamResult, title: str | None = None):
    """Pairs x time: green where a sample answered, red where it failed, grey where it could not
    be determined, white where there was no sample; outage windows outlined; marks as lines.
    Each mark is numbered at the top of the plot and named in the key below it (long step names
    rotated into the plot overlapped the x-axis label and the legend). Returns a matplotlib
    Figure (no pyplot state is touched)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    n = max(1, len(result.pairs))
    marks = list(result.marks)
    key_rows = 1 + (len(marks) + 1) // 2  # the colours, then the steps two per row
    fig = Figure(figsize=(11, 1.4 + 0.28 * n + 0.22 * key_rows), layout="constrained")
    ax = fig.add_subplot()
    colours = {True: "#2ca02c", False: "#d62728", None: "#bbbbbb"}
    width = result.interval_s
    for pair, rows in result.series.groupby("pair"):
        for ok, part in rows.groupby(rows["ok"].map(lambda v: v if v in (True, False) else None), dropna=False):
            ax.broken_barh([(t, width) for t in part["sent_s"]], (pair - 0.4, 0.8),
                           facecolors=colours.get(ok, colours[None]), linewidth=0)
    for row in result.outages.itertuples():
        ax.broken_barh([(row.start_s, max(row.duration_s, width))], (row.pair - 0.45, 0.9), facecolors="none",
                       edgecolors="black", linewidth=0.8)
    steps = []
    for i, (at, label) in enumerate(marks, 1):
        ax.axvline(at, color="#1f77b4", linestyle="--", linewidth=1)
        ax.annotate(str(i), (at, 1.0), xycoords=ax.get_xaxis_transform(), xytext=(2, -2), textcoords="offset points",
                    va="top", ha="left", fontsize=7, color="#1f77b4", fontweight="bold",
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "edgecolor": "none"})
        steps.append(Line2D([], [], color="#1f77b4", linestyle="--", linewidth=1, label=f"{i}  {label} ({at:.1f} s)"))
    ax.set_yticks(range(len(result.pairs)))
    ax.set_yticklabels([f"{r.label} [{r.src_node or '?'}->{r.dst_node or '?'}]" for r in result.pairs.itertuples()],
                       fontsize=7)
    ax.set_ylim(-0.6, n - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, max(result.duration_s, width))
    ax.set_xlabel("seconds since the stream started")
    ax.set_title(title or result.summary, fontsize=9)
    handles = [Patch(color=colours[True], label="answered"), Patch(color=colours[False], label="failed"),
               Patch(color=colours[None], label="undetermined"),
               Patch(facecolor="none", edgecolor="black", label="outage window")]
    fig.legend(handles=handles + steps, loc="outside lower center", fontsize=7, ncols=4 if not steps else 2,
               frameon=False)
    return fig


# --------------------------------------------------------------------------- running


class Stream:
    """Probes pairs continuously between :meth:`start` and :meth:`stop` (or as a context
    manager); :meth:`result` gives the :class:`StreamResult`. See the module docstring."""

    def __init__(self, kube, probes: Sequence[Probe], *, interval_s: float = 0.2, timeout_s: float = 1.0,
                 max_s: float = 3600.0, container: str | None = None, nodes: Mapping[str, str] | None = None,
                 progress: Progress | None = None, start_timeout_s: float = 60.0,
                 session_factory: SessionFactory = ExecSession) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")
        problems = [f"{p.name or p.src}: {why}" for p in probes if (why := check_probe(p))]
        if problems:
            raise ValueError("cannot stream these probes: " + "; ".join(problems[:5]))
        self.kube = kube
        self.probes = list(probes)
        self.interval_s, self.timeout_s, self.max_s = interval_s, timeout_s, max_s
        self.container = container
        self.given_nodes = dict(nodes or {})
        self.say = progress or (lambda _m: None)
        self.start_timeout_s = start_timeout_s
        self.session_factory = session_factory
        self.samples: list[Sample] = []
        self.errors: dict[str, str] = {}
        self.marks: list[tuple[float, str]] = []
        self.started = self.stopped = 0.0
        self._threads: list[threading.Thread] = []
        self._sessions: dict[str, Any] = {}
        self._ready: dict[str, threading.Event] = {}
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self.nodes: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> Stream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Stream:
        groups: dict[str, list[int]] = {}
        for i, p in enumerate(self.probes):
            groups.setdefault(p.src, []).append(i)
        self.nodes = {**resolve_nodes(self.kube, self.probes), **self.given_nodes}
        self.started = time.time()
        for src, indexes in groups.items():
            self._ready[src] = threading.Event()
            t = threading.Thread(target=self._run, args=(src, indexes), name=f"stream {src}", daemon=True)
            t.start()
            self._threads.append(t)
        deadline = time.monotonic() + self.start_timeout_s
        for src, ready in self._ready.items():
            ready.wait(max(0.0, deadline - time.monotonic()))
            if not ready.is_set():
                self.errors.setdefault(src, f"no probe round started within {self.start_timeout_s:g}s")
        self.started = time.time()  # every prober runs from here on: exec start-up is not a gap
        self.say(f"streaming {len(self.probes)} pairs from {len(groups)} pods every "
                 f"{self.interval_s * 1000:.0f} ms" + (f" ({len(self.errors)} pods failed)" if self.errors else ""))
        return self

    def mark(self, label: str) -> None:
        """Note a moment of the operation (shown on the timeline)."""
        self.marks.append((time.time() - self.started, label))

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = time.time()
        self._stopping.set()  # each reader writes STOP itself: one thread per TLS socket
        for t in self._threads:
            t.join(self.timeout_s + 20)
        for session in self._sessions.values():
            try:
                session.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.say(self.result().summary)

    def result(self) -> StreamResult:
        stopped = self.stopped or time.time()
        with self._lock:
            samples = [s for s in self.samples if self.started <= s.sent <= stopped]
        return build_result(self.probes, samples, self.interval_s, self.started, stopped, self.nodes, self.marks,
                            self.errors)

    # ------------------------------------------------------------------ one source pod

    def _run(self, src: str, indexes: list[int]) -> None:
        namespace, name = src.split("/", 1)
        argvs = [probe_argv(self.probes[i], self.timeout_s) for i in indexes]
        script = stream_script(argvs, self.interval_s, self.timeout_s, self.max_s)
        try:
            session = self.session_factory(self.kube, namespace, name, [*PROBER_SHELL, script],
                                           container=self.container)
        except Exception as exc:  # noqa: BLE001 - one pod's failure must not stop the others
            self.errors[src] = f"exec error: {_short(exc)}"
            self._ready[src].set()
            return
        self._sessions[src] = session
        buffer = ""
        done = False
        hard_stop = None
        try:
            while not done:
                if self._stopping.is_set() and hard_stop is None:
                    hard_stop = time.monotonic() + self.timeout_s + 15
                    try:
                        session.write(STOP_LINE)
                    except Exception as exc:  # noqa: BLE001 - the session may already be gone
                        self.errors.setdefault(src, f"stop: {_short(exc)}")
                if hard_stop is not None and time.monotonic() > hard_stop:
                    self.errors.setdefault(src, "stream did not end after STOP")
                    break
                out, _err = session.read(0.5)
                if not out and not session.is_open():
                    if not self._stopping.is_set():
                        self.errors.setdefault(src, f"stream ended early (exit {session.returncode})")
                    break
                buffer += out
                *lines, buffer = buffer.split("\n")
                for line in lines:
                    if line.startswith(START_TAG):
                        self._ready[src].set()
                    elif line.startswith(DONE_TAG):
                        done = True
                    else:
                        self._add(line, indexes)
        except Exception as exc:  # noqa: BLE001 - keep what was measured
            self.errors.setdefault(src, f"stream error: {_short(exc)}")
        finally:
            self._ready[src].set()

    def _add(self, line: str, indexes: list[int]) -> None:
        parsed = parse_sample(line)
        if parsed is None:
            return
        rnd, local, rc, sent, done, out = parsed
        if not 0 <= local < len(indexes):
            return
        pair = indexes[local]
        probe = self.probes[pair]
        res = interpret(probe, CommandResult(rc, 1, max(0.0, (done - sent) * 1000), out), self.timeout_s)
        with self._lock:
            self.samples.append(Sample(pair, rnd, sent, done, res.ok, res.latency_ms, res.reason))


def _short(exc: Exception) -> str:
    from ..kube.client import api_error_message

    return " ".join(str(api_error_message(exc)).split())[:300]


def resolve_nodes(kube, probes: Sequence[Probe]) -> dict[str, str]:
    """{source pod ref or target IP: node name}, best effort from the API (empty on errors)."""
    out: dict[str, str] = {}
    if kube is None or not hasattr(kube, "core"):
        return out
    try:
        for ns in sorted({p.src.split("/", 1)[0] for p in probes}):
            for pod in kube.core.list_namespaced_pod(ns).items:
                out[f"{ns}/{pod.metadata.name}"] = pod.spec.node_name or ""
                if pod.status.pod_ip:
                    out.setdefault(pod.status.pod_ip, pod.spec.node_name or "")
        for node in kube.core.list_node().items:
            for addr in node.status.addresses or []:
                out.setdefault(addr.address, node.metadata.name)
        for target in sorted({p.target for p in probes} - set(out)):
            pods = kube.core.list_pod_for_all_namespaces(field_selector=f"status.podIP={target}").items
            running = [p for p in pods if p.spec.node_name and not p.spec.host_network]
            if running:
                out[target] = running[0].spec.node_name
    except Exception:  # noqa: BLE001 - attribution is a nicety; the samples are what count
        pass
    return out


def stream(kube, probes: Sequence[Probe], **kwargs: Any) -> Stream:
    """A :class:`Stream` to use as ``with stream(kube, probes) as s: ...; s.result()``."""
    return Stream(kube, probes, **kwargs)


def mesh(pods: Mapping[str, str], port: int, protocol: str = "TCP", limit: int | None = None) -> list[Probe]:
    """Probes for every ordered pair of ``pods`` ({"namespace/name": IP}), at most ``limit``."""
    out = [Probe(src, ip, port, protocol, name=f"{src.split('/')[-1]}->{dst.split('/')[-1]} {protocol}/{port}")
           for src in pods for dst, ip in pods.items() if src != dst]
    return out[:limit] if limit is not None else out


__all__ = ["Stream", "StreamResult", "Sample", "Window", "stream", "mesh", "stream_script", "outage_windows",
           "build_result", "timeline_figure", "resolve_nodes", "max_gap", "parse_sample"]

