public import TailgateBuffer
public import TailgateWire
public import Yams
import TailgateConfig

/// `always_sample`: keeps every trace.
public struct AlwaysSamplePolicy: SamplingPolicy {
    public static let typeName = "always_sample"
    public static let keys: [String] = []

    public init() {}

    public static func parse(_ block: Node?, at: Node, context: inout PolicyContext) -> Self? {
        if let block { _ = context.reader.mapping(block, allowed: keys, what: typeName) }
        return AlwaysSamplePolicy()
    }

    public func evaluate(_ trace: TraceSummary) -> Verdict { .sampled }
}
