// swift-tools-version: 6.1
import PackageDescription

// One module per stage; dependencies point one way (ARCHITECTURE.md draws the graph and says what each may import):
//   TailgateWire → TailgateBuffer → TailgatePolicies → TailgateIngest / TailgateExport → TailgateStore → TailgateRuntime → tailgate
// Beside the path, each with one concern:
//   TailgateConfig: YAML with positions and hints, durations, sizes, host:port (Policies, Export, Runtime, the CLI).
//   TailgateHTTPServer: a small HTTP/1.1 server that knows nothing of OTLP (imports no Tailgate module), for Ingest's
//     OTLP/HTTP receiver and Runtime's admin listener (/metrics, probes, /debug, the status page).
//   TailgateRecording: the `.tgrec` format and its rotating writer (Runtime tees requests into it; Loadtest replays).
//   TailgateImport: the Collector `tail_sampling` importer (`tailgate import-otel`).
//   TailgateLoadtest: generator, replay client, receiver, reports; uses Wire, Buffer, Policies, Ingest, Export and
//     Recording, never Runtime. `tailgate` (the CLI) and `tailgate-bench` sit on top; neither uses a target under Tests/.
// Wire and Buffer are pure (no I/O; the buffer takes an injected clock and reaches the disk only through the
// `TraceStore` protocol); Policies reads nothing but its own file (`PolicySet.load`). HTTPServer, Ingest, Export,
// Store, Recording's writer and Runtime do the I/O. Every downstream client, in serve and in the load tester alike, is
// built by one factory in Export: `DownstreamAddress.makeDownstream`.
// The two programs allocate through tcmalloc (gperftools; Debian libgoogle-perftools-dev to build, libtcmalloc-minimal4
// to run): a buffered trace's arrays are 1-8 KiB, past glibc's per-thread cache, and glibc's malloc/free with its
// chunk unlinking were ~15 % of the proxy's CPU. Side by side at 60k spans/s (loadtest/ab.sh) the proxy used 12 % less
// CPU per span with it (jemalloc 9 %, mimalloc 6 %). The library modules and the tests keep the system allocator.
let allocator: [LinkerSetting] = [.linkedLibrary("tcmalloc_minimal", .when(platforms: [.linux]))]

