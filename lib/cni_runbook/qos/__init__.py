"""Stage 04 QoS: pod bandwidth limits measured with iperf3, the CNI pods' own QoS, Antrea Egress shaping.

- :mod:`.bandwidth`: ``kubernetes.io/ingress-bandwidth`` / ``egress-bandwidth`` pairs, iperf3
  JSON parsing and the tolerance verdict against an unlimited baseline of the same run;
- :mod:`.audit`: priorityClassName, QoS class, requests and tolerations of the CNI's pods,
  with recommendations;
- :mod:`.antrea`: the Antrea Egress CR with ``spec.bandwidth`` and its feature-gate check.
"""

from .audit import audit_pods, cni_pods
from .bandwidth import BandwidthCheck, IperfResult, evaluate, parse_bandwidth, parse_iperf3

__all__ = ["BandwidthCheck", "IperfResult", "audit_pods", "cni_pods", "evaluate", "parse_bandwidth", "parse_iperf3"]
