import Testing
import TailgateIngest
@testable import TailgateRuntime

@Suite struct EnvironmentSubstitutionTests {
    let env = ["TENANT": "team-a", "TOKEN": "s3cret", "EMPTY": ""]

    @Test(arguments: [
        ("downstream_headers: {X-Scope-OrgID: ${env:TENANT}}", "team-a"),
        ("downstream_headers: {X-Scope-OrgID: \"pre-${env:TENANT}-post\"}", "pre-team-a-post"),
        ("downstream_headers: {X-Scope-OrgID: \"$${env:TENANT}\"}", "${env:TENANT}"),
        ("downstream_headers: {X-Scope-OrgID: \"${env:EMPTY}x\"}", "x"),
    ])
    func substitutes(yaml: String, expected: String) throws {
        let c = try TailgateConfiguration.parse(yaml, file: "c.yaml", environment: env)
        #expect(c.downstreamHeaders["X-Scope-OrgID"] == expected)
    }

    @Test func anUnsetVariableIsAnErrorAtItsPosition() {
        let yaml = "grpc_listen: 127.0.0.1:4317\ndownstream_headers: {Authorization: \"Bearer ${env:MISSING}\"}\n"
        #expect {
            _ = try TailgateConfiguration.parse(yaml, file: "c.yaml", environment: env)
        } throws: { error in
            "\(error)".contains("c.yaml:2:") && "\(error)".contains("MISSING is not set")
        }
    }

    @Test func onlyEnvReferencesAreSupported() {
        #expect(throws: (any Error).self) {
            _ = try TailgateConfiguration.parse("downstream_headers: {A: \"${file:/etc/x}\"}", file: "c.yaml", environment: env)
        }
    }

    @Test func authAndHeadersAreRead() throws {
        let c = try TailgateConfiguration.parse("""
            auth:
              bearer_tokens: [one, "${env:TOKEN}"]
            downstream_headers:
              X-Scope-OrgID: team-a
              api-key: k
            admin_listen: 127.0.0.1:9999
            """, file: "c.yaml", environment: env)
        #expect(c.bearerTokens == ["one", "s3cret"])
        #expect(c.downstreamHeaders == ["X-Scope-OrgID": "team-a", "api-key": "k"])
        #expect(c.adminListen == "127.0.0.1:9999")
    }
}

@Suite struct AuthenticatorTests {
    let auth = Authenticator(tokens: ["alpha", "beta-token"])!

    @Test(arguments: [
        ("Bearer alpha", true), ("bearer beta-token", true), ("BEARER alpha", true),
        ("Bearer alph", false), ("Bearer alphaa", false), ("Bearer ", false), ("alpha", false),
        ("Basic YWxwaGE=", false), ("Bearer beta-tokeN", false),
    ])
    func accepts(header: String, expected: Bool) {
        #expect(auth.accepts(authorization: header) == expected)
    }

    @Test func noHeaderIsRejectedAndNoTokensMeansOff() {
        #expect(!auth.accepts(authorization: nil))
        #expect(Authenticator(tokens: []) == nil)
        #expect(Authenticator(tokens: [""]) == nil)
    }
}
