import Foundation
package import Logging
import ServiceLifecycle
import Synchronization
import TailgatePolicies
import UnixSignals
import CoreMetrics
package import TailgateConfig

/// Reloads the policies file into a running pipeline. A valid new file applies to every trace decided from then
/// on (buffered traces are kept); an invalid one is rejected with its diagnostics logged, and the old policies stay.
package final class PolicyReloader: Sendable {
    package enum Outcome: Equatable, Sendable {
        case unchanged
        case applied(hash: UInt64)
        case rejected([Diagnostic])
    }

    struct FileStamp: Equatable {
        var modified: Date?
        var size: Int?
        var inode: Int?
    }

    package let path: String
    let pipeline: Pipeline
    let logger: Logger
    private let state: Mutex<(hash: UInt64, stamp: FileStamp)>

    package init(path: String, pipeline: Pipeline, logger: Logger) {
        self.path = path
        self.pipeline = pipeline
        self.logger = logger
        state = Mutex((pipeline.policySet.sourceHash, Self.stamp(path)))
    }

    static func stamp(_ path: String) -> FileStamp {
        let attributes = try? FileManager.default.attributesOfItem(atPath: path)
        return FileStamp(
            modified: attributes?[.modificationDate] as? Date,
            size: (attributes?[.size] as? NSNumber)?.intValue,
            inode: (attributes?[.systemFileNumber] as? NSNumber)?.intValue)
    }

    /// Reloads when the file's modification time, size or inode changed since the last look.
    @discardableResult
    package func reloadIfChanged() -> Outcome {
        let now = Self.stamp(path)
        let changed = state.withLock { s -> Bool in
            defer { s.stamp = now }
            return s.stamp != now
        }
        return changed ? reload(reason: "file changed") : .unchanged
    }

    /// Reads, validates and applies the file.
    @discardableResult
    package func reload(reason: String) -> Outcome {
        let set: PolicySet
        do {
            set = try PolicySet.load(path: path)
        } catch {
            pipeline.metrics.policyReloadFailures.increment()
            logger.error("policies reload rejected; keeping the current policies", metadata: [
                "file": "\(path)", "reason": "\(reason)", "problems": "\(error.diagnostics.count)",
            ])
            for d in error.diagnostics { logger.error("\(d)") }
            return .rejected(error.diagnostics)
        }
        let isNew = state.withLock { s -> Bool in
            defer { s.hash = set.sourceHash }
            return s.hash != set.sourceHash
        }
        guard isNew else { return .unchanged }
        pipeline.reload(set)
        pipeline.metrics.policyReloads.increment()
        for w in set.warnings { logger.warning("\(w)") }
        logger.info("policies reloaded", metadata: [
            "file": "\(path)", "reason": "\(reason)",
            "policies": "\(set.policies.map { "\($0.name):\($0.type)" }.joined(separator: ", "))",
        ])
        return .applied(hash: set.sourceHash)
    }
}

/// Reloads on SIGHUP and when the file changes (checked every `interval`).
struct PolicyReloadService: Service {
    let reloader: PolicyReloader
    let interval: Duration

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in signals { reloader.reload(reason: "SIGHUP") }
                }
                group.addTask {
                    while !Task.isCancelled {
                        try? await Task.sleep(for: interval)
                        if Task.isCancelled { break }
                        reloader.reloadIfChanged()
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
    }
}
