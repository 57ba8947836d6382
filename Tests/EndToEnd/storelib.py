"""Helpers for the durable-store end-to-end tests (test_store.py).

* StoreTailgate: conftest's TailgateProcess (through test_agent_timing.ConfiguredTailgate, for its metric
  helpers) started with `--data-dir`, a policies file of the test's own, and optionally the ports of an
  earlier instance (a restart on the same ports, so that SDK retries reach the new process).
* Raw OTLP builders: spans with a payload attribute of a chosen size, requests, HTTP/protobuf posting.
* Segment files: parse `traces-*.tgs` / `queue-*.tgs` (16-byte header, then u32 length, u32 CRC-32, payload).
* Log parsing (`key=value ... [Module] message` lines), /proc/PID/status memory readings.

Everything binds to 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import logging
import re
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from conftest import TailgateProcess
from test_agent_timing import ConfiguredTailgate

PROTOBUF = "application/x-protobuf"

# OTLP Span.flags: the exporter says whether the parent is in another process.
FLAG_HAS_IS_REMOTE = 0x100
FLAG_IS_REMOTE = 0x200
FLAG_SAMPLED = 0x01

KEEP_ALL_POLICIES = """\
policies:
  - name: everything
    type: always_sample
"""

# Errors kept for certain, 10 % of the rest by trace-ID hash (test_e2e.hash_selected predicts it).
ERRORS_AND_BASELINE_POLICIES = """\
policies:
  - name: errors
    type: status_code
    status_code:
      status_codes: [ERROR]
  - name: baseline
    type: probabilistic
    probabilistic:
      sampling_percentage: 10
"""

SEGMENT_MAGIC = b"TGSTORE\x00"
SEGMENT_HEADER = 16
RECORD_HEADER = 8
KIND_NAMES = {1: "spans", 2: "consolidated", 3: "decision", 4: "write_ahead", 5: "decisions", 6: "batch",
              7: "batch_done"}

# Reasons of tailgate_spans_dropped_total that mean a kept span was lost on the way out.
FORWARD_DROP_REASONS = ("queue_full", "shutdown_timeout", "rejected_by_downstream", "too_large_for_downstream",
                        "store_damaged")


# --------------------------------------------------------------------------
# The process


class StoreTailgate(ConfiguredTailgate):
    """`tailgate serve --data-dir DATA --policies POLICIES` with the given configuration text.

    `workdir` holds this instance's config and log (give each instance of a test its own); `data_dir` may be
    shared between instances (that is the point). `same_ports_as`: listen where an earlier instance listened.
    """

    def __init__(self, binary: Path, workdir: Path, downstream_port: int, config_text: str, *,
                 data_dir: Path | None, policies_path: Path, same_ports_as: TailgateProcess | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__(binary, workdir, downstream_port, config_text)
        self.data_dir = data_dir
        self.policies_path = policies_path
        if same_ports_as is not None:
            self.grpc_port = same_ports_as.grpc_port
            self.http_port = same_ports_as.http_port
            self.metrics_port = same_ports_as.metrics_port

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--policies") + 1] = str(self.policies_path)
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir)]
        return command

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when there is none)."""
        return sum(v for have, v in self.samples(name) if all(have.get(k) == w for k, w in labels.items()))

    def require(self, name: str) -> float:
        """Like sample(), but the metric must be on the page."""
        found = self.samples(name)
        assert found, f"metric {name} is missing from /metrics"
        return sum(v for _, v in found)

    def decided_total(self) -> float:
        return self.sample("tailgate_traces_decided_total")

    def forward_drops(self) -> dict[str, float]:
        return {r: self.sample("tailgate_spans_dropped_total", reason=r) for r in FORWARD_DROP_REASONS}

    def memory(self) -> dict[str, int]:
        """VmRSS / VmHWM (peak) / VmSize of the process, in KiB."""
        out = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "VmSize"):
                out[key] = int(rest.split()[0])
        return out

    def log_lines(self, message: str) -> list[str]:
        """Log lines whose message (after the `[Module]` tag) contains `message`."""
        return [line for line in self.log_text().splitlines() if message in line.split("]", 1)[-1]]


def log_fields(line: str) -> dict[str, str]:
    """The key=value metadata of a log line (values without spaces)."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z_][\w.]*)=(\S*)", line))


def wait_for(condition, timeout: float, poll: float = 0.1) -> bool:
    """Polls condition() until it holds or `timeout` seconds have passed; returns whether it held."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


# --------------------------------------------------------------------------
# Raw OTLP


_CRC32C_TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC32C_TABLE.append(_c)


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), the store's record checksum."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _CRC32C_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


@dataclass(frozen=True)
class SpanSpec:
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str  # "" for a root
    name: str
    error: bool = False
    payload_bytes: int = 0
    flags: int = 0
    service: str = "store-e2e"


