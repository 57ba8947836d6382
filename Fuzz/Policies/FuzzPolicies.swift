// libFuzzer target `fuzz-policies`: PolicySet.parse over arbitrary text (Fuzz/README.md).
//
// The input is decoded as UTF-8 (invalid sequences repaired, as `String(decoding:)` does) and parsed as a policies
// file. Parsing may fail; it must never trap, and every diagnostic (error or warning) must name the file and a
// position inside the text: line ≥ 1 and at most one past the last line, column ≥ 1. A failure carries at least one
// error; a success has at least one policy, and its attribute plan compiles into a scanner.

import TailgatePolicies
import TailgateConfig

let file = "fuzz.yaml"

func fail(_ message: String, _ text: String) -> Never {
    fatalError("fuzz-policies: \(message)\n--- input ---\n\(text.prefix(4000))\n--- end ---")
}

func checkDiagnostics(_ diagnostics: [Diagnostic], _ text: String) {
    // Line breaks as YAML counts them (\r\n counted twice here: an upper bound is all that is needed).
    var breaks = 0
    for scalar in text.unicodeScalars {
        switch scalar.value {
        case 0x0A, 0x0D, 0x85, 0x2028, 0x2029: breaks += 1
        default: break
        }
    }
    for d in diagnostics {
        if d.file != file { fail("diagnostic for file '\(d.file)': \(d)", text) }
        if d.line < 1 || d.line > breaks + 2 { fail("diagnostic at line \(d.line) of a text of \(breaks + 1) lines: \(d)", text) }
        if d.column < 1 { fail("diagnostic at column \(d.column): \(d)", text) }
        if d.message.isEmpty { fail("diagnostic without a message at \(d.line):\(d.column)", text) }
    }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    do {
        let set = try PolicySet.parse(text, file: file)
        checkDiagnostics(set.warnings, text)
        if set.policies.isEmpty { fail("parsed without any policy", text) }
        if set.warnings.contains(where: { $0.severity == .error }) { fail("parsed with errors among its warnings", text) }
        _ = PolicyRuntime(set)
    } catch {
        if error.diagnostics.isEmpty { fail("failed without a diagnostic", text) }
        if !error.diagnostics.contains(where: { $0.severity == .error }) { fail("failed with warnings only: \(error)", text) }
        checkDiagnostics(error.diagnostics, text)
    }
    return 0
}
