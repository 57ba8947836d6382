"""d01 — remote crash: extreme token counts in span attributes crashed the process.

With policies/llm-agents.yaml (llm_cost with a price table, token_usage by model/provider), a span whose
`gen_ai.usage.input_tokens` is 4e18 (double), Int64.max, Int64.min or the string "1e30", on a model the
price table lists, trapped the process (integer overflow / Int(Double) conversion) when its trace was
aggregated or decided. After the fix: every such request is answered, the process stays alive, and a
later ERROR trace is still forwarded.
"""

from __future__ import annotations

import random

from faultlib import POLICIES_DIR, SHORT_TIMERS, make_request, make_span, post_proto, rand_ids, wait_for

I64_MAX = 9_223_372_036_854_775_807
I64_MIN = -9_223_372_036_854_775_808
HOSTILE = [4e18, I64_MAX, I64_MIN, "1e30", float("inf"), -4e18]
# Models of the price table in policies/llm-agents.yaml (gpt-4o priced; o3 also under reasoning-tokens).
MODELS = [("openai", "gpt-4o"), ("openai", "o3"), ("anthropic", "claude-opus-4-1")]


def llm_attrs(provider: str, model: str, input_tokens, output_tokens) -> dict:
    return {"gen_ai.operation.name": "chat", "gen_ai.provider.name": provider, "gen_ai.system": provider,
            "gen_ai.request.model": model, "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": input_tokens, "gen_ai.usage.output_tokens": output_tokens}


def test_d01_remote_crash_on_extreme_token_counts(tailgates, receiver):
    """d01: extreme gen_ai.usage.* values must not crash tailgate (llm-agents.yaml policies)."""
    tg = tailgates(downstream=f"grpc://{receiver.endpoint}", config=SHORT_TIMERS,
                   policies=POLICIES_DIR / "llm-agents.yaml")
    rng = random.Random(1)
    traces = 0

    def send(spans, what):
        nonlocal traces
        try:
            response = post_proto(tg.traces_url, make_request(spans).SerializeToString(), timeout=5)
        except Exception as error:  # noqa: BLE001  (connection reset by a dying process, ...)
            tg.assert_alive(f"after {what} ")
            raise AssertionError(f"{what}: no HTTP answer: {error}") from error
        tg.assert_alive(f"after {what} ")
        assert response.status_code == 200, f"{what}: HTTP {response.status_code} {response.content[:200]!r}"
        traces += 1

    # One trace per (value, model): a root and one LLM span carrying the value as input tokens.
    for value in HOSTILE:
        for provider, model in MODELS:
            trace_id, root = rand_ids(rng)
            send([make_span(trace_id, root, "", "agent.run"),
                  make_span(trace_id, rng.randbytes(8).hex(), root, "chat " + model,
                            attrs=llm_attrs(provider, model, value, 10))],
                 f"input_tokens={value!r} model={model}")
    # Sums that overflow: several extreme spans in one trace, also under the deprecated names.
    trace_id, root = rand_ids(rng)
    spans = [make_span(trace_id, root, "", "agent.run")]
    for value in (I64_MAX, I64_MAX, 4e18, I64_MIN, I64_MAX):
        attrs = llm_attrs("openai", "gpt-4o", value, I64_MAX)
        attrs["gen_ai.usage.prompt_tokens"] = value
        attrs["gen_ai.usage.completion_tokens"] = I64_MAX
        spans.append(make_span(trace_id, rng.randbytes(8).hex(), root, "chat gpt-4o", attrs=attrs))
    send(spans, "a trace whose token sum overflows Int64")

    # Let every one of them be decided (wait_after_root 200ms), watching the process.
    decided = wait_for(lambda: not tg.alive() or tg.total("tailgate_traces_decided_total") >= traces, 8)
    tg.assert_alive("while deciding the traces with extreme token counts ")
    assert decided, f"only {tg.total('tailgate_traces_decided_total')} of {traces} traces decided within 8s"

    # Still accepting and forwarding: a later ERROR trace arrives.
    trace_id, root = rand_ids(rng)
    child = rng.randbytes(8).hex()
    send([make_span(trace_id, root, "", "agent.run", error=True), make_span(trace_id, child, root, "tool")],
         "the ERROR trace sent afterwards")
    arrived = receiver.wait_until(lambda r: r.span_ids_of(trace_id) == {root, child} or not tg.alive(), timeout=10)
    tg.assert_alive("after the ERROR trace ")
    assert arrived and receiver.span_ids_of(trace_id) == {root, child}, \
        f"the ERROR trace sent afterwards did not arrive complete: {receiver.span_ids_of(trace_id)}"
    assert "Fatal error" not in tg.log_text(), tg.log_tail()
