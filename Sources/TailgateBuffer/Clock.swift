import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A monotonic clock in nanoseconds. The buffer never reads time by itself: it is given a clock, so tests
/// drive it with a `ManualClock` and never sleep.
public protocol NanoClock: Sendable {
    func now() -> UInt64
}

/// The system's monotonic clock.
public struct SystemClock: NanoClock {
    public init() {}

    public func now() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
    }
}

/// A clock that moves only when told to.
public final class ManualClock: NanoClock {
    private let nanos: Atomic<UInt64>

    public init(start: UInt64 = 1_000_000_000) {
        nanos = Atomic(start)
    }

    public func now() -> UInt64 { nanos.load(ordering: .relaxed) }

    public func advance(by duration: Duration) {
        nanos.add(duration.nanoseconds, ordering: .relaxed)
    }
}

extension Duration {
    /// Whole nanoseconds (negative durations count as zero).
    public var nanoseconds: UInt64 {
        let (s, atto) = components
        if s < 0 { return 0 }
        return UInt64(s) &* 1_000_000_000 &+ UInt64(max(0, atto) / 1_000_000_000)
    }
}
