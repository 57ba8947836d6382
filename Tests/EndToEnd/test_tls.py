"""TLS, with certificates made in the test (trustme): to the downstream (grpcs:// and https://, a CA file, mTLS with a
client certificate, a server-name override, a wrong CA refused and counted), on ingest (both receivers, mTLS,
the SDK exporting traces, metrics and logs with TLS and a bearer token), certificate rotation under traffic, and
bad TLS configuration refused before anything listens (exit 2, FILE:LINE:COLUMN)."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
import trustme
from cryptography import x509
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import POLICIES, free_ports, tailgate_binary
from test_signals import (SIGNALS_CONFIG, HTTPReceiver, SignalReceiver, export_all_grpc, export_all_http,
                          metric_sum, start_tailgate)


def write_pair(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    """Writes a leaf's chain and key as PEM files; returns (cert path, key path)."""
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    key_path.write_bytes(cert.private_key_pem.bytes())
    return cert_path, key_path


def error_trace_request(seed: int, spans: int = 3) -> trace_service_pb2.ExportTraceServiceRequest:
    """One complete trace whose root has status ERROR (kept by the default policies)."""
    trace_id = seed.to_bytes(16, "big")
    now = time.time_ns()
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    rs.resource.attributes.append(common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value="tls-test")))
    ss = rs.scope_spans.add()
    root_id = (seed * 100 + 1).to_bytes(8, "big")
    for i in range(spans):
        span = ss.spans.add()
        span.trace_id = trace_id
        span.span_id = root_id if i == 0 else (seed * 100 + 1 + i).to_bytes(8, "big")
        if i > 0:
            span.parent_span_id = root_id
        span.name = f"span-{i}"
        span.start_time_unix_nano = now - 1_000_000
        span.end_time_unix_nano = now
        if i == 0:
            span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
    return request


def export_traces_grpc(endpoint: str, seeds, credentials=None, metadata=None) -> None:
    channel = grpc.secure_channel(endpoint, credentials) if credentials else grpc.insecure_channel(endpoint)
    try:
        call = channel.unary_unary("/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                                   request_serializer=trace_service_pb2.ExportTraceServiceRequest.SerializeToString,
                                   response_deserializer=trace_service_pb2.ExportTraceServiceResponse.FromString)
        for seed in seeds:
            call(error_trace_request(seed), timeout=5, metadata=metadata)
    finally:
        channel.close()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


# ----------------------------------------------------------------------------------------------------------------
# TLS to the downstream


@pytest.mark.parametrize("mtls", [False, True], ids=["tls", "mtls"])
def test_grpcs_downstream(request, tmp_path, ca, mtls):
    """grpcs:// to a grpcio receiver with TLS (and, for mTLS, requiring a client certificate from our CA): the kept
    traces and relayed metrics and logs arrive."""
    server = ca.issue_cert("localhost", "127.0.0.1")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    rx = SignalReceiver(cert=b"".join(p.bytes() for p in server.cert_chain_pems), key=server.private_key_pem.bytes(),
                        client_ca=ca.cert_pem.bytes() if mtls else None)
    rx.start()
    config = SIGNALS_CONFIG + f"downstream_tls:\n  ca_file: {ca_path}\n"
    if mtls:
        client_cert, client_key = write_pair(ca.issue_cert("tailgate-client"), tmp_path, "client")
        config += f"  cert_file: {client_cert}\n  key_file: {client_key}\n"
    try:
        tg = start_tailgate(request, tmp_path, f"grpcs://127.0.0.1:{rx.port}", config)
        export_traces_grpc(tg.grpc_endpoint, range(1, 6))
        assert export_all_grpc(tg.grpc_endpoint, insecure=True)[1:] == [True, True]
        assert rx.wait_until(lambda: rx.span_count() >= 5 * 3 and rx.count("metrics") and rx.count("logs"), timeout=20), \
            (rx.span_count(), tg.log_tail())
        assert tg.terminate() == 0
        assert "spans_lost=0" in tg.log_text()
    finally:
        rx.stop()


