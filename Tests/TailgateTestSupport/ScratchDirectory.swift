import Foundation
import Synchronization

/// The directories `scratchDirectory(_:)` made, removed when the test process exits (`atexit`).
private let scratchDirectories = Mutex<(paths: [String], registered: Bool)>(([], false))

/// A new, empty directory under the system's temporary directory, named `PREFIX-UUID`; it and everything in it are
/// removed when the test process exits, so that a test run leaves nothing in /tmp (the store's tests alone make
/// a few hundred). A test may still remove it earlier.
package func scratchDirectory(_ prefix: String) -> String {
    let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    let first = scratchDirectories.withLock { state -> Bool in
        state.paths.append(path)
        defer { state.registered = true }
        return !state.registered
    }
    if first { atexit { removeScratchDirectories() } }
    return path
}

/// Removes every directory `scratchDirectory(_:)` made and forgets them.
private func removeScratchDirectories() {
    let paths = scratchDirectories.withLock { state in
        defer { state.paths = [] }
        return state.paths
    }
    for path in paths { try? FileManager.default.removeItem(atPath: path) }
}
