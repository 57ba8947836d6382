"""Helpers for the fault suite (Tests/Faults): one `tailgate serve` per test with its own config,
hand-built OTLP, the OpenTelemetry SDK as a well-behaved client, raw sockets as hostile ones.

Reuses Tests/EndToEnd: `free_ports`, `_port_open`, `tailgate_binary`, the `Receiver` (grpcio +
opentelemetry-proto) and the SDK plumbing of `agent.py`. EndToEnd's conftest is loaded under its own
module name (`tailgate_e2e_conftest`), so its fixtures and hooks are not registered twice and the two
`conftest` modules never shadow each other.

Every wait here has a deadline; nothing loops unbounded.
"""

from __future__ import annotations

import importlib.util
import json
import os
import random
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Callable, Iterable, Sequence

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
E2E = REPO / "Tests" / "EndToEnd"
if str(E2E) not in sys.path:
    sys.path.insert(0, str(E2E))


def _load_e2e_conftest():
    name = "tailgate_e2e_conftest"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, E2E / "conftest.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_e2e = _load_e2e_conftest()
free_ports = _e2e.free_ports
port_open = _e2e._port_open
tailgate_binary = _e2e.tailgate_binary

import grpc  # noqa: E402
import pytest  # noqa: E402
import requests  # noqa: E402
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc  # noqa: E402
from opentelemetry.proto.common.v1 import common_pb2  # noqa: E402
from opentelemetry.proto.trace.v1 import trace_pb2  # noqa: E402

import receiver as _receiver_module  # noqa: E402  (Tests/EndToEnd/receiver.py)
from receiver import Receiver  # noqa: E402

POLICIES_DIR = REPO / "policies"
DEFAULT_POLICIES = POLICIES_DIR / "default.yaml"
READY_TIMEOUT_S = 20.0
PROTOBUF = "application/x-protobuf"
EXPORT_PATH = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

# Timers long enough that nothing is decided before SIGTERM (the trace stays buffered).
LONG_TIMERS = """\
buffer:
  wait_after_root: 10m
  idle_timeout: 10m
  max_trace_age: 1h
"""
# Timers short enough that traces are decided within a second.
SHORT_TIMERS = """\
buffer:
  wait_after_root: 200ms
  idle_timeout: 1s
  max_trace_age: 30s
"""


# --------------------------------------------------------------------------
# Waiting


