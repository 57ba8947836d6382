import TailgateBuffer
import TailgateWire
import Yams

/// `always_sample`: keeps every trace.
public struct AlwaysSamplePolicy: SamplingPolicy {
    public static let typeName = "always_sample"
    public static let keys: [String] = []

    public init() {}

    public static func parse(_ block: Node?, at typeNode: Node, reader: inout YAMLReader, plan: inout AttributePlan) -> Self? {
        if let block { _ = reader.mapping(block, allowed: keys, what: "always_sample") }
        return AlwaysSamplePolicy()
    }

    public func keeps(_ trace: TraceSummary) -> Bool { true }
}
