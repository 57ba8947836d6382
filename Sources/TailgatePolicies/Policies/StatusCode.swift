package import TailgateBuffer
package import TailgateWire
package import Yams
import TailgateConfig

/// `status_code`: keeps traces in which any span has one of `status_codes` (ERROR, OK, UNSET).
package struct StatusCodePolicy: SamplingPolicy {
    package static let typeName = "status_code"
    package static let keys = ["status_codes"]

    /// Bits of `StatusCode.bit`.
    package var mask: UInt8

    package init(codes: [StatusCode]) {
        mask = codes.reduce(0) { $0 | $1.bit }
    }

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        guard let entries = context.block(block, at: at, type: typeName, keys: keys, example: "status_codes: [ERROR]") else { return nil }
        var codes: [StatusCode] = []
        var sawKey = false
        var ok = true
        for (_, keyNode, value) in entries {
            sawKey = true
            let items = context.reader.sequence(value, what: "status_codes")
            if items.isEmpty { context.reader.error(keyNode, "status_codes must name at least one of ERROR, OK, UNSET"); ok = false }
            for item in items {
                let name = context.reader.string(item, what: "a status code") ?? ""
                switch name.uppercased() {
                case "ERROR", "STATUS_CODE_ERROR": codes.append(.error)
                case "OK", "STATUS_CODE_OK": codes.append(.ok)
                case "UNSET", "STATUS_CODE_UNSET": codes.append(.unset)
                default:
                    var message = "unknown status code '\(name)'; expected ERROR, OK or UNSET"
                    if let hint = suggestion(for: name, among: ["ERROR", "OK", "UNSET"]) { message += "; did you mean '\(hint)'?" }
                    context.reader.error(item, message)
                    ok = false
                }
            }
        }
        if !sawKey {
            context.reader.error(at, "status_code policy needs 'status_codes', e.g. status_codes: [ERROR]")
            return nil
        }
        return ok ? StatusCodePolicy(codes: codes) : nil
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { trace.statusMask & mask != 0 ? .sampled : .notSampled }
}