def wait_for(condition: Callable[[], bool], timeout: float, poll: float = 0.05) -> bool:
    """Polls `condition` until it holds or `timeout` seconds passed; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


# --------------------------------------------------------------------------
# The process under test


class Tailgate:
    """One `tailgate serve` child: its own ports, config file and combined stdout+stderr log.

    `config` is the YAML text of --config (may be empty). `downstream` is the --downstream value.
    Listeners default to fresh ports; pass `grpc=None` (etc.) for "off", or an int to force a port.
    """

    def __init__(self, workdir: Path, *, downstream: str, config: str = "",
                 policies: Path | None = DEFAULT_POLICIES, grpc: int | None | bool = True,
                 http: int | None | bool = True, metrics: int | None | bool = True,
                 extra_args: Sequence[str] = (), name: str = "tailgate") -> None:
        self.binary = tailgate_binary()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.downstream = downstream
        self.config = config
        self.policies = policies
        fresh = iter(free_ports(3))
        pick = lambda v: next(fresh) if v is True else (None if v in (None, False) else int(v))  # noqa: E731
        self.grpc_port, self.http_port, self.metrics_port = pick(grpc), pick(http), pick(metrics)
        self.extra_args = list(extra_args)
        self.config_path = self.workdir / f"{name}.yaml"
        self.log_path = self.workdir / f"{name}.log"
        self.proc: subprocess.Popen | None = None
        self.started_at = 0.0

    # -- addresses --------------------------------------------------------

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1/traces"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        listen = lambda p: "off" if p is None else f"127.0.0.1:{p}"  # noqa: E731
        cmd = [str(self.binary), "serve", "--config", str(self.config_path),
               "--grpc-listen", listen(self.grpc_port), "--http-listen", listen(self.http_port),
               "--metrics-listen", listen(self.metrics_port), "--downstream", self.downstream]
        if self.policies is not None:
            cmd += ["--policies", str(self.policies)]
        return cmd + self.extra_args

    # -- lifecycle --------------------------------------------------------

    def start(self, wait_ready: bool = True) -> "Tailgate":
        self.config_path.write_text(self.config)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, cwd=self.workdir)
        self.started_at = time.monotonic()
        if wait_ready:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        pending = {p for p in (self.grpc_port, self.http_port, self.metrics_port) if p is not None}
        deadline = time.monotonic() + timeout
        while pending:
            if self.proc.poll() is not None:
                pytest.fail(f"tailgate exited with code {self.proc.returncode} during startup\n"
                            f"command: {' '.join(self.command())}\nconfig:\n{self.config}\n{self.log_tail()}",
                            pytrace=False)
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"tailgate did not listen on {sorted(pending)} within {timeout:.0f}s\n"
                            f"{self.log_tail()}", pytrace=False)
            pending = {p for p in pending if not port_open(p)}
            if pending:
                time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def assert_alive(self, context: str = "") -> None:
        if not self.alive():
            pytest.fail(f"tailgate died {context}(exit code {self.proc.returncode})\n{self.log_tail()}",
                        pytrace=False)

    def stop(self, timeout: float, sig: int = signal.SIGTERM) -> tuple[int | None, float]:
        """Sends `sig`, waits at most `timeout` s. Returns (exit code or None if still running, seconds).
        A process still running after `timeout` is SIGKILLed (its code is reported as None)."""
        assert self.proc is not None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None, time.monotonic() - t0
        return self.proc.returncode, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    # -- diagnostics ------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, max_chars: int = 6000) -> str:
        text = self.log_text()
        if len(text) > max_chars:
            text = "...\n" + text[-max_chars:]
        return f"--- tailgate output ({self.log_path}) ---\n{text}\n--- end ---"

    def metrics_text(self, timeout: float = 5.0) -> str:
        response = requests.get(self.metrics_url, timeout=timeout)
        assert response.status_code == 200, f"GET /metrics -> {response.status_code}"
        return response.text

    def samples(self, name: str, **labels: str) -> dict[tuple, float]:
        """{label items: value} of every sample of `name` whose labels include `labels`."""
        out = {}
        for line in self.metrics_text().splitlines():
            m = _SAMPLE.match(line)
            if m and m.group(1) == name:
                have = dict(_LABEL.findall(m.group(2) or ""))
                if all(have.get(k) == v for k, v in labels.items()):
                    out[tuple(sorted(have.items()))] = float(m.group(3))
        return out

    def total(self, name: str, **labels: str) -> float:
        return sum(self.samples(name, **labels).values())


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def downstream_port() -> int:
    """A free port below the kernel's ephemeral range: while nothing listens on it, no outgoing
    connection (tailgate's reconnects included) can get it as its source port (as test_outage.py)."""
    try:
        low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 0
    rng = random.Random()
    for _ in range(50 if low > 20_000 else 0):
        port = rng.randrange(20_000, low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    return free_ports(1)[0]


# --------------------------------------------------------------------------
# Receivers


class SizedReceiver(Receiver):
    """The EndToEnd Receiver with a chosen grpc max_receive_message_length (it hard-codes 64 MiB)."""

    def __init__(self, max_receive_bytes: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.max_receive_bytes = max_receive_bytes

    def start(self) -> int:
        if self._server is not None:
            raise RuntimeError("receiver already started")
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=self._max_workers, thread_name_prefix="receiver"),
            options=[("grpc.max_receive_message_length", self.max_receive_bytes),
                     ("grpc.max_send_message_length", self.max_receive_bytes),
                     ("grpc.so_reuseport", 0)])
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_receiver_module._TraceService(self), server)
        port = server.add_insecure_port(f"{self._host}:{self._requested_port}")
        if port == 0:
            raise RuntimeError(f"receiver could not bind {self._host}:{self._requested_port}")
        server.start()
        self._server, self.port = server, port
        return port


def span_key_counts(receiver: Receiver) -> Counter:
    return Counter((s.trace_id, s.span_id) for s in receiver.spans())


def delivery_report(expected: Iterable[tuple[str, str]], got: Counter) -> str:
    """'' when `got` holds every expected (trace_id, span_id) exactly once and nothing else."""
    expected = list(expected)
    want = set(expected)
    problems = []
    missing = sorted(want - set(got))
    dupes = sorted(k for k, n in got.items() if n > 1)
    extra = sorted(set(got) - want)
    if len(want) != len(expected):
        problems.append(f"(test bug) {len(expected) - len(want)} duplicate expected ids")
    if missing:
        problems.append(f"{len(missing)} of {len(want)} spans missing, e.g. {missing[:5]}")
    if dupes:
        problems.append(f"{len(dupes)} spans delivered more than once, e.g. {dupes[:5]}")
    if extra:
        problems.append(f"{len(extra)} unexpected spans, e.g. {extra[:5]}")
    return "; ".join(problems)


# --------------------------------------------------------------------------
# The file: downstream (OTLP/JSON lines)


