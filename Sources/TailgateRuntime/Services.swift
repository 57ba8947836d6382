import CTailgateSupport
import Logging
import ServiceLifecycle
import Synchronization
import TailgateHTTPServer
import TailgateIngest

/// One budget for the whole shutdown (`shutdown_timeout`): draining open requests, deciding, flushing. Started by
/// the first service told to shut down; open requests are cut at a third of it, and whatever the forwarder has not
/// delivered at its end is dropped and counted.
final class ShutdownBudget: Sendable {
    let total: Duration
    let readiness: Readiness
    private let started = Mutex<ContinuousClock.Instant?>(nil)

    init(total: Duration, readiness: Readiness) {
        self.total = total
        self.readiness = readiness
    }

    /// Starts the budget (idempotent; the proxy reports itself not ready from now on) and returns when it started.
    @discardableResult
    func begin() -> ContinuousClock.Instant {
        let (instant, first) = started.withLock { s -> (ContinuousClock.Instant, Bool) in
            if let s { return (s, false) }
            let now = ContinuousClock.now
            s = now
            return (now, true)
        }
        if first { readiness.markDraining() }
        return instant
    }

    /// Receivers must have closed every connection by then (a third of the budget, at most 10 s).
    var drainDeadline: ContinuousClock.Instant { begin() + min(total / 3, .seconds(10)) }
    /// Everything must be delivered by then.
    var deadline: ContinuousClock.Instant { begin() + total }

    /// What is left of the budget now (a forwarder's or the relay's `shutdownBudget`, asked on graceful shutdown);
    /// with `flushingAtMost`, no more than that (with a store to persist to, a restart must be quick).
    func remaining(flushingAtMost limit: Duration? = nil) -> Duration {
        let deadline = limit.map { min(self.deadline, .now + $0) } ?? self.deadline
        return ContinuousClock.now.duration(to: deadline)
    }
}

/// Decides expired traces every tick; on graceful shutdown decides every buffered trace by policy.
/// Listed after the receivers' services are stopped and before the forwarder is, so nothing is lost.
struct DecisionService: Service {
    let pipeline: Pipeline
    let tick: Duration
    /// On graceful shutdown, persist undecided traces to the store instead of deciding them.
    var persist = false
    /// Free memory the allocator keeps for reuse when the rest is returned to the system.
    static let allocatorCushion = 64 << 20

    func run() async throws {
        // Tick until graceful shutdown (or cancellation); then decide everything still buffered.
        await cancelWhenGracefulShutdown {
            var lastTrim = ContinuousClock.now
            var lastUpkeep = ContinuousClock.now
            while !Task.isCancelled {
                try? await Task.sleep(for: tick)
                pipeline.tick()
                if ContinuousClock.now - lastUpkeep >= .seconds(1) {
                    pipeline.maintainStore()
                    lastUpkeep = .now
                }
                // Give memory freed after a burst back to the system (malloc keeps up to 256 MiB otherwise), beyond a
                // cushion that a steady load reuses: returning all of it every 10 s cost 1-3 % of the proxy's CPU in
                // page faults (side by side at 20,000 and 60,000 spans/s, loadtest/README), the load freeing 30-80 MiB
                // between two trims.
                if ContinuousClock.now - lastTrim >= .seconds(10) {
                    _ = tailgate_trim_malloc(Self.allocatorCushion)
                    lastTrim = .now
                }
            }
        }
        if persist { pipeline.persistAll() } else { pipeline.decideAll() }
    }
}

/// The gRPC receiver: on graceful shutdown it stops accepting and lets calls finish until the drain deadline, then
/// cuts what is still open (a client holding a stream open must not hold up the shutdown). The transport does not
/// end while a connection it cannot close is open (a peer that never completed the HTTP/2 handshake), so at the
/// deadline the server is cancelled and left behind; the process exits without it.
struct GRPCIngestService: Service {
    let server: GRPCIngestServer
    let shutdown: ShutdownBudget
    let logger: Logger

    func run() async throws {
        // Whichever ends first: the server (normally after a graceful shutdown, or at once when it cannot bind), or
        // the drain deadline after a graceful shutdown began.
        let (events, continuation) = AsyncStream.makeStream(of: Result<Bool, any Error>.self)
        let serving = Task {
            do {
                try await server.serve()
                continuation.yield(.success(true))
            } catch is CancellationError {
                continuation.yield(.success(true))
            } catch {
                continuation.yield(.failure(GRPCBindError(address: server.address, underlying: error)))
            }
        }
        let timer = Task {
            try await gracefulShutdown()
            server.beginGracefulShutdown()
            try await Task.sleep(until: shutdown.drainDeadline, clock: .continuous)
            continuation.yield(.success(false))
        }
        defer { timer.cancel() }
        let first = await withTaskCancellationHandler {
            var iterator = events.makeAsyncIterator()
            return await iterator.next()
        } onCancel: {
            continuation.yield(.success(true))
        }
        switch first {
        case .success(false):
            logger.warning("cutting gRPC calls still open at the shutdown drain deadline", metadata: ["address": "\(server.address)"])
            serving.cancel()
        case .failure(let error):
            throw error
        default:
            serving.cancel()
        }
    }
}

/// An already started HTTP server; stops accepting on graceful shutdown, cutting connections still open at the
/// drain deadline.
struct HTTPServerService: Service {
    let server: HTTPServer
    let shutdown: ShutdownBudget?

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop(deadline: shutdown?.drainDeadline ?? .now + .seconds(5))
    }
}

/// Reads the receivers' certificate and key again every `tls.reload_interval` (new connections get the new pair).
struct CertificateReloadService: Service {
    let tls: IngestTLSContext

    func run() async throws {
        try await cancelWhenGracefulShutdown {
            try await tls.runReloading()
        }
    }
}
