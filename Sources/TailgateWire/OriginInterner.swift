import Synchronization

/// Resource and scope headers shared across requests. Every request of a client repeats its resource and scope, so
/// without sharing each request made its own `ResourceOrigin` and `ScopeOrigin`: a trace whose spans came in twenty
/// requests held twenty origins, and every consumer (the buffer's per-trace origin list, the store's record
/// encoding, the forwarder's framing) had to merge them again by content. Interned, consecutive spans of a trace
/// share one origin object and the identity check (`===`) that those consumers try first succeeds.
///
/// Fixed direct-mapped tables indexed by the header's XXH3 hash (already computed for `HeaderKey`): a colliding header
/// replaces the entry, and the tables never grow, so hostile or high-cardinality resources cost at most what they
/// did without sharing. A hit is checked by content (hash, then bytes); a scope also by its resource's identity.
final class OriginInterner: Sendable {
    static let shared = OriginInterner()
    static let slots = 1024
    private let resources = Mutex([ResourceOrigin?](repeating: nil, count: OriginInterner.slots))
    private let scopes = Mutex([ScopeOrigin?](repeating: nil, count: OriginInterner.slots))

    /// The shared resource with these header bytes (made and remembered if there is none).
    func resource(_ header: [UInt8]) -> ResourceOrigin {
        let key = HeaderKey(header)
        let slot = Int(truncatingIfNeeded: key.hash) & (Self.slots - 1)
        if let found = resources.withLock({ $0[slot] }), found.key == key { return found }
        let made = ResourceOrigin(header: header, key: key)
        resources.withLock { $0[slot] = made }
        return made
    }

    /// The shared scope with these header bytes under `resource` (made and remembered if there is none).
    func scope(_ resource: ResourceOrigin, _ header: [UInt8]) -> ScopeOrigin {
        let key = HeaderKey(header)
        let mixed = (key.hash ^ (resource.key.hash &* 0x9E37_79B9_7F4A_7C15)) >> 7
        let slot = Int(truncatingIfNeeded: mixed) & (Self.slots - 1)
        if let found = scopes.withLock({ $0[slot] }), found.resource === resource, found.key == key { return found }
        let made = ScopeOrigin(resource: resource, header: header, key: key)
        scopes.withLock { $0[slot] = made }
        return made
    }
}