def read_jsonl_spans(path: Path) -> tuple[Counter, list[str]]:
    """(Counter of (traceId, spanId) over every line, list of problems: unparsable lines)."""
    got: Counter = Counter()
    problems = []
    if not path.exists():
        return got, [f"{path} does not exist"]
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            request = json.loads(line)
        except ValueError as error:
            problems.append(f"line {number}: not JSON ({error}): {line[:120]!r}")
            continue
        for rs in request.get("resourceSpans", []):
            for ss in rs.get("scopeSpans", []):
                for span in ss.get("spans", []):
                    got[(span.get("traceId", "").lower(), span.get("spanId", "").lower())] += 1
    return got, problems


# --------------------------------------------------------------------------
# Hand-built OTLP protobuf (opentelemetry-proto classes)


def rand_ids(rng: random.Random) -> tuple[str, str]:
    return rng.randbytes(16).hex(), rng.randbytes(8).hex()


def make_span(trace_id: str, span_id: str, parent: str = "", name: str = "op", *, error: bool = False,
              attrs: dict | None = None) -> trace_pb2.Span:
    span = trace_pb2.Span(trace_id=bytes.fromhex(trace_id), span_id=bytes.fromhex(span_id),
                          parent_span_id=bytes.fromhex(parent), name=name, kind=trace_pb2.Span.SPAN_KIND_INTERNAL)
    now = time.time_ns()
    span.start_time_unix_nano, span.end_time_unix_nano = now - 1_000_000, now
    if error:
        span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
        span.status.message = "fault suite"
    for key, value in (attrs or {}).items():
        kv = span.attributes.add()
        kv.key = key
        set_any_value(kv.value, value)
    return span


def set_any_value(target: common_pb2.AnyValue, value) -> None:
    if isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        target.int_value = value
    elif isinstance(value, float):
        target.double_value = value
    else:
        target.string_value = str(value)


def make_request(spans: Iterable[trace_pb2.Span], service: str = "faults") -> trace_service_pb2.ExportTraceServiceRequest:
    request = trace_service_pb2.ExportTraceServiceRequest()
    rs = request.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    ss.scope.name = "tailgate.faults"
    ss.spans.extend(spans)
    return request


def post_proto(url: str, body: bytes, timeout: float = 10.0) -> requests.Response:
    return requests.post(url, data=body, headers={"Content-Type": PROTOBUF}, timeout=timeout)


def export_error_traces_proto(url: str, n_traces: int, spans_per_trace: int, rng: random.Random,
                              traces_per_request: int = 50) -> list[tuple[str, str]]:
    """Hand-built ERROR traces (root has ERROR status) over OTLP/HTTP protobuf; returns their ids."""
    ids: list[tuple[str, str]] = []
    batch: list[trace_pb2.Span] = []

    def flush():
        if batch:
            response = post_proto(url, make_request(batch).SerializeToString())
            assert response.status_code == 200, f"export -> {response.status_code}: {response.content[:300]!r}"
            batch.clear()

    for i in range(n_traces):
        trace_id, root = rand_ids(rng)
        batch.append(make_span(trace_id, root, "", "agent.run", error=True))
        ids.append((trace_id, root))
        for _ in range(spans_per_trace - 1):
            child = rng.randbytes(8).hex()
            batch.append(make_span(trace_id, child, root, "llm.call"))
            ids.append((trace_id, child))
        if (i + 1) % traces_per_request == 0:
            flush()
    flush()
    return ids


# Protobuf wire pieces for bytes the generated classes refuse to produce (e.g. invalid UTF-8).

