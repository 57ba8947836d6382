"""GenAI traffic for the live dashboard test: agent runs through the real OpenTelemetry SDK whose spans carry
every attribute Tailgate's pre-sampling GenAI metrics count (the GenAI semantic conventions):

    invoke_agent support-bot              gen_ai.agent.name; every 10th run fails (ERROR, error.type)
    ├── embeddings text-embedding-3-small every other run; input tokens only
    ├── chat MODEL                        input/output tokens, cache_read (and every 3rd run cache_creation)
    │                                     input tokens; fails in 1 run in 10 (ERROR, error.type, no usage)
    ├── execute_tool TOOL                 gen_ai.tool.name; sql_query fails every other time it is called
    └── chat MODEL                        input/output tokens, reasoning output tokens

Models, providers and tools are the end-to-end agent's (Tests/EndToEnd/agent.py), so together they stay far
under any per-label cap. Spans get realistic start/end times (a run covers up to the last 7 s before it is sent),
so the operation-duration histogram has values across its buckets. The expected totals are returned, for
tests that want to compare them with /metrics.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field

from opentelemetry import trace as trace_api
from opentelemetry.trace import SpanKind, Status, StatusCode

from agent import PROVIDERS_AND_MODELS, TOOLS, CountingExporter, make_exporter, make_provider

AGENT_NAME = "support-bot"
EMBEDDING = ("openai", "text-embedding-3-small")
LLM_ERROR_TYPES = ("rate_limited", "timeout", "500")
FAILING_TOOL = "sql_query"
SECOND = 1_000_000_000

# A price for every model the live test's traffic uses (USD per million tokens), appended to the policies file
# so that tailgate_gen_ai_cost_usd_total has a value whatever Tailgate's built-in table lists.
PRICES_YAML = """
prices:
  default: {input: 3, output: 15}
  gpt-4o: {input: 2.5, output: 10}
  claude-sonnet-4: {input: 3, output: 15}
  text-embedding-3-small: {input: 0.02, output: 0}
