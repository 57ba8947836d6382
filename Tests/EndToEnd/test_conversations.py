"""Whole conversations end to end: the real Python OpenTelemetry SDK sends multi-turn conversations (each turn one
trace whose spans carry `gen_ai.conversation.id`) through `tailgate serve` with a `conversation` policy to a real
OTLP/gRPC receiver.

- every conversation arrives whole (every span of every turn) or not at all, and exactly the conversations that
  XXH3 — computed here with the `xxhash` package, independently of Tailgate — puts under the percentage;
- the kept share of conversations is near the percentage; kept spans say `tailgate.sample_rate` = 1/p;
- with `keep_after_error`, an error in turn 2 keeps turns 2..n of a conversation the percentage did not keep (and
  those turns carry no sample rate: they were kept for certain).

Turns are sent in rounds (turn k of every conversation, then wait until Tailgate has decided them all), as turns of
a real conversation follow each other.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import xxhash
from opentelemetry.trace import SpanKind, Status, StatusCode

from agent import make_exporter, make_provider
from conftest import TailgateProcess, tailgate_binary
from receiver import Receiver

BOUNDED_S = 30.0  # any wait for decisions or spans

CONFIG = """\
buffer:
  wait_after_root: 200ms
  idle_timeout: 2s
  max_trace_age: 30s
forwarder:
  batch_timeout: 50ms
"""


def conversation_policies(percent: float, salt: str, keep_after_error: bool) -> str:
    extra = ", keep_after_error: true, max_conversations: 10000, remember_for: 1h" if keep_after_error else ""
    return (
        "policies:\n"
        "  - name: conversations\n"
        "    type: conversation\n"
        f"    conversation: {{sampling_percentage: {percent}, hash_salt: {salt}{extra}}}\n"
    )


def predicted_kept(conversation_id: str, percent: float, salt: str) -> bool:
    """Tailgate's draw, recomputed: XXH3-64 of the conversation hash's 8 big-endian bytes, seeded with XXH3-64 of
    the salt; the conversation hash is XXH3-64 of the ID's UTF-8 bytes (0 becomes 1)."""
    h = xxhash.xxh3_64_intdigest(conversation_id.encode()) or 1
    seed = xxhash.xxh3_64_intdigest(salt.encode()) if salt else 0
    draw = xxhash.xxh3_64_intdigest(h.to_bytes(8, "big"), seed=seed)
    return draw < int(percent / 100 * 2**64)


class ConversationTailgate(TailgateProcess):
    def __init__(self, binary, workdir: Path, downstream_port: int, policies: str) -> None:
        super().__init__(binary, workdir, downstream_port, config_text=CONFIG)
        self.policies_path = workdir / "conversations.yaml"
        self.policies_path.write_text(policies)

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--policies") + 1] = str(self.policies_path)
        return command

    def decided(self) -> float:
        return self.counter("tailgate_traces_decided_total") or 0.0


@dataclass
class Conversation:
    id: str
    turns: int
    error_turn: int | None  # 1-based
    trace_ids: list[str] = field(default_factory=list)  # by turn
    span_ids: list[set[str]] = field(default_factory=list)


def make_conversations(n: int, seed: int, error_share: float) -> list[Conversation]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        turns = rng.randint(3, 6)
        error_turn = 2 if rng.random() < error_share else None
        out.append(Conversation(id=f"conv-{seed}-{i:04d}-{rng.getrandbits(32):08x}", turns=turns, error_turn=error_turn))
    return out


def run_conversations(tg: ConversationTailgate, conversations: list[Conversation], seed: int) -> None:
    """Sends turn k of every conversation, flushes, and waits until Tailgate decided every trace sent so far."""
    exporter = make_exporter("grpc", tg.grpc_endpoint, gzip=True)
    provider = make_provider("chat-agent", exporter, seed=seed, schedule_delay_millis=50)
    tracer = provider.get_tracer("test_conversations")
    sent = 0
    try:
        for turn in range(1, max(c.turns for c in conversations) + 1):
            for c in conversations:
                if turn > c.turns:
                    continue
                attrs = {"gen_ai.conversation.id": c.id, "gen_ai.operation.name": "invoke_agent"}
                with tracer.start_as_current_span("invoke_agent chat-agent", kind=SpanKind.INTERNAL, attributes=attrs) as root:
                    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT,
                                                      attributes={"gen_ai.operation.name": "chat",
                                                                  "gen_ai.conversation.id": c.id}) as chat:
                        if c.error_turn == turn:
                            chat.set_status(Status(StatusCode.ERROR, "model overloaded"))
                    with tracer.start_as_current_span("execute_tool search", attributes={"gen_ai.operation.name": "execute_tool"}) as tool:
                        pass
                    c.trace_ids.append(format(root.get_span_context().trace_id, "032x"))
                    c.span_ids.append({format(s.get_span_context().span_id, "016x") for s in (root, chat, tool)})
                sent += 1
            assert provider.force_flush(30_000), "the SDK could not flush"
            deadline = time.monotonic() + BOUNDED_S
            while tg.decided() < sent and time.monotonic() < deadline:
                time.sleep(0.05)
            assert tg.decided() == sent, f"round {turn}: {tg.decided()} of {sent} traces decided"
    finally:
        provider.shutdown()


