"""All OTLP signals: metrics and logs are relayed unchanged (bytes in, bytes out; never sampled) to the same
downstream as traces, over gRPC (MetricsService/LogsService Export) and OTLP/HTTP (/v1/metrics, /v1/logs next to
the traces path), with the same auth and limits, counted, and pushed back on (503 Retry-After / UNAVAILABLE) when the
relay queue is full. Also the shared receivers (`SignalReceiver`, `HTTPReceiver`) and SDK helpers used by test_tls."""

from __future__ import annotations

import gzip
import http.server
import json
import os
import ssl
import threading
import time
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import requests
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from conftest import TailgateProcess, free_ports, tailgate_binary

# ----------------------------------------------------------------------------------------------------------------
# Downstream receivers of every signal


class SignalReceiver:
    """A grpcio downstream implementing TraceService, MetricsService and LogsService; optionally TLS
    (`cert`, `key`) and mTLS (`client_ca`: client certificates required). Records every request's bytes."""

    def __init__(self, cert: bytes | None = None, key: bytes | None = None, client_ca: bytes | None = None) -> None:
        self._cond = threading.Condition()
        self.requests: dict[str, list[bytes]] = {"traces": [], "metrics": [], "logs": []}
        self.metadata: list[dict[str, str]] = []
        self._creds = None
        if cert is not None:
            self._creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca,
                                                      require_client_auth=client_ca is not None)
        self._server: grpc.Server | None = None
        self.port: int | None = None

    def _record(self, signal: str, request, context) -> None:
        with self._cond:
            self.requests[signal].append(request.SerializeToString())
            self.metadata.append(dict(context.invocation_metadata()))
            self._cond.notify_all()

    def start(self) -> int:
        owner = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # noqa: N802
                owner._record("traces", request, context)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                owner._record("metrics", request, context)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request, context):  # noqa: N802
                owner._record("logs", request, context)
                return logs_service_pb2.ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        if self._creds is None:
            self.port = server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = server.add_secure_port("127.0.0.1:0", self._creds)
        server.start()
        self._server = server
        return self.port

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(0.5).wait(timeout=5)
            self._server = None

    def count(self, signal: str) -> int:
        with self._cond:
            return len(self.requests[signal])

    def span_count(self) -> int:
        with self._cond:
            total = 0
            for raw in self.requests["traces"]:
                r = trace_service_pb2.ExportTraceServiceRequest.FromString(raw)
                total += sum(len(ss.spans) for rs in r.resource_spans for ss in rs.scope_spans)
            return total

    def wait_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(0.2, remaining))
            return True


