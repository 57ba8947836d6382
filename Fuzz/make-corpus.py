#!/usr/bin/env python3
"""Regenerates the seed corpora of the fuzz targets under Fuzz/corpus/ (see Fuzz/README.md).

Run from the repository root with the test venv (it has opentelemetry-proto):  .venv/bin/python Fuzz/make-corpus.py
Deterministic: the same files every time. Existing seed files of the same names are overwritten; others are kept.
"""
import base64
import gzip
import json
import os
import re
import zlib

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

ROOT = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(ROOT)
CORPUS = os.path.join(ROOT, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def value(v):
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, bytes):
        return AnyValue(bytes_value=v)
    if isinstance(v, list):
        return AnyValue(array_value=ArrayValue(values=[value(x) for x in v]))
    if isinstance(v, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attrs(v)))
    return AnyValue(string_value=v)


def attrs(d):
    return [KeyValue(key=k, value=value(v)) for k, v in d.items()]


def tid(n):
    return bytes([0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, n])


def sid(n):
    return bytes([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, n])


def span(n, trace=1, parent=None, name="op", attributes=None, status=0, **extra):
    s = Span(trace_id=tid(trace), span_id=sid(n), name=name, kind=Span.SPAN_KIND_INTERNAL,
             start_time_unix_nano=1_700_000_000_000_000_000 + n * 1000, end_time_unix_nano=1_700_000_000_500_000_000 + n * 1000,
             attributes=attrs(attributes or {}), status=Status(code=status, message="boom" if status == 2 else ""))
    if parent is not None:
        s.parent_span_id = sid(parent)
    for k, v in extra.items():
        setattr(s, k, v)
    return s


def request(groups):
    """groups: [(resource attributes, [(scope name, [spans])])]"""
    r = ExportTraceServiceRequest()
    for res, scopes in groups:
        rs = r.resource_spans.add()
        rs.resource.attributes.extend(attrs(res))
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0"
        for scope_name, spans in scopes:
            ss = rs.scope_spans.add()
            ss.scope.name = scope_name
            ss.scope.version = "1.0"
            ss.spans.extend(spans)
    return r


LLM = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o",
       "gen_ai.response.model": "gpt-4o", "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 340,
       "gen_ai.response.finish_reasons": ["stop"]}
SVC = {"service.name": "checkout", "deployment.environment.name": "prod"}


def requests():
    yield "empty", ExportTraceServiceRequest()
    yield "one-span", request([(SVC, [("s", [span(1)])])])
    yield "llm-chat", request([(SVC, [("openai", [span(1, attributes=LLM)])])])
    legacy = {"gen_ai.operation.name": "text_completion", "gen_ai.system": "anthropic", "gen_ai.request.model": "m",
              "gen_ai.usage.prompt_tokens": "6000", "gen_ai.usage.completion_tokens": 12.5}
    yield "llm-legacy-keys", request([(SVC, [("s", [span(1, attributes=legacy)])])])
    tool = {"gen_ai.operation.name": "execute_tool", "error.type": "timeout"}
    yield "agent-tool-error", request([(SVC, [("agent", [span(1, name="agent"), span(2, parent=1, attributes=tool, status=2),
                                                         span(3, parent=1, attributes=LLM)])])])
    yield "status-error", request([(SVC, [("s", [span(1, status=2), span(2, parent=1, status=1)])])])
    yield "tracestate", request([(SVC, [("s", [span(1, trace_state="ot=th:8;rv:aabbccddeeff00,k=v,acme=debug")])])])
    yield "value-kinds", request([({"service.name": "a", "k": "abz", "b": False}, [("s", [span(1, attributes={
        "s": "x", "i": -7, "d": 1.5, "b": True, "retry": True, "k": 42, "http.status_code": 503, "bytes": b"\x00\xff",
        "arr": ["a", 1, 2.0, False], "kv": {"nested": {"deeper": [1, {"x": "y"}]}}})])])])
    ev = span(1)
    e = ev.events.add()
    e.time_unix_nano = 1_700_000_000_100_000_000
    e.name = "exception"
    e.attributes.extend(attrs({"exception.type": "ValueError", "exception.message": "bad"}))
    l = ev.links.add()
    l.trace_id = tid(2)
    l.span_id = sid(9)
    l.trace_state = "a=b"
    l.attributes.extend(attrs({"link.kind": "follows"}))
    l.flags = 0x301
    ev.flags = 0x101
    ev.dropped_attributes_count = 3
    ev.dropped_events_count = 1
    ev.dropped_links_count = 2
    yield "events-links", request([(SVC, [("s", [ev])])])
    yield "multi-resource", request([
        (SVC, [("a", [span(1), span(2, parent=1)]), ("b", [span(3, parent=1)])]),
        ({"service.name": "payments"}, [("a", [span(4, parent=1, attributes=LLM)])]),
        (SVC, [("a", [span(5, trace=2)])]),
    ])
    bad = [span(1), span(2), span(3), span(4)]
    bad[1].trace_id = b""
    bad[2].span_id = b"\x00" * 8
    bad[3].parent_span_id = b"\x01\x02\x03"
    yield "invalid-ids", request([(SVC, [("s", bad)])])
    yield "unicode", request([({"service.name": "σέρβις-日本"}, [("スコープ", [span(1, name="名前 🚀", attributes={"k": "é" * 5})])])])
    yield "many-spans", request([(SVC, [("s", [span(i, parent=1 if i > 1 else None) for i in range(1, 9)])])])