def received_turns(receiver: Receiver, tg: ConversationTailgate, conversations: list[Conversation]) -> dict[str, list[bool]]:
    """Per conversation, per turn: whether the turn arrived (every span exactly once; a partial turn fails)."""
    total_kept_spans = None
    deadline = time.monotonic() + BOUNDED_S
    # Every trace is decided (run_conversations waited for it), so the kept span count is final; kept spans are
    # forwarded after the decision: wait until the receiver has them all.
    while time.monotonic() < deadline:
        kept = tg.counter("tailgate_spans_kept_total") or 0
        if receiver.span_count() == kept and tg.counter("tailgate_spans_forwarded_total") == kept:
            total_kept_spans = kept
            break
        time.sleep(0.1)
    assert total_kept_spans is not None, (
        f"receiver has {receiver.span_count()} spans, tailgate kept {tg.counter('tailgate_spans_kept_total')} and "
        f"forwarded {tg.counter('tailgate_spans_forwarded_total')}")
    traces = receiver.traces()
    out: dict[str, list[bool]] = {}
    for c in conversations:
        row = []
        for trace_id, span_ids in zip(c.trace_ids, c.span_ids):
            got = [s.span_id for s in traces.get(trace_id, [])]
            assert not got or sorted(got) == sorted(span_ids), \
                f"{c.id}: turn {trace_id} arrived partly or twice: {len(got)} spans of {len(span_ids)}"
            row.append(bool(got))
        out[c.id] = row
    return out


def start(request, tmp_path, receiver, policies: str) -> ConversationTailgate:
    tg = ConversationTailgate(tailgate_binary(), tmp_path, receiver.port, policies)
    request.node._tailgates = getattr(request.node, "_tailgates", []) + [tg]
    request.addfinalizer(tg.kill)
    tg.start()
    return tg


def test_conversations_are_kept_or_dropped_whole(request, tmp_path, receiver):
    percent, salt = 30, "e2e"
    conversations = make_conversations(240, seed=1701, error_share=0.0)
    tg = start(request, tmp_path, receiver, conversation_policies(percent, salt, keep_after_error=False))
    run_conversations(tg, conversations, seed=1701)
    arrived = received_turns(receiver, tg, conversations)

    split = {cid: row for cid, row in arrived.items() if any(row) and not all(row)}
    assert not split, f"{len(split)} conversations arrived in part: {list(split.items())[:5]}"
    kept = {cid for cid, row in arrived.items() if all(row)}
    predicted = {c.id for c in conversations if predicted_kept(c.id, percent, salt)}
    assert kept == predicted, (f"kept {len(kept)}, predicted {len(predicted)}; kept not predicted: "
                               f"{sorted(kept - predicted)[:5]}, predicted not kept: {sorted(predicted - kept)[:5]}")

    n, p = len(conversations), percent / 100
    share = len(kept) / n
    sigma = math.sqrt(p * (1 - p) / n)
    print(f"conversations kept: {len(kept)} of {n} ({share:.3f}; percentage {p}, 4σ = {4 * sigma:.3f}); "
          f"turns kept {sum(len(c.trace_ids) for c in conversations if c.id in kept)} of "
          f"{sum(len(c.trace_ids) for c in conversations)}")
    assert abs(share - p) <= 4 * sigma, f"kept share {share:.3f} of conversations, want {p} ± {4 * sigma:.3f}"

    # Every kept span says why and with what weight: the policy, and 1/p (no th: the draw is not the trace's R).
    for span in receiver.spans():
        assert span.attributes.get("tailgate.policy") == "conversations", span
        assert span.attributes.get("tailgate.sample_rate") == pytest.approx(1 / p), span
    assert tg.terminate() == 0


def test_an_error_in_turn_two_keeps_the_rest_of_the_conversation(request, tmp_path, receiver):
    percent, salt = 20, "e2e-errors"
    conversations = make_conversations(150, seed=4242, error_share=0.4)
    tg = start(request, tmp_path, receiver, conversation_policies(percent, salt, keep_after_error=True))
    run_conversations(tg, conversations, seed=4242)
    arrived = received_turns(receiver, tg, conversations)
    traces = receiver.traces()

    erred_and_not_drawn = 0
    problems = []
    for c in conversations:
        row = arrived[c.id]
        drawn = predicted_kept(c.id, percent, salt)
        if drawn:
            want = [True] * c.turns  # the percentage keeps the whole conversation
        elif c.error_turn == 2:
            erred_and_not_drawn += 1
            want = [False] + [True] * (c.turns - 1)  # turn 1 was decided before the error: gone
        else:
            want = [False] * c.turns
        if row != want:
            problems.append(f"{c.id} (drawn {drawn}, error turn {c.error_turn}): got {row}, want {want}")
        # Turns kept because of the error are kept for certain: no sample rate on their spans.
        if not drawn and c.error_turn == 2:
            for trace_id in c.trace_ids[1:]:
                for span in traces.get(trace_id, []):
                    if "tailgate.sample_rate" in span.attributes:
                        problems.append(f"{c.id}: turn {trace_id} kept after an error carries a sample rate")
    assert not problems, f"{len(problems)} conversations wrong:\n  " + "\n  ".join(problems[:15])
    assert erred_and_not_drawn >= 20, f"only {erred_and_not_drawn} erring conversations outside the percentage"
    print(f"keep_after_error: {erred_and_not_drawn} erring conversations outside the {percent} % kept from turn 2 on")
    assert tg.terminate() == 0