class HTTPReceiver:
    """An OTLP/HTTP downstream (optionally HTTPS) recording (path, content type, decompressed body)."""

    def __init__(self, cert_path: Path | None = None, key_path: Path | None = None) -> None:
        self._cond = threading.Condition()
        self.received: list[tuple[str, str, bytes]] = []
        self.status = 200
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                status = owner.status
                if status == 200:
                    with owner._cond:
                        owner.received.append((self.path, self.headers.get("Content-Type", ""), body))
                        owner._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        if cert_path is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(cert_path), str(key_path))
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> int:
        self._thread.start()
        return self.port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bodies(self, path: str) -> list[tuple[str, bytes]]:
        with self._cond:
            return [(ct, b) for p, ct, b in self.received if p == path]

    def wait_until(self, predicate, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(timeout=min(0.2, remaining))
            return True


# ----------------------------------------------------------------------------------------------------------------
# Telemetry from the real SDK


def sdk_telemetry(service: str = "signals-test", n_spans: int = 3):
    """Finished spans (one trace with an ERROR root, so the default policies keep it), metrics data and log
    records, made by the OpenTelemetry SDK in memory; exported by the caller through its OTLP exporters."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    resource = Resource.create({"service.name": service})
    spans_out = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_out))
    tracer = tracer_provider.get_tracer("tailgate.test")
    with tracer.start_as_current_span("agent.run") as root:
        for i in range(n_spans - 1):
            with tracer.start_as_current_span(f"llm.call.{i}"):
                pass
        root.set_status(Status(StatusCode.ERROR, "failed on purpose"))
    spans = spans_out.get_finished_spans()

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    counter = meter_provider.get_meter("tailgate.test").create_counter("tailgate_test_requests")
    counter.add(7, {"route": "/chat"})
    metrics_data = reader.get_metrics_data()

    logs_out = InMemoryLogRecordExporter()
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    logger = logger_provider.get_logger("tailgate.test")
    emit_kwargs = {"body": "hello from the signals test", "severity_text": "INFO"}
    try:
        from opentelemetry._logs import LogRecord

        logger.emit(LogRecord(**emit_kwargs))
    except TypeError:
        logger.emit(**emit_kwargs)
    logs = logs_out.get_finished_logs()
    assert spans and metrics_data and logs
    return spans, metrics_data, logs


def export_all_grpc(endpoint: str, credentials=None, headers=None, insecure: bool | None = None):
    """Exports the SDK's traces, metrics and logs through its OTLP/gRPC exporters; returns the three results
    (True for success)."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    spans, metrics_data, logs = sdk_telemetry()
    kwargs = dict(endpoint=endpoint, credentials=credentials, headers=headers, timeout=5)
    if insecure is not None:
        kwargs["insecure"] = insecure
    exporters = [OTLPSpanExporter(**kwargs), OTLPMetricExporter(**kwargs), OTLPLogExporter(**kwargs)]
    results = []
    for exporter, data in zip(exporters, [spans, metrics_data, logs]):
        exporter._MAX_RETRY_TIMEOUT = 2  # noqa: SLF001 (bounded retries in tests)
        try:
            results.append(exporter.export(data).name == "SUCCESS")
        finally:
            exporter.shutdown()
    return results


def export_all_http(base: str | None = None, certificate_file: str | None = None, headers=None):
    """Exports through the OTLP/HTTP exporters. Without `base`, the exporters find their endpoints from the generic
    OTEL_EXPORTER_OTLP_ENDPOINT (each appends /v1/traces, /v1/metrics, /v1/logs)."""
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    spans, metrics_data, logs = sdk_telemetry()
    results = []
    for cls, path, data in [(OTLPSpanExporter, "traces", spans), (OTLPMetricExporter, "metrics", metrics_data),
                            (OTLPLogExporter, "logs", logs)]:
        kwargs = dict(timeout=5, headers=headers)
        if base is not None:
            kwargs["endpoint"] = f"{base}/v1/{path}"
        if certificate_file is not None:
            kwargs["certificate_file"] = certificate_file
        exporter = cls(**kwargs)
        try:
            results.append(exporter.export(data).name == "SUCCESS")
        finally:
            exporter.shutdown()
    return results


def metric_sum(tg: TailgateProcess, name: str, **labels: str) -> float:
    total = 0.0
    for line in tg.metrics_text().splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.split()[-1])
    return total


SIGNALS_CONFIG = """\
buffer: {wait_after_root: 300ms, idle_timeout: 2s}
forwarder: {batch_timeout: 100ms, initial_backoff: 50ms, max_backoff: 500ms}
"""


class DownstreamTailgate(TailgateProcess):
    """A tailgate whose --downstream is given as a whole address (http://…, grpcs://…)."""

    def __init__(self, binary, workdir, downstream: str, config_text: str, extra_args: list[str] | None = None):
        super().__init__(binary, workdir, 0, config_text=config_text)
        self.downstream = downstream
        self.extra_args = extra_args or []

    def command(self) -> list[str]:
        cmd = super().command()
        i = cmd.index("--downstream")
        cmd[i + 1] = self.downstream
        return cmd + self.extra_args


def start_tailgate(request, tmp_path, downstream: str, config: str = SIGNALS_CONFIG) -> DownstreamTailgate:
    tg = DownstreamTailgate(tailgate_binary(), tmp_path, downstream, config)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [tg]
    tg.start()
    return tg


# ----------------------------------------------------------------------------------------------------------------
# Tests


