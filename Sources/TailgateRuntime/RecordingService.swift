import ServiceLifecycle
import TailgateRecording
import Logging

/// Writes the recording every 100 ms; flushes and closes on shutdown (after the receivers stopped).
struct RecordingService: Service {
    let writer: RecordingWriter

    func run() async throws {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                writer.flush()
            }
        }
        writer.close()
        let (recorded, dropped) = writer.counts
        writer.logger.info("recording closed", metadata: [
            "file": "\(writer.configuration.path)", "requests": "\(recorded)", "left_out": "\(dropped)",
        ])
    }
}
