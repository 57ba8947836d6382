import Logging
import ServiceLifecycle
import TailgateExport
import TailgateIngest

/// Decides expired traces every tick; on graceful shutdown decides every buffered trace by policy.
/// Listed after the receivers' services are stopped and before the forwarder is, so nothing is lost.
struct DecisionService: Service {
    let pipeline: Pipeline
    let tick: Duration

    func run() async throws {
        // Tick until graceful shutdown; then decide everything still buffered.
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: tick)
                pipeline.tick()
            }
        }
        pipeline.decideAll()
    }
}

/// Sends kept traces; on graceful shutdown flushes within the configured bound.
struct ForwarderService: Service {
    let forwarder: Forwarder

    func run() async throws {
        await withGracefulShutdownHandler {
            await forwarder.run()
        } onGracefulShutdown: {
            forwarder.finish()
        }
    }
}

struct GRPCIngestService: Service {
    let server: GRPCIngestServer

    func run() async throws {
        try await withGracefulShutdownHandler {
            try await server.serve()
        } onGracefulShutdown: {
            server.beginGracefulShutdown()
        }
    }
}

/// An already started HTTP server; stops accepting on graceful shutdown.
struct HTTPServerService: Service {
    let server: HTTPServer

    func run() async throws {
        try? await gracefulShutdown()
        await server.stop()
    }
}