def build_request(specs: list[SpanSpec], start_ns: int | None = None) -> bytes:
    """One ExportTraceServiceRequest holding `specs` (one resource per service, one scope)."""
    now = start_ns if start_ns is not None else time.time_ns()
    request = trace_service_pb2.ExportTraceServiceRequest()
    by_service: dict[str, list[SpanSpec]] = {}
    for s in specs:
        by_service.setdefault(s.service, []).append(s)
    for service, group in by_service.items():
        rs = request.resource_spans.add()
        kv = rs.resource.attributes.add()
        kv.key, kv.value.string_value = "service.name", service
        ss = rs.scope_spans.add()
        ss.scope.name, ss.scope.version = "tailgate.e2e.store", "1"
        for s in group:
            span = ss.spans.add()
            span.trace_id = bytes.fromhex(s.trace_id)
            span.span_id = bytes.fromhex(s.span_id)
            if s.parent_span_id:
                span.parent_span_id = bytes.fromhex(s.parent_span_id)
            span.flags = s.flags
            span.name = s.name
            span.kind = trace_pb2.Span.SPAN_KIND_INTERNAL
            span.start_time_unix_nano = now
            span.end_time_unix_nano = now + 1_000_000
            if s.payload_bytes:
                kv = span.attributes.add()
                # Not compressible in a trivial way, but deterministic per span.
                kv.key, kv.value.string_value = "payload", (s.span_id * (s.payload_bytes // 16 + 1))[:s.payload_bytes]
            if s.error:
                span.status.code = trace_pb2.Status.STATUS_CODE_ERROR
                span.status.message = "failed"
    return request.SerializeToString()


class Poster:
    """HTTP/protobuf client with one requests.Session per thread. post() returns the HTTP status, or None when no
    response came (connection refused or reset)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url
        self.timeout = timeout
        self._local = threading.local()

    def _session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
        return s

    def post(self, body: bytes) -> int | None:
        try:
            response = self._session().post(self.url, data=body, headers={"Content-Type": PROTOBUF},
                                             timeout=self.timeout)
        except requests.RequestException:
            self._local.session = None
            return None
        return response.status_code


# --------------------------------------------------------------------------
# Segment files


@dataclass
class Record:
    offset: int  # of the record header in the file
    length: int  # payload length
    crc: int
    payload: bytes

    @property
    def kind(self) -> int:
        return self.payload[0] if self.payload else 0

    @property
    def trace_id(self) -> str | None:
        """Trace ID of a spans / consolidated / decision record."""
        if self.kind in (1, 2, 3) and len(self.payload) >= 17:
            return self.payload[1:17].hex()
        return None

    @property
    def crc_ok(self) -> bool:
        return crc32c(self.payload) == self.crc


def read_segment(path: Path, live: bool = False) -> list[Record]:
    """Every record of a segment file, checked against the documented format (header, lengths).

    `live`: the file is being written by a running Tailgate. Its active segment is written in whole blocks as the
    write buffer fills (and completely at least every second), so it may end inside a record: reading stops there.
    """
    data = path.read_bytes()
    assert len(data) >= SEGMENT_HEADER, f"{path}: {len(data)} bytes, shorter than the 16-byte header"
    assert data[:8] == SEGMENT_MAGIC, f"{path}: bad magic {data[:8]!r}"
    version = struct.unpack_from("<I", data, 8)[0]
    assert version == 1, f"{path}: format version {version}"
    records = []
    offset = SEGMENT_HEADER
    while offset < len(data):
        if live and len(data) - offset < RECORD_HEADER:
            break
        assert len(data) - offset >= RECORD_HEADER, f"{path}: truncated record header at {offset}"
        length, crc = struct.unpack_from("<II", data, offset)
        if live and offset + RECORD_HEADER + length > len(data):
            break
        assert offset + RECORD_HEADER + length <= len(data), f"{path}: record at {offset} runs past the end"
        records.append(Record(offset, length, crc, data[offset + RECORD_HEADER:offset + RECORD_HEADER + length]))
        offset += RECORD_HEADER + length
    return records


def segments(data_dir: Path, prefix: str) -> list[Path]:
    return sorted(data_dir.glob(f"{prefix}-" + "[0-9a-f]" * 16 + ".tgs"))


# --------------------------------------------------------------------------
# A live SDK service (BatchSpanProcessor + OTLP/gRPC exporter) whose exporter outlasts a restart


_GRPC_EXPORTER_LOGGER = "opentelemetry.exporter.otlp.proto.grpc.exporter"


class SdkService:
    """One instrumented service exporting to tailgate over OTLP/gRPC through the real SDK.

    The exporter's timeout (30 s) bounds its retries: UNAVAILABLE / connection refused is retried after about
    1, 3, 7 and 15 s, so a restart of a few seconds on the same port loses nothing.
    """

    def __init__(self, name: str, endpoint: str, schedule_delay_ms: int = 200, timeout_s: float = 30.0) -> None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        from test_agent_timing import TimedExporter

        self.name = name
        self.exporter = TimedExporter(OTLPSpanExporter(endpoint=endpoint, insecure=True, timeout=timeout_s))
        self.provider = TracerProvider(resource=Resource.create({"service.name": name}), shutdown_on_exit=False)
        self.provider.add_span_processor(BatchSpanProcessor(
            self.exporter, max_queue_size=100_000, schedule_delay_millis=schedule_delay_ms,
            max_export_batch_size=512, export_timeout_millis=int(timeout_s * 1000) + 5000))
        self.tracer = self.provider.get_tracer("tailgate.e2e.store", "1.0.0")
        # The exporter logs each retried failure ("Transient error ... retrying in ..."): counted, so that a test can
        # tell that an export really met a closed port.
        self.retried_exports = 0
        service = self

        class _Retries(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                if "Transient error" in str(record.msg):
                    service.retried_exports += 1

        self._retry_handler = _Retries(level=logging.WARNING)
        logging.getLogger(_GRPC_EXPORTER_LOGGER).addHandler(self._retry_handler)

    def flush(self, timeout_s: float = 45.0) -> None:
        assert self.provider.force_flush(int(timeout_s * 1000)), f"{self.name}: force_flush timed out"
        assert not self.exporter.failures, f"{self.name}: exports failed: {self.exporter.failures}"

    def close(self) -> None:
        logging.getLogger(_GRPC_EXPORTER_LOGGER).removeHandler(self._retry_handler)
        self.provider.shutdown()
