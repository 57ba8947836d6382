import Testing
@testable import TailgateRuntime

/// The Prometheus text → OpenMetrics conversion of `/metrics` (the end-to-end test checks real output with the
/// reference parser); here the cases the real exposition does not have today.
@Suite struct OpenMetricsTests {
    @Test func convertsFamiliesHelpTimestampsAndEnds() {
        let prometheus = """
            # HELP jobs_total Jobs "done", by \\\\ kind.
            # TYPE jobs_total counter
            jobs_total{kind="a} b",note="say \\"hi\\""} 3

            # TYPE legacy counter
            legacy 2 1700000000123
            # TYPE app_info gauge
            app_info{version="1"} 1
            # TYPE level_info gauge
            level_info 2
            # a comment
            # TYPE thing untyped
            thing 1.5

            """
        let om = String(decoding: OpenMetrics.convert(Array(prometheus.utf8)), as: UTF8.self)
        #expect(om == """
            # HELP jobs Jobs \\"done\\", by \\\\ kind.
            # TYPE jobs counter
            jobs_total{kind="a} b",note="say \\"hi\\""} 3
            # TYPE legacy counter
            legacy_total 2 1700000000.123
            # TYPE app info
            app_info{version="1"} 1
            # TYPE level_info gauge
            level_info 2
            # TYPE thing unknown
            thing 1.5
            # EOF

            """)
    }

    @Test(arguments: [
        (nil, false), ("*/*", false), ("text/plain", false), ("application/openmetrics-text", true),
        ("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1", true),
        ("application/openmetrics-text; q=0", false), ("text/plain, application/openmetrics-text;q=0.9", false),
        ("Application/OpenMetrics-Text;version=0.0.1", true),
    ] as [(String?, Bool)])
    func negotiates(accept: String?, openMetrics: Bool) {
        #expect(OpenMetrics.preferred(accept: accept) == openMetrics)
    }
}
