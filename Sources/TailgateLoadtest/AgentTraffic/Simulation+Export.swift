import Foundation
import TailgateWire

// The simulated exporters: batches of ended spans, as the SDKs' BatchSpanProcessor sends them.

extension AgentTrafficGenerator.Simulation {
    // MARK: Export

    /// A planned export: which spans (indices into the service's sorted order) and when.
    struct Batch {
        var service: Int
        var time: UInt64
        var range: Range<Int>
    }

    func export() -> [AgentTrafficGenerator.Request] {
        let maxBatch = max(1, options.maxBatchSpans)
        let interval = self.interval
        var perService: [[AgentTrafficGenerator.Request]] = [[], []]
        var encoder = AgentTrafficGenerator.RequestEncoder(simulation: self)
        for service in 0..<2 {
            let list = spans[service]
            // Export order: by end time (the SDK queues a span when it ends).
            var order = [(end: UInt64, index: Int32)]()
            order.reserveCapacity(list.count)
            for (i, s) in list.enumerated() { order.append((s.end, Int32(i))) }
            order.sort { $0.end != $1.end ? $0.end < $1.end : $0.index < $1.index }

            let firstTick = options.startTime &+ phases[service]
            func tick(after end: UInt64) -> UInt64 {
                end < firstTick ? firstTick : firstTick + ((end - firstTick) / interval + 1) * interval
            }
            var batches: [Batch] = []
            var pendingStart = 0
            var currentTick: UInt64 = 0
            for (position, entry) in order.enumerated() {
                let due = tick(after: entry.end)
                if position > pendingStart && due != currentTick {
                    // The timer fired before this span ended: export what was queued.
                    batches.append(Batch(service: service, time: currentTick, range: pendingStart..<position))
                    pendingStart = position
                }
                currentTick = due
                if position + 1 - pendingStart == maxBatch {
                    // A full batch is exported at once.
                    batches.append(Batch(service: service, time: entry.end, range: pendingStart..<(position + 1)))
                    pendingStart = position + 1
                }
            }
            if pendingStart < order.count {
                batches.append(Batch(service: service, time: currentTick, range: pendingStart..<order.count))
            }
            perService[service].reserveCapacity(batches.count)
            for batch in batches {
                let bytes = encoder.encode(service: service, spans: list, order: order, range: batch.range)
                perService[service].append(AgentTrafficGenerator.Request(
                    time: batch.time, service: AgentTrafficGenerator.serviceNames[service], protobuf: bytes, spans: batch.range.count))
            }
        }
        // Merge the two exporters' streams by send time (agent first on ties).
        var merged: [AgentTrafficGenerator.Request] = []
        merged.reserveCapacity(perService[0].count + perService[1].count)
        var i = 0, j = 0
        let a = perService[0], b = perService[1]
        while i < a.count || j < b.count {
            if j >= b.count || (i < a.count && a[i].time <= b[j].time) {
                merged.append(a[i]); i += 1
            } else {
                merged.append(b[j]); j += 1
            }
        }
        return merged
    }
}