def test_generic_endpoint_http_relays_metrics_and_logs_unchanged(request, tmp_path, monkeypatch):
    """An SDK configured only with OTEL_EXPORTER_OTLP_ENDPOINT exports traces, metrics and logs to Tailgate's
    OTLP/HTTP port: all three succeed (no more 404), metrics and logs arrive at the HTTP downstream's /v1/metrics and
    /v1/logs (next to its custom traces path) byte for byte, OTLP/JSON is forwarded as JSON, and it is counted."""
    rx = HTTPReceiver()
    rx.start()
    try:
        tg = start_tailgate(request, tmp_path, f"http://127.0.0.1:{rx.port}/otlp/v1/traces")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", tg.http_base)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        assert export_all_http() == [True, True, True]
        assert rx.wait_until(lambda: rx.bodies("/otlp/v1/metrics") and rx.bodies("/otlp/v1/logs")
                             and rx.bodies("/otlp/v1/traces"), timeout=15), rx.received
        metrics = metrics_service_pb2.ExportMetricsServiceRequest.FromString(rx.bodies("/otlp/v1/metrics")[0][1])
        names = {m.name for rm in metrics.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
        assert "tailgate_test_requests" in names
        logs = logs_service_pb2.ExportLogsServiceRequest.FromString(rx.bodies("/otlp/v1/logs")[0][1])
        bodies = [r.body.string_value for rl in logs.resource_logs for sl in rl.scope_logs for r in sl.log_records]
        assert bodies == ["hello from the signals test"]

        # Bytes in, bytes out: a request Tailgate could not have re-encoded identically unless it passed it on as is
        # (unknown field 99 and a non-canonical field order), sent gzip-compressed.
        raw = metrics.SerializeToString() + bytes([0x9A, 0x06, 0x03]) + b"abc"
        r = requests.post(f"{tg.http_base}/v1/metrics", data=gzip.compress(raw), timeout=5,
                          headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})
        assert r.status_code == 200, r.text
        assert rx.wait_until(lambda: any(b == raw for _, b in rx.bodies("/otlp/v1/metrics")), timeout=10)

        # OTLP/JSON logs are forwarded as JSON, unchanged, with the same content type.
        doc = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": {"stringValue": "json log"}}]}]}]}).encode()
        r = requests.post(f"{tg.http_base}/v1/logs", data=doc, timeout=5, headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and r.headers["Content-Type"] == "application/json", r.text
        assert rx.wait_until(lambda: ("application/json", doc) in rx.bodies("/otlp/v1/logs"), timeout=10)

        assert metric_sum(tg, "tailgate_signal_requests_forwarded_total", signal="metrics") >= 2
        assert metric_sum(tg, "tailgate_signal_requests_forwarded_total", signal="logs") >= 2
        assert metric_sum(tg, "tailgate_signal_requests_received_total", signal="logs", transport="http") >= 2
        assert tg.terminate() == 0
        assert "signal_requests_lost=0" in tg.log_text()
    finally:
        rx.stop()


def test_grpc_relays_metrics_and_logs_to_matching_methods(request, tmp_path):
    """The SDK's OTLP/gRPC exporters: metrics and logs reach the downstream's MetricsService/LogsService Export
    unchanged; traces are still sampled (the ERROR trace is kept)."""
    rx = SignalReceiver()
    rx.start()
    try:
        tg = start_tailgate(request, tmp_path, f"grpc://127.0.0.1:{rx.port}")
        assert export_all_grpc(tg.grpc_endpoint, insecure=True) == [True, True, True]
        assert rx.wait_until(lambda: rx.count("metrics") >= 1 and rx.count("logs") >= 1 and rx.count("traces") >= 1,
                             timeout=15)
        m = metrics_service_pb2.ExportMetricsServiceRequest.FromString(rx.requests["metrics"][0])
        assert m.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points[0].as_int == 7
        # A raw request with an unknown field arrives byte for byte over gRPC as well.
        raw = rx.requests["logs"][0] + bytes([0x9A, 0x06, 0x01]) + b"z"
        channel = grpc.insecure_channel(tg.grpc_endpoint)
        call = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export",
                                   request_serializer=None, response_deserializer=None)
        call(raw, timeout=5)
        channel.close()
        assert rx.wait_until(lambda: raw in rx.requests["logs"], timeout=10)
        # Counted once the downstream answered, which can be just after the receiver stored the request.
        assert rx.wait_until(lambda: metric_sum(tg, "tailgate_signal_requests_forwarded_total", signal="logs") >= 2,
                             timeout=5)
        assert tg.terminate() == 0
    finally:
        rx.stop()


def test_signals_need_the_token_and_respect_limits(request, tmp_path):
    """The same bearer token and request size limit as traces apply to metrics and logs."""
    rx = HTTPReceiver()
    rx.start()
    config = SIGNALS_CONFIG + "auth: {bearer_tokens: [sig-token]}\nlimits: {max_request_bytes: 64KiB}\n"
    try:
        tg = start_tailgate(request, tmp_path, f"http://127.0.0.1:{rx.port}", config)
        body = metrics_service_pb2.ExportMetricsServiceRequest().SerializeToString()
        pb = {"Content-Type": "application/x-protobuf"}
        assert requests.post(f"{tg.http_base}/v1/metrics", data=body, headers=pb, timeout=5).status_code == 401
        ok = requests.post(f"{tg.http_base}/v1/logs", data=body, timeout=5, headers={**pb, "Authorization": "Bearer sig-token"})
        assert ok.status_code == 200
        big = requests.post(f"{tg.http_base}/v1/logs", data=b"\x00" * (100 << 10), timeout=5,
                            headers={**pb, "Authorization": "Bearer sig-token"})
        assert big.status_code == 413
        channel = grpc.insecure_channel(tg.grpc_endpoint)
        call = channel.unary_unary("/opentelemetry.proto.collector.metrics.v1.MetricsService/Export")
        with pytest.raises(grpc.RpcError) as e:
            call(body, timeout=5)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
        call(body, timeout=5, metadata=[("authorization", "Bearer sig-token")])
        channel.close()
        assert metric_sum(tg, "tailgate_requests_refused_total", reason="unauthenticated") >= 2
        assert tg.terminate() == 0
    finally:
        rx.stop()


