import Synchronization

/// The version `tailgate --version`, `/version` and the logs report.
package enum TailgateVersion {
    package static let current = "0.2.0-dev"
}

/// Whether the proxy should receive traffic: `/readyz` and the gRPC health service answer from it.
///
/// Ready once every listener is bound; not ready again once a graceful shutdown began (so that a load balancer stops
/// sending before the listeners close). Transient saturation does not change it — backpressure answers that, and a
/// readiness that flaps reshuffles a load balancer's ring and splits traces across instances.
package final class Readiness: Sendable {
    package enum State: String, Sendable {
        case starting, ready, draining
    }

    private let state = Mutex(State.starting)

    package init() {}

    package var current: State { state.withLock { $0 } }
    package var isReady: Bool { current == .ready }

    func markReady() {
        state.withLock { if $0 == .starting { $0 = .ready } }
    }

    func markDraining() {
        state.withLock { $0 = .draining }
    }
}
