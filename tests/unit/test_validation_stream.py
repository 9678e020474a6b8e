"""Streaming probes without a cluster: outage windows and summaries from samples, and the real
in-pod loop under busybox ash against a loopback listener that goes away and comes back."""

from __future__ import annotations

import shutil
import socket
import threading
import time

import pytest
from local_session import LocalSession

from cni_runbook.validation.probe import Probe
from cni_runbook.validation.stream import (
    Sample,
    build_result,
    max_gap,
    outage_windows,
    parse_sample,
    stream,
    stream_script,
)

BUSYBOX = shutil.which("busybox")


def _samples(pair: int, oks: list[bool | None], interval: float = 0.2, t0: float = 1000.0, answer: float = 0.001):
    return [Sample(pair, r, t0 + r * interval, t0 + r * interval + (answer if ok else 1.0), ok, 1.0,
                   "" if ok else "timeout") for r, ok in enumerate(oks)]


def test_outage_windows_start_at_first_failure_and_end_when_traffic_flows_again():
    smp = _samples(0, [True, True, False, False, False, True, True, False, False])
    windows = outage_windows(smp, 0.2)
    assert len(windows) == 2
    first, last = windows
    assert first.start == pytest.approx(1000.4) and first.end == pytest.approx(1001.001) and not first.open
    assert first.samples == 3 and first.reason == "timeout"
    assert last.open and last.start == pytest.approx(1001.4) and last.end == pytest.approx(1001.8)


def test_a_late_answer_closes_the_window_at_its_answer_time():
    smp = _samples(0, [True, False, False, True])
    smp[3].done = smp[3].sent + 0.9  # e.g. a SYN retransmit that got through
    (window,) = outage_windows(smp, 0.2)
    assert window.end == pytest.approx(smp[3].done)


def test_a_window_ends_at_the_first_answer_even_when_an_earlier_sample_answers_later():
    smp = _samples(0, [True, False, False, True, True, True, False, True])
    smp[3].done = smp[3].sent + 0.9  # sent during the outage, through after a retransmit
    first, second = outage_windows(smp, 0.2)
    assert first.end == pytest.approx(smp[4].done)  # round 4 answered 0.7 s before round 3 did
    assert second.end == pytest.approx(smp[7].done)  # the search stops at the next failure


def test_undetermined_samples_neither_open_nor_close_windows():
    assert outage_windows(_samples(0, [True, None, None, True]), 0.2) == []
    (w,) = outage_windows(_samples(0, [False, None, False, True]), 0.2)
    assert w.samples == 2


def test_max_gap_counts_the_stream_edges():
    smp = _samples(0, [True] * 5)
    assert max_gap(smp, 1000.0, 1000.8) == pytest.approx(0.2)
    del smp[2]
    assert max_gap(smp, 1000.0, 1000.8) == pytest.approx(0.4)
    assert max_gap([], 1000.0, 1003.0) == pytest.approx(3.0)


def test_build_result_frames_and_per_node_summary():
    probes = [Probe("ns/a", "10.0.0.2", 80, name="a->b"), Probe("ns/b", "10.0.0.1", 80, name="b->a"),
              Probe("ns/a", "10.0.0.3", 80, name="a->c")]
    nodes = {"ns/a": "n1", "ns/b": "n2", "10.0.0.1": "n1", "10.0.0.2": "n2", "10.0.0.3": "n3"}
    samples = (_samples(0, [True, False, False, True]) + _samples(1, [True] * 4)
               + _samples(2, [True, True, True, True]))
    res = build_result(probes, samples, 0.2, 1000.0, 1000.8, nodes, marks=[(0.3, "restart")])
    assert list(res.outages["label"]) == ["a->b"]
    row = res.outages.iloc[0]
    assert (row.src_node, row.dst_node, row.protocol) == ("n1", "n2", "TCP")
    assert row.start_s == pytest.approx(0.2) and row.duration_s == pytest.approx(0.401)
    by_node = res.nodes.set_index("node")
    assert by_node.loc["n3", "windows"] == 0 and by_node.loc["n2", "windows"] == 1
    assert by_node.loc["n1", "pairs"] == 3 and by_node.loc["n1", "pairs_with_outage"] == 1
    assert "1 outage windows on 1 pairs" in res.summary
    assert res.to_dict()["outages"][0]["label"] == "a->b"
    fig = res.figure()
    assert len(fig.axes[0].get_yticklabels()) == 3


def test_timeline_step_marks_overlap_neither_the_axis_label_nor_the_legend():
    """The steps are numbered inside the plot and named in the key below the x-axis label (long
    step names rotated at the marks ran over the x-axis label and the legend)."""
    import warnings

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    probes = [Probe("ns/a", "10.0.0.2", 80, name=f"p{i}") for i in range(6)]
    samples = sum((_samples(i, [True, False, False, True, True]) for i in range(6)), [])
    marks = [(0.1, "before: validation"), (0.3, "apply 5 object(s) up to DaemonSet kube-flannel-ds"),
             (0.35, "rollout DaemonSet kube-system/kube-flannel-ds"), (0.9, "after: validation")]
    res = build_result(probes, samples, 0.2, 1000.0, 1001.0, {"ns/a": "n1", "10.0.0.2": "n2"}, marks=marks)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "constrained_layout not applied" is a failure
        fig = res.figure(title="probe pairs during the operation")
        FigureCanvasAgg(fig).draw()
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    numbers = [t for t in ax.texts if t.get_text() in {"1", "2", "3", "4"}]
    assert len(numbers) == 4
    [legend] = fig.legends
    named = [t.get_text() for t in legend.get_texts()]
    assert "2  apply 5 object(s) up to DaemonSet kube-flannel-ds (0.3 s)" in named
    xlabel = ax.xaxis.label.get_window_extent(renderer)
    key = legend.get_window_extent(renderer)
    plot = ax.get_window_extent(renderer)
    assert not xlabel.overlaps(key) and key.y1 <= xlabel.y0
    for text in numbers:
        box = text.get_window_extent(renderer)
        assert plot.y0 <= box.y0 and box.y1 <= plot.y1 + 1  # inside the plot
        assert not box.overlaps(xlabel) and not box.overlaps(key)


