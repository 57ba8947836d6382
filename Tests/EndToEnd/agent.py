"""Traffic generator: LLM-agent-shaped traces through the real OpenTelemetry SDK.

Two TracerProviders stand for two services, ``agent`` and ``tools``, each with
its own BatchSpanProcessor and OTLP exporter (gRPC or HTTP/protobuf, optionally
gzip). Every trace has five spans::

    agent.run                      (agent, root)
    ├── retrieval.vector_search    (agent)
    ├── llm.call                   (agent)
    │   └── tool.execute           (tools; parent passed across providers)
    └── llm.call                   (agent)

A seeded RNG picks each trace's category:

* ``error`` (~5%): one span (root, retrieval, an llm.call, or only the tool
  span in the other service; sometimes two) has status ERROR. Tokens < 10,000.
* ``high_tokens`` (~5%): the trace's total tokens reach 10,000: exactly
  10,000, a sum where no single span reaches 10,000, or one big span.
* ``ordinary``: total < 10,000 (some exactly 9,999).

Token totals follow Tailgate's rule: per span (input_tokens, else prompt_tokens)
+ (output_tokens, else completion_tokens), summed over all spans. Some traces
use only the deprecated names, some mix them per field, and some spans carry
both names with a large deprecated decoy that must be ignored.

Trace and span ids come from seeded id generators, so a seed reproduces the
same ids (and so the same hash-sampling decisions).
"""

from __future__ import annotations

import argparse
import json
import random
import threading
import time
from dataclasses import dataclass
from typing import Sequence

from opentelemetry import context as otel_context
from opentelemetry import trace as trace_api
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode

TOKEN_THRESHOLD = 10_000
ERROR_SHARE = 0.05
HIGH_TOKEN_SHARE = 0.05

ERROR = "error"
HIGH_TOKENS = "high_tokens"
ORDINARY = "ordinary"

SPAN_ROLES = ("root", "retrieval", "llm1", "tool", "llm2")
SERVICE_OF_ROLE = {"root": "agent", "retrieval": "agent", "llm1": "agent", "tool": "tools", "llm2": "agent"}

PROVIDERS_AND_MODELS = [
    ("openai", "gpt-4o"),
    ("anthropic", "claude-sonnet-4"),
    ("aws.bedrock", "amazon.nova-pro"),
    ("gcp.vertex_ai", "gemini-2.0-flash"),
    ("mistral_ai", "mistral-large"),
]
TOOLS = ["web_search", "calculator", "sql_query", "read_file", "send_email"]


# --------------------------------------------------------------------------
# Result types


@dataclass(frozen=True)
class GeneratedSpan:
    span_id: str
    parent_span_id: str  # "" for the root
    name: str
    service: str
    role: str
    error: bool


@dataclass(frozen=True)
class GeneratedTrace:
    trace_id: str  # 32 lowercase hex digits
    category: str  # ERROR | HIGH_TOKENS | ORDINARY
    total_tokens: int
    has_error: bool
    variant: str  # human-readable description of the shape, for failure messages
    spans: tuple[GeneratedSpan, ...]

    @property
    def span_ids(self) -> frozenset[str]:
        return frozenset(s.span_id for s in self.spans)

    @property
    def services(self) -> frozenset[str]:
        return frozenset(s.service for s in self.spans)


@dataclass
class RunResult:
    traces: list[GeneratedTrace]
    spans_created: int
    spans_exported: int  # spans in exports that the exporters reported as successful
    failed_exports: int
    failed_spans: int
    elapsed_seconds: float

    @property
    def ok(self) -> bool:
        return self.failed_exports == 0 and self.spans_exported == self.spans_created


# --------------------------------------------------------------------------
# SDK plumbing


