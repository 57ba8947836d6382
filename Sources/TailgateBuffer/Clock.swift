import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A monotonic clock in nanoseconds. The buffer never reads time by itself: it is given a clock, so tests
/// drive it with a `ManualClock` and never sleep.
package protocol NanoClock: Sendable {
    func now() -> UInt64
}

/// The system's monotonic clock.
package struct SystemClock: NanoClock {
    package init() {}

    package func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// A clock that moves only when told to.
package final class ManualClock: NanoClock {
    private let nanos: Atomic<UInt64>

    package init(start: UInt64 = 1_000_000_000) {
        nanos = Atomic(start)
    }

    package func now() -> UInt64 { nanos.load(ordering: .relaxed) }

    package func advance(by duration: Duration) {
        nanos.add(duration.nanoseconds, ordering: .relaxed)
    }
}

extension Duration {
    /// Whole nanoseconds (negative durations count as zero).
    package var nanoseconds: UInt64 {
        let (s, atto) = components
        if s < 0 { return 0 }
        return UInt64(s) &* 1_000_000_000 &+ UInt64(max(0, atto) / 1_000_000_000)
    }
}
