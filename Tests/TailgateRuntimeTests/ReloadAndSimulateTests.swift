import Foundation
import Logging
import Testing
import TailgateTestSupport
@testable import TailgateBuffer
@testable import TailgateExport
@testable import TailgatePolicies
@testable import TailgateRuntime
@testable import TailgateWire
import Synchronization
import TailgateRecording
import TailgateConfig

func tempFile(_ name: String, _ text: String) -> String {
    let path = scratchDirectory("tailgate-tests") + "/" + name
    try! text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite struct ReloadTests {
    static let errorsOnly = "policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]\n"
    static let prodOnly = "policies: [{name: prod, type: string_attribute, string_attribute: {key: env, values: [prod]}}]\n"

    @Test func brokenFileKeepsTheOldPoliciesAndGoodFileAppliesToBufferedTraces() async throws {
        let path = tempFile("policies.yaml", Self.errorsOnly)
        let (pipeline, downstream, clock) = try testPipeline(policies: Self.errorsOnly)
        let reloader = PolicyReloader(path: path, pipeline: pipeline, logger: Logger(label: "test"))
        await withForwarder(pipeline) {
            // Buffered under the old plan (which reads no attributes).
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(1), span: 1, attributes: [("env", .string("prod"))])]))
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(2), span: 1, status: .error)]))

            try! "policies: [{name: x, type: nope}]\n".write(toFile: path, atomically: true, encoding: .utf8)
            guard case .rejected(let problems) = reloader.reload(reason: "test") else { Issue.record("expected rejection"); return }
            #expect(problems.map(\.description) == ["\(path):1:28: error: unknown policy type 'nope'; did you mean 'not'?"])
            #expect(pipeline.policySet.policies.map(\.name) == ["errors"])

            try! Self.prodOnly.write(toFile: path, atomically: true, encoding: .utf8)
            #expect(reloader.reload(reason: "test") == .applied(hash: xxh3(Self.prodOnly)))
            #expect(reloader.reload(reason: "again") == .unchanged)
            // Spans after the reload are scanned with the new plan; mixed traces are re-aggregated.
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(2), span: 2, parent: 1)]))
            #expect(pipeline.buffer.bufferedTraces == 2)
            clock.advance(by: .seconds(2))
            pipeline.tick()
        }
        // Trace 1 is kept by the new policy although its spans were scanned under the old one; trace 2 (an error,
        // no env) is dropped by it: the new file decides every trace decided after the reload.
        #expect(Set(downstream.spans.map(\.traceID)) == [tid(1)])
        #expect(metricValue(pipeline, "tailgate_policies_reload_failures_total") == 1)
        #expect(metricValue(pipeline, "tailgate_policies_reloads_total") == 1)
    }

    @Test func aReloadWithTheSameAttributePlanKeepsThePlanGeneration() throws {
        let (pipeline, _, _) = try testPipeline(policies: Self.errorsOnly)
        let first = pipeline.buffer.decider.planGeneration
        // Another name, the same conditions: buffered (and stored) traces need no re-aggregation.
        pipeline.reload(try PolicySet.parse(Self.errorsOnly.replacingOccurrences(of: "errors", with: "failures"), file: "p.yaml"))
        #expect(pipeline.buffer.decider.planGeneration == first)
        #expect(pipeline.policySet.policies.map(\.name) == ["failures"])
        pipeline.reload(try PolicySet.parse(Self.prodOnly, file: "p.yaml"))
        #expect(pipeline.buffer.decider.planGeneration != first)
    }

    /// A decision carries its policy's name: however many reloads happen before it is handled, it is reported under
    /// the name of the policy that made it (a table of the last generations' names once said "unknown" after five).
    @Test func aDecisionKeepsItsPolicyNameAcrossManyReloads() throws {
        let (pipeline, _, _) = try testPipeline(policies: Self.errorsOnly)
        let runtime = try #require(pipeline.buffer.decider as? PolicyRuntime)
        var summary = TraceSummary(traceID: tid(9))
        summary.statusMask = StatusCode.error.bit
        summary.spanCount = 1
        let decision = runtime.decide(summary)
        #expect(decision.keep)
        for i in 0..<8 {
            pipeline.reload(try PolicySet.parse(Self.errorsOnly.replacingOccurrences(of: "errors", with: "renamed-\(i)"), file: "p.yaml"))
        }
        #expect(pipeline.policyName(decision) == "errors")
        #expect(pipeline.policySet.policies.map(\.name) == ["renamed-7"])
    }

    @Test func fileWatchNoticesChanges() throws {
        let path = tempFile("policies.yaml", Self.errorsOnly)
        let (pipeline, _, _) = try testPipeline(policies: Self.errorsOnly)
        let reloader = PolicyReloader(path: path, pipeline: pipeline, logger: Logger(label: "test"))
        #expect(reloader.reloadIfChanged() == .unchanged)
        try Self.prodOnly.write(toFile: path, atomically: true, encoding: .utf8)
        #expect(reloader.reloadIfChanged() == .applied(hash: xxh3(Self.prodOnly)))
        #expect(reloader.reloadIfChanged() == .unchanged)
    }

    @Test func keptSpansCarryThePolicyAndProbability() async throws {
        let (pipeline, downstream, _) = try testPipeline(policies: "policies: [{name: half, type: probabilistic, probabilistic: {sampling_percentage: 100}}, {name: all, type: always_sample}]")
        await withForwarder(pipeline) {
            _ = ingest(pipeline, exportRequest(spans: [TestSpan(trace: tid(1), span: 1)]))
            pipeline.decideAll()
        }
        let text = String(decoding: try OTLPJSON.jsonFromProtobuf(downstream.requests.withLock { $0 }[0]), as: UTF8.self)
        #expect(text.contains(#"{"key":"tailgate.policy","value":{"stringValue":"half"}}"#))
        #expect(!text.contains("th:"))  // 100% is certain: no threshold
    }
}

