package import TailgateBuffer

/// Disk space for encoded forward batches (implemented by the trace store): the forward queue's overflow during a
/// downstream outage, and what is still undelivered at a graceful stop, resent after the restart.
package protocol BatchSpool: Sendable {
    /// Writes a batch; nil when there is no room (then it is dropped, counted, as without a spool).
    func write(_ request: [UInt8], spans: Int, headers: [(String, String)]) -> SpillRef?
    /// Reads a batch back; nil when its record is damaged (counted by the store).
    func read(_ ref: SpillRef) -> [UInt8]?
    /// The batch was delivered (or dropped, counted): its record is dead.
    func release(_ ref: SpillRef)
    /// Sync durability: every batch is written (durably) before it is sent, so that a kept trace is on disk before
    /// its decision is; otherwise only the overflow and what is left at a stop.
    var spoolsEveryBatch: Bool { get }
}
