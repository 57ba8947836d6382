"""Downstream OTLP/gRPC receiver for the end-to-end tests.

A grpcio server implementing the official ``TraceService`` from
``opentelemetry-proto``. Every span it receives is recorded (thread-safely)
as a :class:`ReceivedSpan`. gzip-compressed requests are decompressed by grpc
itself (the server enables identity, deflate and gzip).

In-process use::

    rx = Receiver()
    port = rx.start()          # ephemeral port on 127.0.0.1
    ...
    rx.wait_until(lambda r: r.span_count() >= 10, timeout=5)
    rx.stop()

Standalone: ``python receiver.py --port 4317`` prints a line per export.
"""

from __future__ import annotations

import argparse
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2

# Tailgate batches forwarded spans; allow generous messages downstream.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def any_value_to_python(value: common_pb2.AnyValue) -> Any:
    """Converts an OTLP AnyValue into a plain Python value."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind)


def attributes_to_dict(attributes) -> dict[str, Any]:
    return {kv.key: any_value_to_python(kv.value) for kv in attributes}


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    parent_span_id: str  # "" for a root span
    name: str
    service_name: str | None
    kind: int
    status_code: int  # 0 unset, 1 ok, 2 error
    attributes: Mapping[str, Any] = field(hash=False, compare=False)

    @property
    def is_root(self) -> bool:
        return self.parent_span_id == ""


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, owner: "Receiver") -> None:
        self._owner = owner

    def Export(self, request, context):  # noqa: N802 (grpc naming)
        metadata = dict(context.invocation_metadata())
        self._owner._record_metadata(metadata)
        self._owner._record_call(metadata, request)
        self._owner._record(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class Receiver:
    """Thread-safe recording OTLP/gRPC trace receiver bound to 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, max_workers: int = 8,
                 on_export: Callable[[int], None] | None = None) -> None:
        self._host = host
        self._requested_port = port
        self._max_workers = max_workers
        self._on_export = on_export
        self._cond = threading.Condition()
        self._spans: list[ReceivedSpan] = []
        self._by_trace: dict[str, list[ReceivedSpan]] = {}
        self._export_calls = 0
        self._metadata: list[dict[str, str]] = []
        self._calls: list[tuple[dict[str, str], set[str]]] = []
        self._server: grpc.Server | None = None
        self.port: int | None = None

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> int:
        if self._server is not None:
            raise RuntimeError("receiver already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="receiver"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self), server)
        port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if port == 0:
            raise RuntimeError(f"receiver could not bind {self._host}:{self._requested_port}")
        server.start()
        self._server = server
        self.port = port
        return port

    def stop(self, grace: float = 1.0) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop(grace).wait(timeout=grace + 5)

    def __enter__(self) -> "Receiver":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.port}"

    # -- recording -----------------------------------------------------------

    def _record_metadata(self, metadata: dict[str, str]) -> None:
        with self._cond:
            self._metadata.append(metadata)

    def _record_call(self, metadata: dict[str, str], request) -> None:
        trace_ids = {span.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans}
        with self._cond:
            self._calls.append((metadata, trace_ids))

    def calls(self) -> list[tuple[dict[str, str], set[str]]]:
        """Every export call: its metadata and the trace IDs of its spans, in arrival order."""
        with self._cond:
            return list(self._calls)

    def metadata(self) -> list[dict[str, str]]:
        """The gRPC metadata (headers) of every export call, in arrival order."""
        with self._cond:
            return list(self._metadata)

    def _record(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        received: list[ReceivedSpan] = []
        for resource_spans in request.resource_spans:
            resource_attrs = attributes_to_dict(resource_spans.resource.attributes)
            service = resource_attrs.get("service.name")
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(ReceivedSpan(
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        name=span.name,
                        service_name=service,
                        kind=int(span.kind),
                        status_code=int(span.status.code),
                        attributes=attributes_to_dict(span.attributes),
                    ))
        with self._cond:
            self._export_calls += 1
            self._spans.extend(received)
            for s in received:
                self._by_trace.setdefault(s.trace_id, []).append(s)
            self._cond.notify_all()
        if self._on_export is not None:
            self._on_export(len(received))

    # -- queries (all return copies) -----------------------------------------

    def spans(self) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._spans)

    def span_count(self) -> int:
        with self._cond:
            return len(self._spans)

    def export_calls(self) -> int:
        with self._cond:
            return self._export_calls

    def trace_ids(self) -> set[str]:
        with self._cond:
            return set(self._by_trace)

    def traces(self) -> dict[str, list[ReceivedSpan]]:
        with self._cond:
            return {tid: list(spans) for tid, spans in self._by_trace.items()}

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._cond:
            return list(self._by_trace.get(trace_id.lower(), ()))

    def span_ids_of(self, trace_id: str) -> set[str]:
        return {s.span_id for s in self.trace(trace_id)}

    def wait_until(self, predicate: Callable[["Receiver"], bool], timeout: float,
                   poll: float = 0.25) -> bool:
        """Waits (at most ``timeout`` seconds) until ``predicate(self)`` holds.

        The predicate is re-evaluated whenever spans arrive and at least every
        ``poll`` seconds. Returns whether it held.
        """
        deadline = time.monotonic() + timeout
        while True:
            if predicate(self):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with self._cond:
                self._cond.wait(timeout=min(poll, remaining))


def main() -> None:
    parser = argparse.ArgumentParser(description="Recording OTLP/gRPC trace receiver")
    parser.add_argument("--port", type=int, default=4317)
    args = parser.parse_args()
    rx = Receiver(port=args.port, on_export=lambda n: print(f"export: {n} spans", flush=True))
    port = rx.start()
    print(f"listening on 127.0.0.1:{port}", flush=True)
    try:
        while True:
            time.sleep(5)
            print(f"total: {rx.span_count()} spans in {len(rx.trace_ids())} traces", flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        rx.stop()


if __name__ == "__main__":
    main()