def test_grpcs_server_name_override(request, tmp_path, ca):
    """The certificate names only collector.internal; the address is 127.0.0.1: server_name makes it verify."""
    server = ca.issue_cert("collector.internal")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    rx = SignalReceiver(cert=b"".join(p.bytes() for p in server.cert_chain_pems), key=server.private_key_pem.bytes())
    rx.start()
    config = SIGNALS_CONFIG + f"downstream_tls: {{ca_file: {ca_path}, server_name: collector.internal}}\n"
    try:
        tg = start_tailgate(request, tmp_path, f"grpcs://127.0.0.1:{rx.port}", config)
        export_traces_grpc(tg.grpc_endpoint, [11])
        assert rx.wait_until(lambda: rx.span_count() >= 3, timeout=20), tg.log_tail()
        assert tg.terminate() == 0
    finally:
        rx.stop()


def test_wrong_ca_is_refused_and_counted(request, tmp_path, ca):
    """A downstream whose certificate is not from the configured CA: nothing is delivered, every attempt is counted
    as a forward failure, nothing counts as forwarded (not silently OK); at shutdown the spans are reported lost."""
    other = trustme.CA()
    server = other.issue_cert("localhost", "127.0.0.1")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    rx = SignalReceiver(cert=b"".join(p.bytes() for p in server.cert_chain_pems), key=server.private_key_pem.bytes())
    rx.start()
    config = SIGNALS_CONFIG + f"downstream_tls: {{ca_file: {ca_path}}}\nshutdown_timeout: 3s\n"
    try:
        tg = start_tailgate(request, tmp_path, f"grpcs://127.0.0.1:{rx.port}", config)
        export_traces_grpc(tg.grpc_endpoint, [21, 22])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and metric_sum(tg, "tailgate_forward_failures_total") < 3:
            time.sleep(0.2)
        assert metric_sum(tg, "tailgate_forward_failures_total", retried="true") >= 3
        assert (tg.counter("tailgate_spans_forwarded_total") or 0) == 0
        assert rx.span_count() == 0
        code = tg.terminate()
        assert code == 3, tg.log_tail()  # kept spans could not be delivered: said, not hidden
        assert "spans_lost=0" not in tg.log_text()
    finally:
        rx.stop()


def test_https_downstream_all_signals(request, tmp_path, ca):
    """https:// to an HTTPS receiver: traces at its path, metrics and logs next to it."""
    cert_path, key_path = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "server")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    rx = HTTPReceiver(cert_path, key_path)
    rx.start()
    try:
        tg = start_tailgate(request, tmp_path, f"https://127.0.0.1:{rx.port}/v1/traces",
                            SIGNALS_CONFIG + f"downstream_tls: {{ca_file: {ca_path}}}\n")
        export_traces_grpc(tg.grpc_endpoint, [31])
        assert export_all_http(tg.http_base)[1:] == [True, True]
        assert rx.wait_until(lambda: rx.bodies("/v1/traces") and rx.bodies("/v1/metrics") and rx.bodies("/v1/logs"),
                             timeout=20), (rx.received, tg.log_tail())
        assert tg.terminate() == 0
    finally:
        rx.stop()


def test_insecure_skip_verify_is_loud(request, tmp_path, ca):
    """insecure_skip_verify accepts an unverifiable certificate, and says so at warning on start."""
    server = trustme.CA().issue_cert("localhost", "127.0.0.1")
    rx = SignalReceiver(cert=b"".join(p.bytes() for p in server.cert_chain_pems), key=server.private_key_pem.bytes())
    rx.start()
    try:
        tg = start_tailgate(request, tmp_path, f"grpcs://127.0.0.1:{rx.port}",
                            SIGNALS_CONFIG + "downstream_tls: {insecure_skip_verify: true}\n")
        export_traces_grpc(tg.grpc_endpoint, [41])
        assert rx.wait_until(lambda: rx.span_count() >= 3, timeout=20)
        assert tg.terminate() == 0
        log = tg.log_text()
        assert "warning" in log and "insecure_skip_verify is on" in log
    finally:
        rx.stop()


# ----------------------------------------------------------------------------------------------------------------
# TLS on ingest