def raw_extras():
    """Hand-made protobuf edge cases (not expressible with the generated classes)."""
    def varint(n):
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    def ld(field, payload):
        return varint(field << 3 | 2) + varint(len(payload)) + payload

    one = span(1).SerializeToString()
    # Unknown fields at every level, including a group (wire types 3/4) and fixed32.
    unknown = varint(99 << 3 | 0) + varint(7) + varint(98 << 3 | 5) + b"\x01\x02\x03\x04" + varint(97 << 3 | 3) + varint(97 << 3 | 4)
    yield "unknown-fields", unknown + ld(1, unknown + ld(2, unknown + ld(2, one + unknown)))
    # Invalid UTF-8 in a span name (the span alone is rejected) and in a resource attribute (its spans are).
    bad_name = span(2).SerializeToString() + ld(5, b"\xc3\x28")
    bad_resource = ld(1, ld(1, ld(1, b"k") + ld(2, ld(1, b"\xff"))))
    yield "invalid-utf8", ld(1, ld(2, ld(2, one) + ld(2, bad_name))) + ld(1, bad_resource + ld(2, ld(2, one)))
    # Truncated: the length of the last ResourceSpans runs past the end.
    full = request([(SVC, [("s", [span(1)])])]).SerializeToString()
    yield "truncated", full[:-5]
    # Deep nesting in an attribute value (kvlist within kvlist).
    v = ld(1, b"leaf")
    for _ in range(40):
        v = ld(6, ld(1, ld(1, b"k") + ld(2, v)))
    yield "deep-value", ld(1, ld(2, ld(2, one + ld(9, ld(1, b"kv") + ld(2, v)))))


def otlp_json(r, camel=True, enums_as_ints=True):
    """OTLP/JSON as the spec writes it: hex IDs, lowerCamelCase, int64 as strings, enums as integers."""
    d = json_format.MessageToDict(r, preserving_proto_field_name=not camel, use_integers_for_enums=enums_as_ints)

    def fix(o):
        if isinstance(o, dict):
            for k, v in list(o.items()):
                if k in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id") and isinstance(v, str):
                    o[k] = base64.b64decode(v).hex()
                else:
                    fix(v)
        elif isinstance(o, list):
            for x in o:
                fix(x)
    fix(d)
    return json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()


JSON_EXTRAS = {
    "not-object": b'[1,2,3]',
    "empty-object": b'{}',
    "numbers-and-specials": (
        b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174",'
        b'"parentSpanId":"","name":"x\\u00e9\\ud83d\\ude80\\n","kind":"SPAN_KIND_SERVER","startTimeUnixNano":1544712660000000000,'
        b'"endTimeUnixNano":"1544712661000000000","attributes":[{"key":"d","value":{"doubleValue":"NaN"}},'
        b'{"key":"e","value":{"doubleValue":-1.5e-7}},{"key":"i","value":{"intValue":"-9223372036854775808"}},'
        b'{"key":"b64","value":{"bytesValue":"AAEC/w=="}},{"key":"n","value":{}}],'
        b'"status":{"code":"STATUS_CODE_ERROR","message":"m"},"flags":257}]}]}]}'),
    "snake-case": (
        b'{"resource_spans":[{"resource":{"attributes":[{"key":"service.name","value":{"string_value":"svc"}}]},'
        b'"scope_spans":[{"scope":{"name":"n"},"spans":[{"trace_id":"5B8EFFF798038103D269B633813FC60C",'
        b'"span_id":"EEE19B7EC3C1B174","status":{"code":2}}]}]}]}'),
    "nulls-and-unknown": b'{"resourceSpans":[{"resource":null,"scopeSpans":[{"spans":[{"traceId":"00000000000000000000000000000001","spanId":"0000000000000001","unknownField":{"a":[1,{"b":null}]}}]}],"extra":true}]}',
    "duplicate-keys": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":1,"kind":2,"name":"a","name":"b","status":{"code":2},"status":{"message":"m"}}]}]}]}',
    "bad-hex": b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz8efff798038103d269b633813fc60c","spanId":"eee1"}]}]}]}',
}