let package = Package(
    name: "tailgate",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tailgate", targets: ["tailgate"]),
    ],
    // Every direct dependency is pinned to an exact version (Package.resolved stays out of git): a fresh clone builds
    // the same code. To update one, change its version here, run `swift package update`, then `make test`.
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", exact: "2.101.3"),
        .package(url: "https://github.com/apple/swift-collections.git", exact: "1.6.0"),
        .package(url: "https://github.com/apple/swift-log.git", exact: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", exact: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", exact: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", exact: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", exact: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams.git", exact: "6.2.2"),
        // HTTP/2 for the gRPC receiver and the gRPC downstream (both written on NIOHTTP2: see OTLPGRPCServer.swift and
        // GRPCDownstream.swift), TLS (NIOSSL), quiescing and certificate reloading.
        .package(url: "https://github.com/apple/swift-nio-http2.git", exact: "1.46.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", exact: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", exact: "1.35.2"),
        .package(url: "https://github.com/swift-server/async-http-client.git", exact: "1.37.0"),
    ],
    targets: [
        // System libraries.
        .systemLibrary(name: "CXXHash", pkgConfig: "libxxhash", providers: [.apt(["libxxhash-dev"])]),
        .systemLibrary(name: "CZlib", providers: [.apt(["zlib1g-dev"])]),
        // libdeflate: one-shot gzip, about twice zlib's speed each way (ingest bodies, forwarded batches); zlib stays
        // for streams libdeflate cannot take whole (concatenated members, a size it cannot trust).
        .systemLibrary(name: "CLibDeflate", pkgConfig: "libdeflate", providers: [.apt(["libdeflate-dev"])]),
        // Two inline C helpers for the hot path (no library of its own): the compiler's prefetch hint (the buffer) and
        // the C library's memmem (the framer's annotation check).
        .systemLibrary(name: "CHelpers"),
        // TAILGATE_COMMIT in the environment of the build (make run, the Dockerfile) names the commit in
        // tailgate_build_info; only this small C target is rebuilt when it changes.
        .target(name: "CTailgateSupport", cSettings: Context.environment["TAILGATE_COMMIT"].map {
            [.define("TAILGATE_COMMIT", to: "\"\($0.filter { $0.isLetter || $0.isNumber || $0 == "-" || $0 == "." })\"")]
        } ?? []),

        // Pure stages.
        .target(name: "TailgateWire", dependencies: ["CXXHash", "CZlib", "CLibDeflate", "CHelpers"]),
        .target(name: "TailgateBuffer", dependencies: [
            "TailgateWire", "CHelpers",
            .product(name: "HeapModule", package: "swift-collections"),
            .product(name: "DequeModule", package: "swift-collections"),
        ], swiftSettings: [
            // Shard state is only touched under its lock; dynamic exclusivity checks cost ~5% of an insert (measured
            // with perf on tailgate-bench profile-insert). Debug builds keep them.
            .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
        ]),
        // Reading configuration: YAML with line and column for every diagnostic (and hints), durations, sizes,
        // host:port addresses. Used by the policies file, the server's configuration and the command line.
        .target(name: "TailgateConfig", dependencies: ["Yams"]),
        .target(name: "TailgatePolicies", dependencies: ["TailgateWire", "TailgateBuffer", "TailgateConfig", "CXXHash", "Yams"]),
        // Tooling beside the engine: translates an OpenTelemetry Collector `tail_sampling` configuration into a
        // policies file (`tailgate import-otel`).
        .target(name: "TailgateImport", dependencies: ["TailgatePolicies", "TailgateConfig", "Yams"]),


        // A small HTTP/1.1 server on SwiftNIO (bounded bodies, connection cap, timeouts, an optional in-flight byte
        // budget, TLS), knowing nothing of OTLP: the OTLP/HTTP receiver and the admin listener both run on it.
        .target(name: "TailgateHTTPServer", dependencies: [
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
        ]),

        // I/O stages.
        .target(name: "TailgateIngest", dependencies: [
            "TailgateWire", "TailgateHTTPServer",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOHPACK", package: "swift-nio-http2"),
            .product(name: "NIOExtras", package: "swift-nio-extras"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "NIOCertificateReloading", package: "swift-nio-extras"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "TailgateExport", dependencies: [
            "TailgateWire", "TailgateBuffer", "TailgateConfig",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "NIOHTTP2", package: "swift-nio-http2"),
            .product(name: "NIOHPACK", package: "swift-nio-http2"),
            .product(name: "NIOSSL", package: "swift-nio-ssl"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "DequeModule", package: "swift-collections"),
            .product(name: "AsyncHTTPClient", package: "async-http-client"),
            // The forwarder and the metrics/logs relay are services (graceful shutdown drains them).
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        ]),

        // The on-disk tier under the buffer and the forward queue (a data directory of checksummed segment files).
        .target(name: "TailgateStore", dependencies: [
            "TailgateWire", "TailgateBuffer", "TailgateExport", "CTailgateSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Recordings of OTLP traffic: the `.tgrec` format (header, record framing, reader) and its rotating writer.
        .target(name: "TailgateRecording", dependencies: [
            "TailgateWire",
            .product(name: "Logging", package: "swift-log"),
        ]),

        // Wiring and CLI.
        .target(name: "TailgateRuntime", dependencies: [
            "TailgateWire", "TailgateBuffer", "TailgatePolicies", "TailgateIngest", "TailgateHTTPServer", "TailgateExport", "TailgateStore", "TailgateRecording", "TailgateConfig", "Yams", "CTailgateSupport",
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "CoreMetrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // Load testing and recordings: generator, replay client, built-in receiver, reports.
        .target(name: "TailgateLoadtest", dependencies: [
            "TailgateWire", "TailgateBuffer", "TailgatePolicies", "TailgateIngest", "TailgateExport", "TailgateRecording", "CTailgateSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .executableTarget(name: "tailgate", dependencies: [
            "TailgateRuntime", "TailgatePolicies", "TailgateBuffer", "TailgateLoadtest", "TailgateRecording", "TailgateConfig", "TailgateImport", "CTailgateSupport",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], linkerSettings: allocator),
        .executableTarget(name: "tailgate-bench", dependencies: [
            "TailgateWire", "TailgateBuffer", "TailgatePolicies", "TailgateLoadtest", "TailgateStore", "CTailgateSupport",
            .product(name: "Logging", package: "swift-log"),
        ], linkerSettings: allocator),

        // Builders of OTLP test requests, shared by the test targets.
        .target(name: "TailgateTestSupport", dependencies: ["TailgateWire"], path: "Tests/TailgateTestSupport"),
        .testTarget(name: "TailgateWireTests", dependencies: ["TailgateWire", "TailgateTestSupport", "CZlib"]),
        .testTarget(name: "TailgateBufferTests", dependencies: ["TailgateBuffer", "TailgateWire", "TailgateTestSupport"]),
        .testTarget(name: "TailgatePoliciesTests", dependencies: ["TailgatePolicies", "TailgateBuffer", "TailgateWire", "TailgateConfig", "TailgateImport", "TailgateTestSupport"]),
        .testTarget(name: "TailgateConfigTests", dependencies: ["TailgateConfig", "Yams"]),
        .testTarget(name: "TailgateRecordingTests", dependencies: [
            "TailgateRecording",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TailgateImportTests", dependencies: ["TailgateImport", "TailgatePolicies", "TailgateConfig", "TailgateTestSupport"]),
        .testTarget(name: "TailgateHTTPServerTests", dependencies: [
            "TailgateHTTPServer",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TailgateIngestTests", dependencies: [
            "TailgateIngest", "TailgateHTTPServer", "TailgateWire", "TailgateTestSupport",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TailgateExportTests", dependencies: [
            "TailgateExport", "TailgateBuffer", "TailgateWire", "TailgateTestSupport", "TailgateIngest",
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOPosix", package: "swift-nio"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
        ]),
        .testTarget(name: "TailgateStoreTests", dependencies: [
            "TailgateStore", "TailgateBuffer", "TailgateExport", "TailgateWire", "TailgateTestSupport", "CTailgateSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .testTarget(name: "TailgateLoadtestTests", dependencies: [
            "TailgateLoadtest", "TailgateRecording", "TailgateWire", "TailgateRuntime", "TailgatePolicies", "TailgateTestSupport",
            "TailgateIngest", "TailgateHTTPServer",
            .product(name: "Logging", package: "swift-log"), .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .testTarget(name: "TailgateRuntimeTests", dependencies: [
            "TailgateRuntime", "TailgatePolicies", "TailgateBuffer", "TailgateExport", "TailgateWire", "TailgateConfig", "TailgateTestSupport",
            .product(name: "Logging", package: "swift-log"),
        ]),
    ]
)

// libFuzzer targets over the pure byte parsers (Fuzz/README.md). Only declared when TAILGATE_FUZZ is set, because they
// link libFuzzer's main and build only with `-sanitize=fuzzer`: `Fuzz/run.sh` builds them in their own scratch path and
// passes the coverage and ASan flags to every module (a flag here would instrument only the fuzz targets' own code).
if Context.environment["TAILGATE_FUZZ"] != nil {
    let fuzzFlags: [SwiftSetting] = [.unsafeFlags(["-parse-as-library", "-sanitize=fuzzer,address"])]
    let fuzzLink: [LinkerSetting] = [.unsafeFlags(["-sanitize=fuzzer,address"])]
    package.targets += [
        .executableTarget(name: "fuzz-scanner", dependencies: ["TailgateWire"], path: "Fuzz/Scanner",
                          swiftSettings: fuzzFlags, linkerSettings: fuzzLink),
        .executableTarget(name: "fuzz-otlp-json", dependencies: ["TailgateWire"], path: "Fuzz/OTLPJSON",
                          swiftSettings: fuzzFlags, linkerSettings: fuzzLink),
        .executableTarget(name: "fuzz-gzip", dependencies: ["TailgateWire"], path: "Fuzz/Gzip",
                          swiftSettings: fuzzFlags, linkerSettings: fuzzLink),
        .executableTarget(name: "fuzz-policies", dependencies: ["TailgatePolicies", "TailgateConfig"], path: "Fuzz/Policies",
                          swiftSettings: fuzzFlags, linkerSettings: fuzzLink),
    ]
}

// Upcoming language features in every Swift target (the libFuzzer harnesses aside): existentials spelled `any P`,
// imports internal unless declared `public import` (a module's public API names the modules it exposes), and members
// visible only through modules the file imports itself.
for target in package.targets where target.type != .system && !target.name.hasPrefix("C") && !target.name.hasPrefix("fuzz") {
    target.swiftSettings = (target.swiftSettings ?? []) + [.enableUpcomingFeature("ExistentialAny"), .enableUpcomingFeature("InternalImportsByDefault"), .enableUpcomingFeature("MemberImportVisibility")]
}