def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def ld_field(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


# --------------------------------------------------------------------------
# The OpenTelemetry SDK as a client


def sdk_error_traces(protocol: str, endpoint: str, n_traces: int, spans_per_trace: int = 3,
                     seed: int = 1, service: str = "faults", timeout_s: float = 30.0) -> list[tuple[str, str]]:
    """Creates `n_traces` traces with the real SDK (root span status ERROR) and exports them over
    `protocol` ('grpc': endpoint host:port, 'http': the /v1/traces URL). Returns the (trace, span) ids
    the exporter reported as exported; fails the test if any export failed."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    from opentelemetry.trace import Status, StatusCode

    from agent import SeededIdGenerator, make_exporter

    class RecordingExporter(SpanExporter):
        def __init__(self, inner):
            self.inner, self.ids, self.failed = inner, [], 0
            self.lock = threading.Lock()

        def export(self, spans):
            result = self.inner.export(spans)
            with self.lock:
                if result == SpanExportResult.SUCCESS:
                    self.ids += [(format(s.context.trace_id, "032x"), format(s.context.span_id, "016x"))
                                 for s in spans]
                else:
                    self.failed += len(spans)
            return result

        def shutdown(self):
            self.inner.shutdown()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    exporter = RecordingExporter(make_exporter(protocol, endpoint, gzip=protocol == "grpc", timeout=5.0))
    provider = TracerProvider(resource=Resource.create({"service.name": service}),
                              id_generator=SeededIdGenerator(seed), shutdown_on_exit=False)
    provider.add_span_processor(BatchSpanProcessor(
        exporter, max_queue_size=n_traces * spans_per_trace + 1024, schedule_delay_millis=50,
        max_export_batch_size=512, export_timeout_millis=int(timeout_s * 1000)))
    tracer = provider.get_tracer("tailgate.faults")
    try:
        for _ in range(n_traces):
            with tracer.start_as_current_span("agent.run") as root:
                for k in range(spans_per_trace - 1):
                    with tracer.start_as_current_span(f"step.{k}"):
                        pass
                root.set_status(Status(StatusCode.ERROR, "fault suite"))
        flushed = provider.force_flush(timeout_millis=int(timeout_s * 1000))
    finally:
        provider.shutdown()
    assert flushed, f"the SDK did not flush within {timeout_s}s"
    assert exporter.failed == 0, f"the SDK failed to export {exporter.failed} spans to {endpoint}"
    assert len(exporter.ids) == n_traces * spans_per_trace, \
        f"the SDK exported {len(exporter.ids)} of {n_traces * spans_per_trace} spans"
    return exporter.ids


# --------------------------------------------------------------------------
# Raw sockets (hostile clients)


def raw_connect(port: int, timeout: float = 3.0) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def http_head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_http_response_head(s: socket.socket, timeout: float) -> tuple[int, dict[str, str], bytes]:
    """Reads until the end of a response head (bounded); returns (status, lower-cased headers, raw)."""
    s.settimeout(timeout)
    deadline = time.monotonic() + timeout
    data = b""
    while b"\r\n\r\n" not in data:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no complete response head within {timeout}s: {data[:200]!r}")
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"connection closed before a complete response head: {data[:200]!r}")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    status = int(status_line.split()[1])
    headers = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        headers[key.strip().lower()] = value.strip()
    return status, headers, data


def closed_by_peer(s: socket.socket, timeout: float) -> bool:
    """True when the peer closed (recv -> b'' or a reset) within `timeout`; data is read and ignored."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        s.settimeout(remaining)
        try:
            if not s.recv(65536):
                return True
        except (ConnectionResetError, BrokenPipeError):
            return True
        except (socket.timeout, TimeoutError):
            return False
        except OSError:
            return True


# HTTP/2 by hand: just enough to open a gRPC call and leave its message unfinished.

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS = 0x0, 0x1, 0x4
H2_END_STREAM, H2_END_HEADERS = 0x1, 0x4


def h2_frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id) + payload


def hpack_int(value: int, prefix_bits: int, first_byte_flags: int = 0) -> bytes:
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first_byte_flags | value])
    out = bytearray([first_byte_flags | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hpack_literal(name: str, value: str) -> bytes:
    """Literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    n, v = name.encode(), value.encode()
    return b"\x00" + hpack_int(len(n), 7) + n + hpack_int(len(v), 7) + v


def grpc_call_head(authority: str, path: str = EXPORT_PATH) -> bytes:
    return b"".join(hpack_literal(k, v) for k, v in (
        (":method", "POST"), (":scheme", "http"), (":path", path), (":authority", authority),
        ("content-type", "application/grpc"), ("te", "trailers")))


def open_stalled_grpc_call(port: int, announced: int = 100_000, sent: bytes = b"\x0a\x03abc") -> socket.socket:
    """A raw HTTP/2 connection with one Export call whose gRPC message announces `announced` bytes
    but carries only `sent`: the call is left open, mid-message."""
    s = raw_connect(port)
    s.sendall(H2_PREFACE + h2_frame(H2_SETTINGS, 0, 0, b"")
              + h2_frame(H2_HEADERS, H2_END_HEADERS, 1, grpc_call_head(f"127.0.0.1:{port}"))
              + h2_frame(H2_DATA, 0, 1, b"\x00" + struct.pack(">I", announced) + sent))
    return s


def drain_quietly(sockets: list[socket.socket]) -> None:
    """Reads whatever is waiting on each socket without blocking (keeps peers' send buffers empty)."""
    for s in sockets:
        try:
            s.setblocking(False)
            while s.recv(65536):
                pass
        except (BlockingIOError, OSError):
            pass
        finally:
            try:
                s.setblocking(True)
            except OSError:
                pass


def close_all(sockets: Iterable[socket.socket]) -> None:
    for s in sockets:
        try:
            s.close()
        except OSError:
            pass