"""


@dataclass
class GenAIResult:
    runs: int = 0
    failed_runs: int = 0
    llm_calls: int = 0
    failed_llm_calls: int = 0
    tool_calls: int = 0
    failed_tool_calls: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"input": 0, "output": 0})
    token_details: dict[str, int] = field(default_factory=lambda: {"cache_read": 0, "cache_creation": 0,
                                                                   "reasoning": 0})
    spans_created: int = 0
    spans_exported: int = 0
    failed_exports: int = 0


def _emit_run(tracer: trace_api.Tracer, i: int, rng: random.Random, out: GenAIResult) -> None:
    provider, model = PROVIDERS_AND_MODELS[i % len(PROVIDERS_AND_MODELS)]
    tool_name = TOOLS[i % len(TOOLS)]
    end = time.time_ns()
    t = end - 7 * SECOND  # the run's start; children follow one another (at most ~6.5 s in all)
    spans = 0

    def child(name: str, kind: SpanKind, attrs: dict, duration_s: float, error_type: str | None = None,
              usage: dict | None = None) -> None:
        nonlocal t, spans
        span = tracer.start_span(name, context=ctx, kind=kind, attributes=attrs, start_time=t)
        if usage:
            span.set_attributes(usage)
        if error_type:
            span.set_attribute("error.type", error_type)
            span.set_status(Status(StatusCode.ERROR, error_type))
        t += int(duration_s * SECOND)
        span.end(end_time=t)
        t += SECOND // 100
        spans += 1

    run_fails = i % 10 == 9
    root = tracer.start_span(f"invoke_agent {AGENT_NAME}", kind=SpanKind.INTERNAL, start_time=t, attributes={
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": AGENT_NAME,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": model,
        "gen_ai.conversation.id": f"genai-{i:06d}",
    })
    ctx = trace_api.set_span_in_context(root)
    t += SECOND // 100

    if i % 2 == 0:
        tokens = rng.randint(20, 400)
        child(f"embeddings {EMBEDDING[1]}", SpanKind.CLIENT, {
            "gen_ai.operation.name": "embeddings", "gen_ai.provider.name": EMBEDDING[0],
            "gen_ai.request.model": EMBEDDING[1]}, rng.uniform(0.03, 0.2),
            usage={"gen_ai.usage.input_tokens": tokens})
        out.llm_calls += 1
        out.tokens["input"] += tokens

    llm = {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.request.model": model}
    if (i // len(PROVIDERS_AND_MODELS)) % 10 == 3:  # a failed call (error.type, no usage): 1 run in 10 per model
        child(f"chat {model}", SpanKind.CLIENT, llm, rng.uniform(0.5, 3.0),
              error_type=LLM_ERROR_TYPES[(i // 50) % len(LLM_ERROR_TYPES)])
        out.failed_llm_calls += 1
    else:
        inp, outp = rng.randint(800, 3000), rng.randint(50, 400)
        cache_read = inp // 2
        usage = {"gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": outp,
                 "gen_ai.usage.cache_read.input_tokens": cache_read}
        out.token_details["cache_read"] += cache_read
        if i % 3 == 0:
            usage["gen_ai.usage.cache_creation.input_tokens"] = 200
            out.token_details["cache_creation"] += 200
        child(f"chat {model}", SpanKind.CLIENT, {**llm, "gen_ai.response.model": model,
                                                  "gen_ai.response.finish_reasons": ["tool_calls"]},
              rng.uniform(0.2, 2.5), usage=usage)
        out.tokens["input"] += inp
        out.tokens["output"] += outp
    out.llm_calls += 1

    tool_fails = tool_name == FAILING_TOOL and (i // len(TOOLS)) % 2 == 0
    child(f"execute_tool {tool_name}", SpanKind.INTERNAL, {
        "gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool_name,
        "gen_ai.tool.call.id": f"call_g{i:06d}", "gen_ai.tool.type": "function"},
        rng.uniform(0.02, 0.5), error_type="ToolError" if tool_fails else None)
    out.tool_calls += 1
    out.failed_tool_calls += tool_fails

    inp, outp = rng.randint(1000, 4000), rng.randint(200, 900)
    reasoning = outp // 3
    child(f"chat {model}", SpanKind.CLIENT, {**llm, "gen_ai.response.model": model,
                                              "gen_ai.response.finish_reasons": ["stop"]},
          rng.uniform(0.3, 3.0), usage={"gen_ai.usage.input_tokens": inp, "gen_ai.usage.output_tokens": outp,
                                        "gen_ai.usage.reasoning.output_tokens": reasoning})
    out.llm_calls += 1
    out.tokens["input"] += inp
    out.tokens["output"] += outp
    out.token_details["reasoning"] += reasoning

    if run_fails:
        root.set_attribute("error.type", "AgentError")
        root.set_status(Status(StatusCode.ERROR, "agent gave up"))
    root.end(end_time=max(t, end))
    out.runs += 1
    out.failed_runs += run_fails
    out.spans_created += spans + 1


def run_genai_agent(protocol: str, endpoint: str, *, max_runs: int, rate: float, seed: int = 7,
                    stop_event: threading.Event | None = None, flush_timeout_s: float = 20.0) -> GenAIResult:
    """Emits up to max_runs agent runs at `rate` runs/s (fewer if stop_event gets set), then flushes."""
    rng = random.Random(seed)
    exporter = CountingExporter(make_exporter(protocol, endpoint, gzip=True))
    provider = make_provider("genai-agent", exporter, seed, 200)
    tracer = provider.get_tracer("tailgate.deploy.genai", "1.0.0")
    out = GenAIResult()
    started = time.monotonic()
    try:
        for i in range(max_runs):
            if stop_event is not None and stop_event.is_set():
                break
            _emit_run(tracer, i, rng, out)
            ahead = started + (i + 1) / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
    finally:
        provider.force_flush(int(flush_timeout_s * 1000))
        provider.shutdown()
    out.spans_exported = exporter.spans_exported
    out.failed_exports = exporter.failed_exports
    return out
