"""The OTLP/gRPC receiver's protocol conformance, with real clients: Python grpcio for every answer a client can get
(compression, unknown methods and encodings, limits, malformed messages, status details), and h2load (nghttp2) for
many concurrent unary calls over a few HTTP/2 connections, plus a request that is not gRPC at all."""

from __future__ import annotations

import gzip
import re
import shutil
import struct
import subprocess

import random

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]


def build_request(traces: int, spans_per_trace: int, seed: int) -> trace_service_pb2.ExportTraceServiceRequest:
    """Complete traces (a root and its children), each span with a 16-byte trace ID and an 8-byte span ID."""
    rng = random.Random(seed)
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for _ in range(traces):
        trace_id = rng.randbytes(16)
        root = rng.randbytes(8)
        for i in range(spans_per_trace):
            span = scope.spans.add(trace_id=trace_id, span_id=root if i == 0 else rng.randbytes(8),
                                   name=f"step-{i}", start_time_unix_nano=1_700_000_000_000_000_000 + i,
                                   end_time_unix_nano=1_700_000_000_100_000_000)
            if i:
                span.parent_span_id = root
    return request


def call(endpoint: str, method: str, payload: bytes, compression=grpc.Compression.NoCompression, metadata=None):
    """(code, details, trailing metadata, reply) of one unary call on raw bytes."""
    with grpc.insecure_channel(endpoint, options=OPTIONS) as channel:
        stub = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            reply, rpc = stub.with_call(payload, timeout=10, compression=compression, metadata=metadata)
            return grpc.StatusCode.OK, "", dict(rpc.trailing_metadata() or ()), reply
        except grpc.RpcError as error:
            return error.code(), error.details() or "", dict(error.trailing_metadata() or ()), None


def test_grpcio_client_sees_every_answer(tailgate, receiver):
    endpoint = tailgate.grpc_endpoint
    body = build_request(traces=3, spans_per_trace=4, seed=11).SerializeToString()

    # Uncompressed, gzip and deflate messages are all taken; the reply is an empty ExportTraceServiceResponse.
    for compression in (grpc.Compression.NoCompression, grpc.Compression.Gzip, grpc.Compression.Deflate):
        code, details, _, reply = call(endpoint, EXPORT_METHOD, body, compression)
        assert code == grpc.StatusCode.OK, (compression, code, details)
        assert trace_service_pb2.ExportTraceServiceResponse.FromString(reply).ByteSize() == 0

    # A method the receiver does not serve, and the health service's Watch.
    code, details, _, _ = call(endpoint, "/opentelemetry.proto.collector.trace.v1.TraceService/Nope", body)
    assert code == grpc.StatusCode.UNIMPLEMENTED and "Nope" in details
    code, _, _, _ = call(endpoint, "/grpc.health.v1.Health/Watch", b"")
    assert code == grpc.StatusCode.UNIMPLEMENTED

    # Not protobuf: INVALID_ARGUMENT with the scanner's message (not retryable).
    code, details, _, _ = call(endpoint, EXPORT_METHOD, b"\x0a\xff\xff\xff\xff\x0f")
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details, details

    # A gzip bomb: 64 MiB of zeros that grpcio compresses to about 60 KiB on the wire; refused at the 1 MiB limit
    # without being inflated whole.
    assert len(gzip.compress(b"\0" * (64 << 20))) < 100_000
    code, details, _, _ = call(endpoint, EXPORT_METHOD, b"\0" * (64 << 20), grpc.Compression.Gzip)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in details, (code, details)

    # Over the limit uncompressed: RESOURCE_EXHAUSTED, with the sizes in the message.
    code, details, _, _ = call(endpoint, EXPORT_METHOD, b"\0" * (2 << 20))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "exceeds the limit of 1048576 bytes" in details

    # Every refusal was counted with its reason; the three good calls' spans were all received.
    assert tailgate.counter("tailgate_requests_accepted_total") == 3
    assert tailgate.counter("tailgate_spans_received_total") == 3 * 12
    refused = [l for l in tailgate.metrics_text().splitlines() if l.startswith("tailgate_requests_refused_total{")]
    too_large = [l for l in refused if 'transport="grpc"' in l and 'reason="too_large"' in l]
    assert too_large and float(too_large[0].split()[-1]) == 2, refused