def test_ingest_tls_sdk_all_signals_with_token(request, tmp_path, ca, monkeypatch):
    """Both receivers behind TLS with a bearer token: the SDK's gRPC exporters (TLS credentials + authorization
    header) and HTTP exporters (certificate_file) export traces, metrics and logs, which arrive downstream; without
    the token, or in plaintext, nothing is taken."""
    cert_path, key_path = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "ingest")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's CA file (the SDK's certificate_file).
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    rx = SignalReceiver()
    rx.start()
    config = SIGNALS_CONFIG + f"tls: {{cert_file: {cert_path}, key_file: {key_path}}}\nauth: {{bearer_tokens: [tls-token]}}\n"
    try:
        tg = start_tailgate(request, tmp_path, f"grpc://127.0.0.1:{rx.port}", config)
        creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        auth = {"authorization": "Bearer tls-token"}
        assert export_all_grpc(f"localhost:{tg.grpc_port}", credentials=creds, headers=auth) == [True, True, True]
        assert export_all_http(f"https://localhost:{tg.http_port}", certificate_file=str(ca_path), headers=auth) == [True, True, True]
        assert rx.wait_until(lambda: rx.count("metrics") >= 2 and rx.count("logs") >= 2 and rx.span_count() >= 6,
                             timeout=20), tg.log_tail()
        # No token: refused over TLS. Plaintext to the TLS port: no OTLP answer at all.
        assert export_all_grpc(f"localhost:{tg.grpc_port}", credentials=creds) == [False, False, False]
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(f"http://127.0.0.1:{tg.http_port}/v1/traces", data=b"", timeout=5,
                          headers={"Content-Type": "application/x-protobuf"})
        assert metric_sum(tg, "tailgate_requests_refused_total", reason="unauthenticated") >= 3
        assert tg.terminate() == 0
    finally:
        rx.stop()


def test_ingest_mtls_requires_client_certificate(request, tmp_path, ca):
    """client_ca_file: a client without a certificate (or with one from another CA) cannot connect; one with a
    certificate from the CA can, on both receivers."""
    cert_path, key_path = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "ingest")
    client_cert, client_key = write_pair(ca.issue_cert("agent-1"), tmp_path, "client")
    stranger_cert, stranger_key = write_pair(trustme.CA().issue_cert("stranger"), tmp_path, "stranger")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    rx = SignalReceiver()
    rx.start()
    config = SIGNALS_CONFIG + f"tls: {{cert_file: {cert_path}, key_file: {key_path}, client_ca_file: {ca_path}}}\n"
    try:
        tg = start_tailgate(request, tmp_path, f"grpc://127.0.0.1:{rx.port}", config)
        url = f"https://localhost:{tg.http_port}/v1/traces"
        body = error_trace_request(51).SerializeToString()
        pb = {"Content-Type": "application/x-protobuf"}
        for cert in [None, (str(stranger_cert), str(stranger_key))]:
            with pytest.raises(requests.exceptions.RequestException):
                requests.post(url, data=body, headers=pb, verify=str(ca_path), cert=cert, timeout=5)
        ok = requests.post(url, data=body, headers=pb, verify=str(ca_path), cert=(str(client_cert), str(client_key)), timeout=5)
        assert ok.status_code == 200
        bare = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
        with pytest.raises(grpc.RpcError):
            export_traces_grpc(f"localhost:{tg.grpc_port}", [52], credentials=bare)
        mutual = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes(), private_key=client_key.read_bytes(),
                                              certificate_chain=client_cert.read_bytes())
        export_traces_grpc(f"localhost:{tg.grpc_port}", [53], credentials=mutual)
        assert rx.wait_until(lambda: rx.span_count() >= 6, timeout=20), tg.log_tail()
        assert tg.terminate() == 0
    finally:
        rx.stop()


def served_serial(port: int, ca_path: Path) -> int:
    """The serial number of the certificate a new TLS connection to 127.0.0.1:port is served."""
    context = ssl.create_default_context(cafile=str(ca_path))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        with context.wrap_socket(sock, server_hostname="localhost") as tls:
            return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number