def main():
    pbs = {}
    for name, r in requests():
        pbs[name] = r.SerializeToString()
        write("fuzz-scanner", name + ".pb", pbs[name])
    for name, data in raw_extras():
        pbs[name] = data
        write("fuzz-scanner", name + ".pb", data)

    for i, (name, r) in enumerate(requests()):
        if name in ("many-spans", "unicode", "one-span"):
            continue
        write("fuzz-otlp-json", name + ".json", otlp_json(r, camel=(i % 3 != 2), enums_as_ints=(i % 2 == 0)))
    for name, data in JSON_EXTRAS.items():
        write("fuzz-otlp-json", name + ".json", data)

    g = lambda data, level=6: gzip.compress(data, compresslevel=level, mtime=0)
    write("fuzz-gzip", "empty.gz", g(b""))
    write("fuzz-gzip", "text.gz", g(b"hello, tailgate\n" * 4))
    write("fuzz-gzip", "llm-chat.pb.gz", g(pbs["llm-chat"]))
    write("fuzz-gzip", "multi-resource.pb.gz", g(pbs["multi-resource"], 9))
    write("fuzz-gzip", "stored.gz", g(pbs["one-span"], 0))
    write("fuzz-gzip", "agent.json.gz", g(otlp_json(dict(requests())["agent-tool-error"])))
    write("fuzz-gzip", "zlib.z", zlib.compress(b"zlib framed " * 8))
    write("fuzz-gzip", "concatenated.gz", g(b"first member\n") + g(b"second member\n"))
    write("fuzz-gzip", "trailing-garbage.gz", g(b"payload") + b"\x00junk")
    write("fuzz-gzip", "truncated.gz", g(b"truncated payload " * 10)[:-6])
    write("fuzz-gzip", "bad-crc.gz", g(b"crc")[:-8] + b"\x00\x00\x00\x00" + g(b"crc")[-4:])
    write("fuzz-gzip", "expands.gz", g(b"\x00" * 200_000, 9))  # 200 KB from a few hundred bytes
    write("fuzz-gzip", "random.bin", bytes((i * 97 + 13) % 256 for i in range(64)))

    for name in sorted(os.listdir(os.path.join(REPO, "policies"))):
        if name.endswith(".yaml"):
            with open(os.path.join(REPO, "policies", name), "rb") as f:
                write("fuzz-policies", name, f.read())
    with open(os.path.join(REPO, "policies", "README.md"), encoding="utf-8") as f:
        readme = f.read()
    # The README's examples, one per policy type (the first example of each).
    seen = set()
    for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", readme, re.S)):
        types = frozenset(re.findall(r"type: (\w+)", block))
        if block.lstrip().startswith(("policies:", "prices:")) and types and not types <= seen:
            seen |= types
            write("fuzz-policies", "readme-%02d.yaml" % i, block.encode())
    extras = {
        "cost-and-tokens.yaml": "prices:\n  default: {input: 3, output: 15}\n  gpt-4o: &p {input: 2.5, output: 10}\n  gpt-4o-2024-08-06: *p\n"
                                "policies:\n  - name: expensive\n    type: llm_cost\n    llm_cost: {min_cost_usd: 0.50}\n"
                                "  - name: tokens\n    type: token_usage\n    token_usage: {min_total_tokens: 100_000, models: [gpt-4o], providers: [openai]}\n"
                                "  - name: loop\n    type: agent_loop\n    agent_loop: {max_llm_calls: 20, max_tool_calls: 50}\n"
                                "  - {name: tools, type: tool_error}\n  - {name: fin, type: finish_reason}\n",
        "errors-many.yaml": "policies:\n  - name: a\n    type: nope\n  - name: a\n    type: latency\n    latency: {threshold_ms: -1}\n"
                            "  - name: b\n    type: string_attribute\n    string_attribute: {key: k, values: ['(unclosed'], enabled_regex_matching: true}\n"
                            "  - name: c\n    status_codes: [ERROR]\n    type: status_code\nunknown: 1\n",
        "empty-policies.yaml": "policies: []\n",
        "flow-and-tabs.yaml": "{policies: [{name: x, type: always_sample}], prices: {}}\r\n\t# tab\n",
        "anchors.yaml": "base: &b {name: x, type: always_sample}\npolicies: [*b, *b]\n",
    }
    for name, text in extras.items():
        write("fuzz-policies", name, text.encode())


if __name__ == "__main__":
    main()