def grpc_frame(message: bytes) -> bytes:
    return b"\0" + struct.pack(">I", len(message)) + message


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_concurrent_unary_calls(tailgate, tmp_path):
    body = tmp_path / "export.bin"
    body.write_bytes(grpc_frame(build_request(traces=2, spans_per_trace=5, seed=5).SerializeToString()))
    url = f"http://{tailgate.grpc_endpoint}{EXPORT_METHOD}"
    grpc_headers = ["-H", "content-type: application/grpc", "-H", "te: trailers"]
    # 400 calls, 4 connections, up to 16 concurrent streams each.
    out = subprocess.run(["h2load", "-n", "400", "-c", "4", "-m", "16", "-d", str(body), *grpc_headers, url],
                         capture_output=True, text=True, timeout=60).stdout
    assert re.search(r"requests: 400 total, 400 started, 400 done, 400 succeeded", out), out
    assert re.search(r"status codes: 400 2xx", out), out
    assert tailgate.counter("tailgate_requests_accepted_total") == 400
    assert tailgate.counter("tailgate_spans_received_total") == 400 * 10

    # Not gRPC (a plain content type): answered 415 by HTTP, the connection and the calls after it unharmed.
    out = subprocess.run(["h2load", "-n", "4", "-c", "1", "-d", str(body), "-H", "content-type: text/plain", url],
                         capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"status codes: 0 2xx, 0 3xx, 4 4xx", out), out
    out = subprocess.run(["h2load", "-n", "8", "-c", "1", "-d", str(body), *grpc_headers, url],
                         capture_output=True, text=True, timeout=30).stdout
    assert re.search(r"8 succeeded", out), out


def test_connection_cap_on_the_grpc_listener(request, receiver, tmp_path):
    """`limits.max_connections` holds on the gRPC listener too: one connection over it is closed at once (the client
    sees UNAVAILABLE and retries), counted as `connection_limit`; a place freed is taken again."""
    import socket
    import time

    from conftest import CONFIG_YAML, TailgateProcess, tailgate_binary

    tg = TailgateProcess(tailgate_binary(), tmp_path, receiver.port,
                         config_text=CONFIG_YAML.replace("limits:\n", "limits:\n  max_connections: 2\n"))
    request.node._tailgates = [tg]
    tg.start()
    try:
        host, port = tg.grpc_endpoint.rsplit(":", 1)
        body = build_request(traces=1, spans_per_trace=2, seed=3).SerializeToString()
        # Two connections held open, each one accepted (the server's SETTINGS frame arrives on it; a connection
        # still counted from the readiness probe can make an attempt be refused, which is retried).
        held = []
        deadline = time.monotonic() + 10
        while len(held) < 2 and time.monotonic() < deadline:
            s = socket.create_connection((host, int(port)))
            s.settimeout(2)
            if s.recv(9):
                held.append(s)
            else:
                s.close()
                time.sleep(0.1)
        assert len(held) == 2
        code, details, _, _ = call(tg.grpc_endpoint, EXPORT_METHOD, body)
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        refused = [l for l in tg.metrics_text().splitlines()
                   if l.startswith("tailgate_requests_refused_total{") and 'reason="connection_limit"' in l and 'transport="grpc"' in l]
        assert refused and float(refused[0].split()[-1]) >= 1, refused
        for s in held:
            s.close()
        deadline = time.monotonic() + 10
        while True:
            code, details, _, _ = call(tg.grpc_endpoint, EXPORT_METHOD, body)
            if code == grpc.StatusCode.OK or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert code == grpc.StatusCode.OK, (code, details)
    finally:
        tg.kill()