def test_certificate_rotation_under_traffic(request, tmp_path, ca):
    """The certificate and key files are replaced while clients export continuously over HTTPS and gRPC: no request
    fails, and new connections are served the new certificate (its serial number) on both ports."""
    cert_path, key_path = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "ingest")
    ca_path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    rx = SignalReceiver()
    rx.start()
    config = SIGNALS_CONFIG + f"tls: {{cert_file: {cert_path}, key_file: {key_path}, reload_interval: 200ms}}\n"
    stop = threading.Event()
    failures: list[str] = []
    sent = {"http": 0, "grpc": 0}
    try:
        tg = start_tailgate(request, tmp_path, f"grpc://127.0.0.1:{rx.port}", config)
        before = {served_serial(tg.http_port, ca_path), served_serial(tg.grpc_port, ca_path)}
        assert len(before) == 1

        def http_client():
            seed = 1000
            while not stop.is_set():
                seed += 1
                try:  # a new connection per request: each handshake sees the certificate of the moment
                    r = requests.post(f"https://localhost:{tg.http_port}/v1/traces", verify=str(ca_path), timeout=5,
                                      data=error_trace_request(seed).SerializeToString(),
                                      headers={"Content-Type": "application/x-protobuf", "Connection": "close"})
                    if r.status_code != 200:
                        failures.append(f"http {r.status_code}")
                    sent["http"] += 1
                except Exception as e:  # noqa: BLE001
                    failures.append(f"http {e!r}")
                time.sleep(0.02)

        def grpc_client():
            creds = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
            seed = 5000
            while not stop.is_set():
                seed += 1
                try:  # a new channel (connection) per export as well
                    export_traces_grpc(f"localhost:{tg.grpc_port}", [seed], credentials=creds)
                    sent["grpc"] += 1
                except Exception as e:  # noqa: BLE001
                    failures.append(f"grpc {e!r}")
                time.sleep(0.02)

        threads = [threading.Thread(target=http_client), threading.Thread(target=grpc_client)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        # Rotate: new pair written next to the files and renamed over them (as cert-manager and kubelet do).
        new_cert, new_key = write_pair(ca.issue_cert("localhost", "127.0.0.1"), tmp_path, "next")
        os.replace(new_key, key_path)
        os.replace(new_cert, cert_path)
        deadline = time.monotonic() + 10
        after = before
        while time.monotonic() < deadline:
            after = {served_serial(tg.http_port, ca_path), served_serial(tg.grpc_port, ca_path)}
            if len(after) == 1 and after != before:
                break
            time.sleep(0.1)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(timeout=20)
        assert len(after) == 1 and after != before, (before, after)
        assert not failures, failures[:5]
        assert sent["http"] >= 20 and sent["grpc"] >= 20, sent
        assert "TLS certificate reloaded" in tg.log_text()
        assert tg.terminate() == 0
    finally:
        stop.set()
        rx.stop()


# ----------------------------------------------------------------------------------------------------------------
# Bad TLS configuration: exit 2 before listening, naming the file and the config position


def run_serve(tmp_path: Path, config_text: str, extra: list[str] | None = None) -> tuple[int, str, int]:
    config = tmp_path / "bad.yaml"
    config.write_text(config_text)
    grpc_port, http_port, admin_port = free_ports(3)
    cmd = [str(tailgate_binary()), "serve", "--config", str(config), "--policies", str(POLICIES),
           "--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}",
           "--admin-listen", f"127.0.0.1:{admin_port}"] + (extra or [])
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    return result.returncode, result.stdout + result.stderr, http_port


def test_bad_tls_configuration_exits_2(tmp_path, ca):
    good_cert, good_key = write_pair(ca.issue_cert("localhost"), tmp_path, "good")
    _, other_key = write_pair(ca.issue_cert("other"), tmp_path, "other")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    cases = [
        # (config, what the message must name, line:column)
        (f"tls:\n  cert_file: {tmp_path}/missing.crt\n  key_file: {good_key}\n", "missing.crt", "2:14"),
        (f"tls:\n  cert_file: {good_cert}\n  key_file: {other_key}\n", "does not match", "3:13"),
        (f"tls:\n  cert_file: {garbage}\n  key_file: {good_key}\n", "garbage.pem", "2:14"),
        (f"tls: {{cert_file: {good_cert}, key_file: {good_key}, client_ca_file: {garbage}}}\n", "garbage.pem", "1:"),
        (f"downstream: grpcs://127.0.0.1:1\ndownstream_tls:\n  ca_file: {tmp_path}/nope.pem\n", "nope.pem", "3:12"),
        (f"downstream: grpcs://127.0.0.1:1\ndownstream_tls:\n  cert_file: {good_cert}\n  key_file: {other_key}\n",
         "does not match", "4:13"),
        ("downstream: grpcx://127.0.0.1:1\n", "grpcs://", "1:13"),
    ]
    for config, needle, position in cases:
        code, output, http_port = run_serve(tmp_path, config)
        assert code == 2, (config, output)
        assert needle in output, (config, output)
        assert f"bad.yaml:{position}" in output, (config, output)
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", http_port), timeout=0.5).close()
    code, output, _ = run_serve(tmp_path, "", ["--downstream", "tcps://127.0.0.1:1"])
    assert code == 2 and "grpcs://" in output, output