def test_parse_sample_rejects_other_lines():
    assert parse_sample("@@S\t3\t1\t0\t1000000\t1002000\t") == (3, 1, 0, 1.0, 1.002, "")
    assert parse_sample("@@S\tx\t1\t0\t1\t2\t") is None
    assert parse_sample("@@START\t1") is None
    with pytest.raises(ValueError):
        stream_script([("busybox", "true")], 0, 1, 10)


class FlakyListener:
    """A loopback TCP port that accepts (and closes on EOF) until :meth:`down`, refuses until :meth:`up`."""

    def __init__(self):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.sock = None
        self.up()

    def up(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.listen(64)
        sock = self.sock
        threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            conn.close()

    def down(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept(): the port closes now
        except OSError:
            pass
        self.sock.close()


@pytest.mark.skipif(not BUSYBOX, reason="busybox (Debian busybox-static) is not installed")
def test_stream_under_busybox_finds_a_known_outage_within_the_interval():
    listener = FlakyListener()
    probes = [Probe("ns/a", "127.0.0.1", listener.port, name="flaky"), Probe("ns/b", "127.0.0.1", listener.port,
                                                                              name="flaky-too")]
    try:
        with stream(None, probes, interval_s=0.2, timeout_s=1, session_factory=LocalSession,
                    nodes={"ns/a": "n1", "ns/b": "n2", "127.0.0.1": "n0"}) as s:
            time.sleep(1.0)
            listener.down()
            went_down = time.time()
            s.mark("down")
            time.sleep(1.5)
            listener.up()
            came_back = time.time()
            s.mark("up")
            time.sleep(1.0)
    finally:
        listener.down()
    res = s.result()
    assert not res.errors
    assert len(res.outages) == 2, res.outages
    for row in res.outages.itertuples():
        assert not row.open and row.reason == "connection refused"
        assert abs(res.started + row.start_s - went_down) <= 0.25
        assert abs(res.started + row.end_s - came_back) <= 0.25
    assert res.max_gap_s <= 0.4  # no gap over two intervals
    assert set(res.nodes["node"]) == {"n0", "n1", "n2"}


def _loop(argvs, interval=0.2, max_s=30.0):
    from cni_runbook.validation.probe import PROBER_SHELL

    return LocalSession(None, "ns", "p", [*PROBER_SHELL, stream_script(argvs, interval, 1, max_s)])


def _drain(session, deadline_s):
    text, deadline = "", time.monotonic() + deadline_s
    while "@@DONE" not in text and time.monotonic() < deadline:
        out, _ = session.read(0.2)
        text += out
        if not out and not session.is_open():
            text += (session.proc.stdout.read() or b"").decode()
            break
    return text


@pytest.mark.skipif(not BUSYBOX, reason="busybox (Debian busybox-static) is not installed")
@pytest.mark.parametrize("how", ["split STOP", "end of stdin"])
def test_the_loop_stops_on_a_stop_that_arrives_in_pieces_and_on_the_end_of_its_input(how):
    """The stall of the streaming lab test: ``read -t`` in the round loop dropped the bytes of a
    line it had read when its deadline passed (``S`` of ``STOP``, then ``TOP`` meant nothing);
    the loop went on until max_s. Here ``S`` and ``TOP`` arrive 0.3 s apart (over a round)."""
    session = _loop([("busybox", "true")], max_s=30)
    try:
        time.sleep(0.7)
        stopped = time.monotonic()
        if how == "split STOP":
            session.write("S")
            time.sleep(0.3)
            session.write("TOP\n")
        else:
            session.end_input()
        text = _drain(session, 5)
        took = time.monotonic() - stopped
    finally:
        session.close()
    assert "@@DONE" in text and took < 1.5, (took, text[-300:])


@pytest.mark.skipif(not BUSYBOX, reason="busybox (Debian busybox-static) is not installed")
def test_rounds_keep_their_interval_while_probes_finish_between_them():
    """Probes ending in the middle of the wait between rounds must not stretch it (``read -t``
    restarted its timeout at every SIGCHLD: 0.2 s waits took 0.4 s)."""
    session = _loop([("busybox", "sleep", f"0.0{i}") for i in range(2, 10)], interval=0.2, max_s=2.2)
    try:
        text = _drain(session, 10)
    finally:
        session.close()
    sent: dict[int, int] = {}
    for line in text.splitlines():
        parsed = parse_sample(line)
        if parsed:
            sent[parsed[0]] = min(sent.get(parsed[0], 1 << 62), int(parsed[3] * 1e6))
    rounds = sorted(sent)
    assert len(rounds) >= 9, rounds  # 11 boundaries in 2.2 s; a loaded machine may skip one or two
    steps = [(sent[b] - sent[a]) / 1e6 / (b - a) for a, b in zip(rounds, rounds[1:])]
    assert max(steps) < 0.3, steps