class SeededIdGenerator(IdGenerator):
    """Deterministic ids from a private RNG (ids are random but reproducible)."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def _nonzero(self, bits: int) -> int:
        with self._lock:
            while True:
                value = self._rng.getrandbits(bits)
                if value:
                    return value

    def generate_span_id(self) -> int:
        return self._nonzero(64)

    def generate_trace_id(self) -> int:
        return self._nonzero(128)

    def is_trace_id_random(self) -> bool:
        return True


class CountingExporter(SpanExporter):
    """Delegates to a real exporter and counts what it reported as exported."""

    def __init__(self, inner: SpanExporter) -> None:
        self._inner = inner
        self._lock = threading.Lock()
        self.spans_exported = 0
        self.failed_exports = 0
        self.failed_spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        with self._lock:
            if result == SpanExportResult.SUCCESS:
                self.spans_exported += len(spans)
            else:
                self.failed_exports += 1
                self.failed_spans += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def make_exporter(protocol: str, endpoint: str, gzip: bool, timeout: float = 10.0) -> SpanExporter:
    """protocol 'grpc': endpoint 'host:port'; 'http': endpoint 'http://host:port/v1/traces'."""
    if protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=endpoint,
            insecure=True,
            timeout=timeout,
            compression=grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression,
        )
    if protocol == "http":
        from opentelemetry.exporter.otlp.proto.http import Compression
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(
            endpoint=endpoint,
            timeout=timeout,
            compression=Compression.Gzip if gzip else Compression.NoCompression,
        )
    raise ValueError(f"unknown protocol {protocol!r}")


def make_provider(service: str, exporter: SpanExporter, seed: int,
                  schedule_delay_millis: float) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": service, "service.version": "1.0.0"}),
        id_generator=SeededIdGenerator(seed),
        shutdown_on_exit=False,
    )
    provider.add_span_processor(BatchSpanProcessor(
        exporter,
        max_queue_size=200_000,
        schedule_delay_millis=schedule_delay_millis,
        max_export_batch_size=512,
        export_timeout_millis=30_000,
    ))
    return provider


# --------------------------------------------------------------------------
# Trace plans (pure; driven by the seeded RNG)


@dataclass
class _Usage:
    input: int
    output: int
    style: str  # "new" | "old" | "mixed" | "both"

    def attributes(self, rng: random.Random) -> dict[str, int]:
        if self.style == "new":
            return {"gen_ai.usage.input_tokens": self.input, "gen_ai.usage.output_tokens": self.output}
        if self.style == "old":
            return {"gen_ai.usage.prompt_tokens": self.input, "gen_ai.usage.completion_tokens": self.output}
        if self.style == "mixed":  # current name for one field, deprecated for the other
            if rng.random() < 0.5:
                return {"gen_ai.usage.input_tokens": self.input, "gen_ai.usage.completion_tokens": self.output}
            return {"gen_ai.usage.prompt_tokens": self.input, "gen_ai.usage.output_tokens": self.output}
        if self.style == "both":  # current names win; the deprecated decoys must be ignored
            return {
                "gen_ai.usage.input_tokens": self.input,
                "gen_ai.usage.output_tokens": self.output,
                "gen_ai.usage.prompt_tokens": self.input + TOKEN_THRESHOLD + rng.randint(0, 5000),
                "gen_ai.usage.completion_tokens": self.output + rng.randint(1, 500),
            }
        raise ValueError(self.style)


@dataclass
class _Plan:
    category: str
    variant: str
    usage: dict[str, _Usage]  # role -> usage; roles without usage carry no token attributes
    error_roles: frozenset[str]

    @property
    def total_tokens(self) -> int:
        return sum(u.input + u.output for u in self.usage.values())


def _split(total: int, parts: int, cap: int, rng: random.Random) -> list[int]:
    """Splits total into `parts` non-negative ints, each <= cap (requires total <= parts*cap)."""
    if total > parts * cap:
        raise ValueError("infeasible split")
    values = [total // parts] * parts
    for i in range(total % parts):
        values[i] += 1
    for _ in range(8 if parts > 1 else 0):  # random transfers keep the sum and the cap
        i, j = rng.sample(range(parts), 2)
        amount = rng.randint(0, min(values[i], cap - values[j]))
        values[i] -= amount
        values[j] += amount
    rng.shuffle(values)
    return values


def _usage_roles(rng: random.Random, count: int) -> list[str]:
    # The tool span (other service) sometimes carries tokens too, so the sum crosses services.
    pool = ["llm1", "llm2", "tool"] if rng.random() < 0.3 else ["llm1", "llm2"]
    count = min(count, len(pool))
    return rng.sample(pool, count)


def _trace_style(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.70:
        return "new"
    if r < 0.90:
        return "old"
    return "per_span"  # each span picks its own style


def _assign_usage(rng: random.Random, totals: dict[str, int]) -> tuple[dict[str, _Usage], str]:
    style = _trace_style(rng)
    usage = {}
    for role, tokens in totals.items():
        span_style = rng.choice(["new", "old", "mixed", "both"]) if style == "per_span" else style
        inp = rng.randint(0, tokens)
        usage[role] = _Usage(inp, tokens - inp, span_style)
    return usage, style


def _spread(total: int, rng: random.Random, cap: int | None = None) -> dict[str, int]:
    roles = _usage_roles(rng, rng.choice([1, 2, 2, 3]))
    if cap is not None:
        while len(roles) * cap < total:
            roles = _usage_roles(rng, 3)
    parts = _split(total, len(roles), cap if cap is not None else total, rng)
    return dict(zip(roles, parts))


def _ordinary_total(rng: random.Random) -> tuple[int, str]:
    r = rng.random()
    if r < 0.10:
        return TOKEN_THRESHOLD - 1, "total=9999"
    if r < 0.15:
        return 0, "no tokens"
    return rng.randint(1, TOKEN_THRESHOLD - 2), "total<9999"


def plan_trace(rng: random.Random) -> _Plan:
    r = rng.random()
    if r < ERROR_SHARE:
        total, why = _ordinary_total(rng)
        usage, style = _assign_usage(rng, _spread(total, rng))
        s = rng.random()
        if s < 0.35:
            roles = frozenset({"tool"})  # only the span in the other service fails
        elif s < 0.85:
            roles = frozenset({rng.choice(["root", "retrieval", "llm1", "llm2"])})
        else:
            roles = frozenset(rng.sample(SPAN_ROLES, 2))
        return _Plan(ERROR, f"error on {sorted(roles)}, {why}, style={style}", usage, roles)
    if r < ERROR_SHARE + HIGH_TOKEN_SHARE:
        s = rng.random()
        if s < 0.25:
            totals, why = _spread(TOKEN_THRESHOLD, rng, cap=TOKEN_THRESHOLD), "total=10000"
        elif s < 0.45:
            totals, why = _spread(TOKEN_THRESHOLD, rng, cap=TOKEN_THRESHOLD - 1), "total=10000, every span<10000"
        elif s < 0.80:
            total = rng.randint(TOKEN_THRESHOLD + 1, 2 * (TOKEN_THRESHOLD - 1))
            totals, why = _spread(total, rng, cap=TOKEN_THRESHOLD - 1), "sum>=10000, every span<10000"
        else:
            total = rng.randint(TOKEN_THRESHOLD, 200_000)
            totals, why = {rng.choice(["llm1", "llm2"]): total}, "one big span"
        usage, style = _assign_usage(rng, totals)
        return _Plan(HIGH_TOKENS, f"{why}, style={style}", usage, frozenset())
    total, why = _ordinary_total(rng)
    usage, style = _assign_usage(rng, _spread(total, rng))
    return _Plan(ORDINARY, f"{why}, style={style}", usage, frozenset())


# --------------------------------------------------------------------------
# Emitting one trace through the SDK


def _hex_ids(span: trace_api.Span) -> tuple[str, str]:
    ctx = span.get_span_context()
    return trace_api.format_trace_id(ctx.trace_id), trace_api.format_span_id(ctx.span_id)


def _emit_trace(agent: trace_api.Tracer, tools: trace_api.Tracer, plan: _Plan, index: int,
                rng: random.Random) -> GeneratedTrace:
    provider_name, model = rng.choice(PROVIDERS_AND_MODELS)
    tool_name = rng.choice(TOOLS)
    conversation = f"conv-{index:06d}"
    created: list[GeneratedSpan] = []

    def start(tracer, role, name, parent, kind, attrs):
        ctx = trace_api.set_span_in_context(parent) if parent is not None else otel_context.Context()
        span = tracer.start_span(name, context=ctx, kind=kind, attributes=attrs)
        if role in plan.usage:
            span.set_attributes(plan.usage[role].attributes(rng))
        return span

    def finish(span, role, parent):
        if role in plan.error_roles:
            span.set_attribute("error.type", rng.choice(["timeout", "rate_limited", "500", "ToolError"]))
            span.set_status(Status(StatusCode.ERROR, f"{role} failed"))
        _, span_id = _hex_ids(span)
        parent_id = _hex_ids(parent)[1] if parent is not None else ""
        created.append(GeneratedSpan(span_id, parent_id, span.name, SERVICE_OF_ROLE[role], role,
                                     role in plan.error_roles))
        span.end()

    def llm_attrs(n):
        return {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": provider_name,
            "gen_ai.request.model": model,
            "gen_ai.response.model": f"{model}-2025",
            "gen_ai.response.finish_reasons": ["tool_calls" if n == 1 else "stop"],
            "gen_ai.conversation.id": conversation,
        }

    root = start(agent, "root", "agent.run", None, SpanKind.SERVER, {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": "support-bot",
        "gen_ai.conversation.id": conversation,
    })
    retrieval = start(agent, "retrieval", "retrieval.vector_search", root, SpanKind.CLIENT, {
        "gen_ai.operation.name": "retrieval",
        "db.system.name": "qdrant",
        "retrieval.documents": rng.randint(1, 20),
    })
    finish(retrieval, "retrieval", root)
    llm1 = start(agent, "llm1", "llm.call", root, SpanKind.CLIENT, llm_attrs(1))
    # The tool runs in the other service; its parent is passed explicitly across providers.
    tool = start(tools, "tool", "tool.execute", llm1, SpanKind.SERVER, {
        "gen_ai.operation.name": "execute_tool",
        "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.id": f"call_{index:06d}",
    })
    finish(tool, "tool", llm1)
    finish(llm1, "llm1", root)
    llm2 = start(agent, "llm2", "llm.call", root, SpanKind.CLIENT, llm_attrs(2))
    finish(llm2, "llm2", root)
    finish(root, "root", None)

    trace_id, _ = _hex_ids(root)
    return GeneratedTrace(
        trace_id=trace_id,
        category=plan.category,
        total_tokens=plan.total_tokens,
        has_error=bool(plan.error_roles),
        variant=plan.variant,
        spans=tuple(created),
    )


# --------------------------------------------------------------------------
# Public entry point


def run_agent(protocol: str, endpoint: str, n_traces: int, seed: int, *, gzip: bool = True,
              rate: float | None = 1000.0, stop_event: threading.Event | None = None,
              agent_delay_ms: float = 200, tools_delay_ms: float = 100,
              flush_timeout_s: float = 60.0) -> RunResult:
    """Emits up to n_traces traces (fewer if stop_event gets set), then flushes and
    shuts both providers down.

    rate: traces per second (None = as fast as possible). The tools service uses a
    shorter batch delay than the agent so that, as in a real deployment with a
    local collector, the tool span is normally exported before the root it hangs off.
    """
    rng = random.Random(seed)
    agent_exporter = CountingExporter(make_exporter(protocol, endpoint, gzip))
    tools_exporter = CountingExporter(make_exporter(protocol, endpoint, gzip))
    agent_provider = make_provider("agent", agent_exporter, seed * 2 + 1, agent_delay_ms)
    tools_provider = make_provider("tools", tools_exporter, seed * 2 + 2, tools_delay_ms)
    agent_tracer = agent_provider.get_tracer("tailgate.e2e.agent", "1.0.0")
    tools_tracer = tools_provider.get_tracer("tailgate.e2e.tools", "1.0.0")

    traces: list[GeneratedTrace] = []
    started = time.monotonic()
    try:
        for i in range(n_traces):
            if stop_event is not None and stop_event.is_set():
                break
            traces.append(_emit_trace(agent_tracer, tools_tracer, plan_trace(rng), i, rng))
            if rate:
                ahead = started + (i + 1) / rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
    finally:
        flush_ms = int(flush_timeout_s * 1000)
        for provider in (tools_provider, agent_provider):
            provider.force_flush(flush_ms)
        for provider in (tools_provider, agent_provider):
            provider.shutdown()

    return RunResult(
        traces=traces,
        spans_created=sum(len(t.spans) for t in traces),
        spans_exported=agent_exporter.spans_exported + tools_exporter.spans_exported,
        failed_exports=agent_exporter.failed_exports + tools_exporter.failed_exports,
        failed_spans=agent_exporter.failed_spans + tools_exporter.failed_spans,
        elapsed_seconds=time.monotonic() - started,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Emit agent-shaped traces with the OpenTelemetry SDK")
    parser.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    parser.add_argument("--endpoint", default=None,
                        help="grpc: 127.0.0.1:4317, http: http://127.0.0.1:4318/v1/traces")
    parser.add_argument("--traces", type=int, default=100)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--no-gzip", action="store_true")
    args = parser.parse_args()
    endpoint = args.endpoint or ("127.0.0.1:4317" if args.protocol == "grpc" else "http://127.0.0.1:4318/v1/traces")
    result = run_agent(args.protocol, endpoint, args.traces, args.seed, gzip=not args.no_gzip, rate=args.rate)
    counts: dict[str, int] = {}
    for t in result.traces:
        counts[t.category] = counts.get(t.category, 0) + 1
    print(json.dumps({
        "traces": len(result.traces), "categories": counts, "spans_created": result.spans_created,
        "spans_exported": result.spans_exported, "failed_exports": result.failed_exports,
        "elapsed_seconds": round(result.elapsed_seconds, 2),
    }))


if __name__ == "__main__":
    main()
