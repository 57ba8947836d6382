import TailgateBuffer
import TailgateWire
import Yams

/// One sampling policy type: how it is written in the policies file and how it judges a whole trace.
/// Each type lives in its own file under `Policies/`, with its own table-driven test.
public protocol SamplingPolicy: Sendable {
    /// The `type:` value, named as in the OpenTelemetry Collector's `tail_sampling` where it exists there.
    static var typeName: String { get }
    /// Keys allowed inside the policy's own block (e.g. `probabilistic: {sampling_percentage: 10}`).
    static var keys: [String] { get }
    /// Parses the policy's block, reporting problems to `reader`; returns nil when it is invalid. `typeNode` is where
    /// to report what is missing: the block's key, or the `type:` value when there is no block.
    /// Policies that read span attributes register them in `plan`.
    static func parse(_ block: Node?, at typeNode: Node, reader: inout YAMLReader, plan: inout AttributePlan) -> Self?
    /// Whether this policy keeps the trace.
    func keeps(_ trace: TraceSummary) -> Bool
}

/// Every policy type Tailgate understands.
public let policyTypes: [any SamplingPolicy.Type] = [
    AlwaysSamplePolicy.self,
    StatusCodePolicy.self,
    LatencyPolicy.self,
    ProbabilisticPolicy.self,
    TokenUsagePolicy.self,
]

/// A named policy from the policies file.
public struct NamedPolicy: Sendable {
    public var name: String
    public var type: String
    public var policy: any SamplingPolicy
}
