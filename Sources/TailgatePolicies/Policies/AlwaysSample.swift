package import TailgateBuffer
import TailgateWire
package import Yams
import TailgateConfig

/// `always_sample`: keeps every trace.
package struct AlwaysSamplePolicy: SamplingPolicy {
    package static let typeName = "always_sample"
    package static let keys: [String] = []

    package init() {}

    package static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        if let block { _ = context.reader.mapping(block, allowed: keys, what: typeName) }
        return AlwaysSamplePolicy()
    }

    package func evaluate(_ trace: TraceSummary) -> Verdict { .sampled }
}
