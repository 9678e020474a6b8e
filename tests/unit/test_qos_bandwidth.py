"""Bandwidth QoS logic: quantities, iperf3 JSON (recorded from iperf 3.12 on this machine's
loopback), the tolerance verdict and the pod pair."""

from __future__ import annotations

import pytest
from cni_runbook.qos import bandwidth as B

# `iperf3 -c 127.0.0.1 -p 5299 -t 1 -J` against `iperf3 -s -1`, iperf 3.12 (Debian 12), trimmed
# to the keys iperf3 always writes; the numbers are the recorded ones.
OK_JSON = """{
 "start": {
  "version": "iperf 3.12",
  "system_info": "Linux vm 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0 x86_64",
  "test_start": {
   "protocol": "TCP",
   "num_streams": 1,
   "blksize": 131072,
   "omit": 0,
   "duration": 1,
   "bytes": 0,
   "blocks": 0,
   "reverse": 0,
   "tos": 0,
   "target_bitrate": 0
  }
 },
 "intervals": [],
 "end": {
  "sum_sent": {
   "start": 0,
   "end": 1.030829,
   "seconds": 1.030829,
   "bytes": 1879572480,
   "bits_per_second": 14586880889.070835,
   "retransmits": 6,
   "sender": true
  },
  "sum_received": {
   "start": 0,
   "end": 1.031024,
   "seconds": 1.031024,
   "bytes": 1879048192,
   "bits_per_second": 14580053942.488245,
   "sender": true
  }
 }
}"""

# `iperf3 -c 127.0.0.1 -p 5298 -t 1 -J` with nothing listening (recorded verbatim)
ERROR_JSON = """{
\t"start":\t{
\t\t"connected":\t[],
\t\t"version":\t"iperf 3.12",
\t\t"system_info":\t"Linux vm 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0 x86_64"
\t},
\t"intervals":\t[],
\t"end":\t{
\t},
\t"error":\t"unable to connect to server: Connection refused"
}"""


@pytest.mark.parametrize(("text", "bps"), [("10M", 10e6), ("1.5G", 1.5e9), ("100K", 1e5), ("100k", 1e5),
                                           ("1Mi", 2**20), ("500", 500.0), (20_000_000, 2e7)])
def test_parse_bandwidth(text: str | int, bps: float) -> None:
    assert B.parse_bandwidth(text) == bps


@pytest.mark.parametrize("text", ["", "10 Mbit", "M", "-5M", "10X"])
def test_parse_bandwidth_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="not a bandwidth quantity"):
        B.parse_bandwidth(text)


def test_parse_recorded_iperf3_run() -> None:
    result = B.parse_iperf3(OK_JSON)
    assert result.ok and result.version == "iperf 3.12"
    assert result.sent_bps == pytest.approx(14586880889.07, rel=1e-9)
    assert result.received_bps == pytest.approx(14580053942.49, rel=1e-9)
    assert result.seconds == pytest.approx(1.0, abs=0.1)
    assert result.retransmits == 6


def test_parse_recorded_iperf3_error() -> None:
    result = B.parse_iperf3(ERROR_JSON)
    assert not result.ok and result.error == "unable to connect to server: Connection refused"
    assert result.version == "iperf 3.12"


@pytest.mark.parametrize("text", ["", "iperf3: error - unable to connect", "{}"])
def test_parse_iperf3_without_json_or_sums(text: str) -> None:
    result = B.parse_iperf3(text)
    assert not result.ok and result.error


@pytest.mark.parametrize(
    ("measured", "baseline", "status", "words"),
    [
        (9.4e6, 900e6, "passed", "within 8.0-12.0 Mbit/s; unlimited 900.0"),
        (10.5e6, 900e6, "passed", "within"),
        (850e6, 900e6, "failed", "above the limit's band 8.0-12.0 Mbit/s: the ingress-bandwidth annotation is not enforced"),
        (5e6, 900e6, "failed", "below the limit's band"),
        (9.5e6, 15e6, "failed", "inconclusive: the unlimited path carries only 15.0 Mbit/s"),
        (None, 900e6, "failed", "no measurement with the limit"),
        (9.5e6, None, "failed", "no unlimited baseline"),
    ],
)
def test_evaluate_tolerance_and_baseline(measured, baseline, status, words) -> None:
    check = B.evaluate("ingress", "10M", measured, baseline, 20)
    assert check.status == status
    assert words in check.message
    assert check.check()["name"] == "qos ingress-bandwidth 10M"


def test_evaluate_needs_clear_gap_to_baseline() -> None:
    # within tolerance of a 100M limit, but the unlimited path is only 1.5x faster
    check = B.evaluate("egress", "100M", 110e6, 230e6, 20)
    assert check.status == "passed"
    check = B.evaluate("egress", "100M", 119e6, 230e6, 20)
    assert check.status == "failed" and "not clearly below the unlimited 230.0 Mbit/s" in check.message


def test_row_reports_percent_of_limit() -> None:
    row = B.evaluate("egress", "10M", 9.5e6, 1e9, 20).row()
    assert row["of_limit_pct"] == 95.0 and row["measured_mbps"] == 9.5 and row["baseline_mbps"] == 1000.0


def test_pair_objects_annotate_only_the_limited_pods_and_mark_everything_as_the_runbooks() -> None:
    from cni_runbook.kube.leftovers import ROLE_ANNOTATION

    objects = B.pair_objects("qos", "img", "10M", "20M", "n2", "n1")
    pods = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Pod"}
    mark = {ROLE_ANNOTATION: B.ROLE}
    assert objects[0] == {"apiVersion": "v1", "kind": "Namespace", "metadata": {
        "name": "qos", "labels": {"app.kubernetes.io/managed-by": "cni-runbook"}, "annotations": mark}}
    assert set(pods) == {"iperf-server", "iperf-client", "iperf-server-limited", "iperf-client-limited"}
    assert pods["iperf-server-limited"]["metadata"]["annotations"] == {B.INGRESS_ANNOTATION: "10M", **mark}
    assert pods["iperf-client-limited"]["metadata"]["annotations"] == {B.EGRESS_ANNOTATION: "20M", **mark}
    assert pods["iperf-server"]["metadata"]["annotations"] == mark  # no bandwidth annotation
    assert pods["iperf-server"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "n2"}
    assert pods["iperf-client"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "n1"}


def test_only_configured_directions_are_measured() -> None:
    assert [r["measurement"] for r in B.plan_measurements("10M", None)] == ["baseline", "ingress"]
    assert {o["metadata"]["name"] for o in B.pair_objects("q", "i", None, "5M") if o["kind"] == "Pod"} == {
        "iperf-server", "iperf-client", "iperf-client-limited"}