def test_full_relay_queue_pushes_back(request, tmp_path):
    """With the downstream down and a tiny relay queue, metrics and logs are refused with 503 + Retry-After (HTTP) and
    UNAVAILABLE (gRPC) instead of being dropped; once the downstream is back, what was accepted is delivered."""
    (port,) = free_ports(1)
    config = SIGNALS_CONFIG + "forwarder: {batch_timeout: 100ms, initial_backoff: 50ms, max_backoff: 300ms, signals_queue_bytes: 1KiB}\n"
    config = config.replace("forwarder: {batch_timeout: 100ms, initial_backoff: 50ms, max_backoff: 500ms}\n", "")
    tg = start_tailgate(request, tmp_path, f"http://127.0.0.1:{port}", config)
    body = b"\x0a" + bytes([0xF4, 0x03]) + b"\x00" * 500  # a 503-byte field: two fill the 1 KiB queue
    pb = {"Content-Type": "application/x-protobuf"}
    statuses = []
    for _ in range(40):
        r = requests.post(f"{tg.http_base}/v1/logs", data=body, headers=pb, timeout=5)
        statuses.append(r.status_code)
        if r.status_code == 503:
            assert r.headers.get("Retry-After") == "1"
            break
        time.sleep(0.05)
    assert 503 in statuses, statuses
    accepted = statuses.count(200)
    channel = grpc.insecure_channel(tg.grpc_endpoint)
    call = channel.unary_unary("/opentelemetry.proto.collector.logs.v1.LogsService/Export")
    codes = []
    for _ in range(40):
        try:
            call(body, timeout=5)
            codes.append(grpc.StatusCode.OK)
            accepted += 1
        except grpc.RpcError as e:
            codes.append(e.code())
            if e.code() == grpc.StatusCode.UNAVAILABLE:
                break
        time.sleep(0.05)
    channel.close()
    assert grpc.StatusCode.UNAVAILABLE in codes, codes
    assert metric_sum(tg, "tailgate_signal_requests_refused_total", signal="logs", reason="queue_full") >= 2
    assert metric_sum(tg, "tailgate_forward_failures_total", retried="true") >= 1

    # The downstream comes up on that port: everything accepted is delivered.
    rx2 = _http_receiver_on(port)
    try:
        assert rx2.wait_until(lambda: len(rx2.bodies("/v1/logs")) >= accepted, timeout=15), (accepted, rx2.received)
        assert tg.terminate() == 0
        assert "signal_requests_lost=0" in tg.log_text()
    finally:
        rx2.stop()


def _http_receiver_on(port: int) -> HTTPReceiver:
    """An HTTPReceiver bound to a given port."""
    original = http.server.ThreadingHTTPServer.__init__

    def bind_to_port(self, address, handler, bind_and_activate=True):
        original(self, ("127.0.0.1", port), handler, bind_and_activate)

    http.server.ThreadingHTTPServer.__init__ = bind_to_port
    try:
        rx = HTTPReceiver()
    finally:
        http.server.ThreadingHTTPServer.__init__ = original
    rx.start()
    return rx


def test_file_downstream_drops_signals_with_a_note(request, tmp_path):
    """A file: downstream writes traces only: metrics and logs are accepted, not written, counted and noted once."""
    out = tmp_path / "out.jsonl"
    tg = start_tailgate(request, tmp_path, f"file:{out}")
    body = metrics_service_pb2.ExportMetricsServiceRequest().SerializeToString()
    for _ in range(2):
        r = requests.post(f"{tg.http_base}/v1/metrics", data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=5)
        assert r.status_code == 200
    assert metric_sum(tg, "tailgate_signal_requests_dropped_total", signal="metrics", reason="unsupported_by_downstream") == 2
    assert tg.terminate() == 0
    assert tg.log_text().count("metrics and logs are accepted but not written") == 1
