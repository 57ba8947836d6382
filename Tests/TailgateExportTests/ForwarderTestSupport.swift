import Synchronization
import TailgateBuffer

@testable import TailgateExport

/// A spool in memory: records by a counter; `everyBatch` for sync durability.
final class MemorySpool: BatchSpool {
    private let records = Mutex<(next: UInt64, live: [UInt64: [UInt8]], written: Int)>((0, [:], 0))
    let spoolsEveryBatch: Bool

    init(everyBatch: Bool = false) {
        spoolsEveryBatch = everyBatch
    }

    func write(_ request: [UInt8], spans: Int, headers: [(String, String)]) -> SpillRef? {
        records.withLock { r in
            r.next += 1
            r.live[r.next] = request
            r.written += 1
            return SpillRef(segment: 1, offset: r.next, length: UInt32(request.count))
        }
    }

    func read(_ ref: SpillRef) -> [UInt8]? { records.withLock { $0.live[ref.offset] } }
    func release(_ ref: SpillRef) { records.withLock { _ = $0.live.removeValue(forKey: ref.offset) } }

    /// Batches written so far.
    var written: Int { records.withLock { $0.written } }
    /// Records not released.
    var live: Int { records.withLock { $0.live.count } }
}

/// A downstream whose sends wait until the test opens the gate; `honoursCancellation`: a cancelled send answers at
/// once (retryable, as a real client's cancelled call does), otherwise it waits for the gate all the same.
final class GatedDownstream: Downstream {
    let target = "gated"
    let honoursCancellation: Bool
    private enum Slot {
        case reserved
        case parked(CheckedContinuation<SendOutcome, Never>)
        case cancelled
    }
    private let state = Mutex<(slots: [UInt64: Slot], next: UInt64, open: SendOutcome?, spans: Int)>(([:], 0, nil, 0))
    /// Yields once per send that started waiting.
    let started: AsyncStream<Void>
    private let startedContinuation: AsyncStream<Void>.Continuation

    init(honoursCancellation: Bool) {
        self.honoursCancellation = honoursCancellation
        (started, startedContinuation) = AsyncStream.makeStream(of: Void.self)
    }

    func run() async throws {}
    func close() {}

    /// Sends waiting now.
    var waiting: Int { state.withLock { $0.slots.values.filter { if case .parked = $0 { true } else { false } }.count } }

    /// Every signal waits at the same gate (the metrics/logs relay's tests use it too).
    func send(_ request: [UInt8], signal: OTLPSignal, json: Bool, headers: [(String, String)]) async -> SendOutcome {
        await send(request)
    }

    func send(_ request: [UInt8]) async -> SendOutcome {
        let id = state.withLock { s -> UInt64 in
            s.next += 1
            s.slots[s.next] = .reserved
            return s.next
        }
        defer { state.withLock { _ = $0.slots.removeValue(forKey: id) } }
        let honours = honoursCancellation
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<SendOutcome, Never>) in
                let now = state.withLock { s -> SendOutcome? in
                    if let open = s.open { return open }
                    guard case .reserved = s.slots[id] else { return .retryable(reason: "cancelled", retryAfter: nil) }
                    s.slots[id] = .parked(c)
                    return nil
                }
                if let now { c.resume(returning: now) } else { startedContinuation.yield() }
            }
        } onCancel: {
            guard honours else { return }
            let c = state.withLock { s -> CheckedContinuation<SendOutcome, Never>? in
                guard let slot = s.slots[id] else { return nil }
                s.slots[id] = .cancelled
                if case .parked(let c) = slot { return c }
                return nil
            }
            c?.resume(returning: .retryable(reason: "cancelled", retryAfter: nil))
        }
    }

    /// Answers every waiting send, and every later one, with `outcome`.
    func open(with outcome: SendOutcome) {
        let waiting = state.withLock { s -> [CheckedContinuation<SendOutcome, Never>] in
            s.open = outcome
            var out: [CheckedContinuation<SendOutcome, Never>] = []
            for (id, slot) in s.slots { if case .parked(let c) = slot { out.append(c); s.slots[id] = .cancelled } }
            return out
        }
        for c in waiting { c.resume(returning: outcome) }
    }

    /// Returns once a send waits at the gate.
    func waitForSend() async {
        for await _ in started { return }
    }
}