@Suite struct SimulatorTests {
    static var recording: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("loadtest/recordings/agents-3k.jsonl.gz").path
    }

    @Test func defaultPoliciesOnTheCommittedRecording() throws {
        let requests = try Recording.read(path: Self.recording)
        let report = Simulator().run(requests, policySets: [PolicySet.builtIn()])[0]
        #expect(report.traces == 3000 && report.spans == 15000)
        #expect(report.rows.map(\.policy) == ["errors", "expensive", "baseline", "(dropped)"])
        #expect(report.rows.reduce(0) { $0 + $1.traces } == report.traces)
        #expect(report.rows.reduce(0) { $0 + $1.spans } == report.spans)
        #expect(report.keptTraces == report.rows.dropLast().reduce(0) { $0 + $1.traces })
        // Every trace is complete (5 spans) and the baseline share of the rest is about 10%.
        let rest = report.traces - report.rows[0].traces - report.rows[1].traces
        let share = Double(report.rows[2].traces) / Double(rest)
        #expect(abs(share - 0.10) < 0.02)
        #expect(report.recordedSeconds > 1)
    }

    @Test func comparingTwoFilesFindsTheChangedDecisions() throws {
        let requests = try Recording.read(path: Self.recording)
        let strict = try PolicySet.parse("policies: [{name: errors, type: status_code, status_code: {status_codes: [ERROR]}}]", file: "s.yaml")
        let reports = Simulator().run(requests, policySets: [PolicySet.builtIn(), strict])
        let differences = Simulator.compare(reports[0], reports[1])
        // Only "expensive" and "baseline" keeps turn into drops.
        #expect(Set(differences.map(\.category)) == ["keep (expensive) → drop", "keep (baseline) → drop"])
        #expect(differences.reduce(0) { $0 + $1.count } == reports[0].rows[1].traces + reports[0].rows[2].traces)
        #expect(differences.allSatisfy { !$0.examples.isEmpty && $0.examples.count <= 3 })
    }

    @Test func compactRecordingsRoundTrip() throws {
        let requests = [
            RecordedRequest(arrival: 5, protobuf: exportRequest(spans: [TestSpan(trace: tid(1), span: 1)])),
            RecordedRequest(arrival: 9, protobuf: exportRequest(spans: [TestSpan(trace: tid(2), span: 1)])),
        ]
        let path = tempFile("r.tgrec", "")
        try Recording.writeCompact(requests, to: path)
        let back = try Recording.read(path: path)
        #expect(back.map(\.arrival) == [5, 9])
        #expect(back.map(\.protobuf) == requests.map(\.protobuf))
    }
}
