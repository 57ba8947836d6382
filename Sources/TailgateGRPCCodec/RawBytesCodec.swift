package import GRPCCore

/// A gRPC message kept as its bytes (after gRPC decompression): Tailgate receives and sends OTLP over gRPC without
/// generated code, so the receiver (TailgateIngest) and the gRPC downstream (TailgateExport) share this one codec.
package struct RawBytes: Sendable {
    package var bytes: [UInt8]

    package init(bytes: [UInt8]) {
        self.bytes = bytes
    }
}

/// Serializes a `RawBytes` message as its bytes.
package struct RawSerializer: MessageSerializer {
    package init() {}

    package func serialize<Bytes: GRPCContiguousBytes>(_ message: RawBytes) throws -> Bytes {
        Bytes(message.bytes)
    }
}

/// Deserializes any message into `RawBytes`.
package struct RawDeserializer: MessageDeserializer {
    package init() {}

    package func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> RawBytes {
        RawBytes(bytes: serializedMessageBytes.withUnsafeBytes { Array($0) })
    }
}
