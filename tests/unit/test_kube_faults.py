"""The Kubernetes client against a scripted HTTP API server on 127.0.0.1: request timeouts, retries
across a restart, and the run lock's Lease protocol.

The server is a test double of kube-apiserver (the lab's real one is exercised by
tests/lab/test_reliability.py): it speaks plain HTTP, keeps Leases and Namespaces in memory,
and can be told to hang or to answer 503 for a while.
"""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from cni_runbook.kube import Kube
from cni_runbook.kube import lock as runlock
from cni_runbook.kube.wait import WaitTimeout, watch_until


class FakeApi:
    """Namespaces and Leases in memory, with resourceVersion conflicts, outages and hangs."""

    def __init__(self) -> None:
        self.objects: dict[str, dict] = {}
        self.rv = 0
        self.unavailable = 0  # answer this many requests with 503
        self.hang_s = 0.0  # sleep this long before answering
        self.requests: list[str] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, body: dict | None) -> tuple[int, dict]:
        with self.lock:
            self.requests.append(f"{method} {path}")
            if self.unavailable:
                self.unavailable -= 1
                return 503, {"kind": "Status", "message": "the server is restarting", "code": 503}
        if self.hang_s:
            time.sleep(self.hang_s)
        path = path.split("?", 1)[0]
        with self.lock:
            if method == "GET" and path == "/api/v1/nodes":
                return 200, {"kind": "NodeList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.rv)},
                             "items": [{"metadata": {"name": "n1"}, "spec": {}, "status": {}}]}
            if method == "POST" and path == "/api/v1/namespaces":
                key = f"/api/v1/namespaces/{body['metadata']['name']}"
                if key in self.objects:
                    return 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409}
                return 201, self._store(key, body)
            if method == "POST" and path.endswith("/leases"):
                key = f"{path}/{body['metadata']['name']}"
                if key in self.objects:
                    return 409, {"kind": "Status", "reason": "AlreadyExists", "code": 409}
                return 201, self._store(key, body)
            if method == "GET":
                if path in self.objects:
                    return 200, self.objects[path]
                return 404, {"kind": "Status", "reason": "NotFound", "code": 404}
            if method == "PUT":
                current = self.objects.get(path)
                if current is None:
                    return 404, {"kind": "Status", "reason": "NotFound", "code": 404}
                if body["metadata"].get("resourceVersion") != current["metadata"]["resourceVersion"]:
                    return 409, {"kind": "Status", "reason": "Conflict", "code": 409}
                return 200, self._store(path, body)
            if method == "DELETE":
                if self.objects.pop(path, None) is None:
                    return 404, {"kind": "Status", "reason": "NotFound", "code": 404}
                return 200, {"kind": "Status", "status": "Success"}
        return 404, {"kind": "Status", "reason": "NotFound", "code": 404}

    def _store(self, key: str, body: dict) -> dict:
        self.rv += 1
        body = json.loads(json.dumps(body))
        body["metadata"]["resourceVersion"] = str(self.rv)
        self.objects[key] = body
        return body


@pytest.fixture()
def api(tmp_path):
    fake = FakeApi()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            code, data = fake.handle(self.command, self.path, body)
            raw = json.dumps(data).encode()
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except OSError:
                pass

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""apiVersion: v1
kind: Config
clusters: [{{name: c, cluster: {{server: "http://127.0.0.1:{httpd.server_address[1]}"}}}}]
contexts: [{{name: c, context: {{cluster: c, user: u}}}}]
current-context: c
users: [{{name: u, user: {{token: not-a-secret-test-token}}}}]
""")
    yield fake, kubeconfig
    httpd.shutdown()
    httpd.server_close()


def test_a_hanging_api_server_fails_a_request_within_its_timeout(api):
    fake, kubeconfig = api
    fake.hang_s = 20
    kube = Kube(kubeconfig, request_timeout=1.0)
    core = kube.core  # (importing the generated API module is slow: not part of the timing)
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        core.list_node()
    assert time.monotonic() - t0 < 5, "the request hung instead of timing out"
    assert "timed out" in str(info.value).lower() or "timeout" in type(info.value).__name__.lower()


def test_idempotent_requests_ride_out_a_short_outage(api):
    fake, kubeconfig = api
    fake.unavailable = 2  # the API server answers 503 twice, as while it restarts
    kube = Kube(kubeconfig)
    assert [n.metadata.name for n in kube.core.list_node().items] == ["n1"]
    assert fake.requests.count("GET /api/v1/nodes") == 3


def test_a_wait_is_bounded_by_its_own_timeout_when_the_api_server_hangs(api):
    fake, kubeconfig = api
    fake.hang_s = 30
    kube = Kube(kubeconfig)
    core = kube.core
    t0 = time.monotonic()
    with pytest.raises(WaitTimeout, match="the API server did not answer"):
        watch_until(core.list_node, lambda items: (False, f"{len(items)} nodes"), 3, "nodes")
    assert time.monotonic() - t0 < 8


def test_the_run_lock_refuses_a_second_run_naming_the_holder_and_expires(api):
    fake, kubeconfig = api
    kube = Kube(kubeconfig)
    first = runlock.ClusterLock(kube, "20261201T100000Z-lab-aaaa", "ops@host1", "03_validation", duration_s=2)
    assert first.acquire() is None
    assert runlock.holder(kube).run_id == first.run_id
    assert first.acquire() is None  # the same run takes it again (its next stage)
    second = runlock.ClusterLock(kube, "20261201T100001Z-lab-bbbb", "ops@host2", "03_validation")
    with pytest.raises(runlock.LockHeld, match=r"locked by run 20261201T100000Z-lab-aaaa \(ops@host1, stage "
                                               r"03_validation\) since 20\d\d-"):
        second.acquire()
    time.sleep(2.5)  # nobody renews the first run's lock: it expires
    taken_over = second.acquire()
    assert taken_over is not None and taken_over.run_id == first.run_id
    assert runlock.holder(kube).run_id == second.run_id
    assert not first.release()  # not its lock any more
    assert second.release() and runlock.holder(kube) is None
