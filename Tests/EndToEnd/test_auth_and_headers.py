"""Bearer tokens on ingest (both receivers, from ${env:…} in the config) and headers to the downstream
(`downstream_headers`, e.g. a multi-tenant Tempo's X-Scope-OrgID), with the real Python SDK."""

from __future__ import annotations

import os

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from agent import run_agent
from conftest import TailgateProcess, tailgate_binary
from test_e2e import must_keep

CONFIG = """\
buffer: {wait_after_root: 300ms, idle_timeout: 2s}
forwarder: {batch_timeout: 100ms}
auth:
  bearer_tokens: ["${env:TG_TEST_TOKEN}"]
downstream_headers:
  X-Scope-OrgID: tenant-a
  Authorization: "Bearer ${env:TG_TEST_DOWNSTREAM_TOKEN}"
"""


class EnvTailgate(TailgateProcess):
    def start(self) -> None:
        os.environ["TG_TEST_TOKEN"] = "agent-token-1"
        os.environ["TG_TEST_DOWNSTREAM_TOKEN"] = "collector-token"
        try:
            super().start()  # the child inherits the environment
        finally:
            del os.environ["TG_TEST_TOKEN"], os.environ["TG_TEST_DOWNSTREAM_TOKEN"]


def run_with_headers(tg, headers: str | None, protocol: str = "grpc", n: int = 30, seed: int = 5):
    key = "OTEL_EXPORTER_OTLP_TRACES_HEADERS"
    if headers is not None:
        os.environ[key] = headers
    try:
        endpoint = tg.grpc_endpoint if protocol == "grpc" else tg.traces_url
        return run_agent(protocol, endpoint, n, seed=seed, flush_timeout_s=15.0)
    finally:
        os.environ.pop(key, None)


def test_token_required_and_headers_forwarded(receiver, tmp_path, request):
    tg = EnvTailgate(tailgate_binary(), tmp_path, receiver.port, config_text=CONFIG)
    request.node._tailgates = [tg]
    tg.start()
    try:
        # Right token, gRPC and HTTP: accepted, kept traces forwarded with the configured headers.
        ok_grpc = run_with_headers(tg, "authorization=Bearer%20agent-token-1")
        ok_http = run_with_headers(tg, "authorization=Bearer%20agent-token-1", protocol="http", seed=6)
        assert ok_grpc.ok and ok_http.ok
        # No token / a wrong one: refused (UNAUTHENTICATED, 401), counted, nothing forwarded from them.
        bad = run_with_headers(tg, None, seed=7)
        wrong = run_with_headers(tg, "authorization=Bearer%20agent-token-2", protocol="http", seed=8)
        assert bad.spans_exported == 0 and bad.failed_exports > 0
        assert wrong.spans_exported == 0 and wrong.failed_exports > 0
        raw = requests.post(tg.traces_url, data=trace_service_pb2.ExportTraceServiceRequest().SerializeToString(),
                            headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        assert raw.status_code == 401 and raw.headers.get("WWW-Authenticate") == "Bearer"
        refusals = sum(float(line.split()[-1]) for line in tg.metrics_text().splitlines()
                       if line.startswith("tailgate_requests_refused_total{") and 'reason="unauthenticated"' in line)
        assert refusals >= bad.failed_exports + wrong.failed_exports + 1
        assert tg.terminate() == 0
        expected = {t.trace_id for t in ok_grpc.traces + ok_http.traces if must_keep(t)}
        assert expected and receiver.trace_ids() == expected
        for md in receiver.metadata():
            assert md.get("x-scope-orgid") == "tenant-a", md
            assert md.get("authorization") == "Bearer collector-token", md
        assert "spans_lost=0" in tg.log_text()
    finally:
        tg.kill()


TENANT_CONFIG = """\
buffer: {wait_after_root: 300ms, idle_timeout: 2s}
forwarder: {batch_timeout: 100ms}
downstream_headers:
  X-Scope-OrgID: default-tenant
downstream_headers_from_request: [X-Scope-OrgID]
"""


def test_incoming_tenant_header_is_passed_through_per_trace(receiver, tmp_path, request):
    """Two agents of two tenants (one over gRPC, one over HTTP) through one Tailgate: every export call to the
    collector carries the tenant of the traces it holds (a batch never mixes tenants); an agent without the header
    gets the configured default."""
    policies = tmp_path / "all.yaml"
    policies.write_text("policies: [{name: all, type: always_sample}]\n")

    class KeepAll(TailgateProcess):
        def command(self) -> list[str]:
            cmd = super().command()
            cmd[cmd.index("--policies") + 1] = str(policies)
            return cmd

    tg = KeepAll(tailgate_binary(), tmp_path, receiver.port, config_text=TENANT_CONFIG)
    request.node._tailgates = [tg]
    tg.start()
    try:
        a = run_with_headers(tg, "x-scope-orgid=tenant-a", protocol="grpc", n=20, seed=11)
        b = run_with_headers(tg, "x-scope-orgid=tenant-b", protocol="http", n=20, seed=12)
        c = run_with_headers(tg, None, protocol="grpc", n=10, seed=13)
        assert a.ok and b.ok and c.ok
        assert tg.terminate() == 0
        expected = {"tenant-a": {t.trace_id for t in a.traces}, "tenant-b": {t.trace_id for t in b.traces},
                    "default-tenant": {t.trace_id for t in c.traces}}
        seen: dict[str, set[str]] = {k: set() for k in expected}
        for metadata, trace_ids in receiver.calls():
            tenant = metadata.get("x-scope-orgid")
            assert tenant in expected, metadata
            assert trace_ids <= expected[tenant], (tenant, trace_ids - expected[tenant])
            seen[tenant] |= trace_ids
        assert seen == expected
    finally:
        tg.kill()
