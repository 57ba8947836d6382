"""A downstream given by host name is reached (it used to be handed to the transport as an IPv4 literal, so a
collector addressed as `otel-collector:4317` never received anything). The machine's own host name resolves to
loopback here; `localhost` is covered too."""

from __future__ import annotations

import socket

import pytest

from agent import run_agent
from conftest import TailgateProcess, tailgate_binary
from test_e2e import must_keep

N_TRACES = 60


class NamedDownstreamTailgate(TailgateProcess):
    def __init__(self, binary, workdir, downstream_port: int, host: str) -> None:
        super().__init__(binary, workdir, downstream_port)
        self.host = host

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--downstream") + 1] = f"grpc://{self.host}:{self.downstream_port}"
        return cmd


@pytest.mark.parametrize("host", [socket.gethostname(), "localhost"])
def test_grpc_downstream_by_host_name(receiver, tmp_path, request, host):
    resolved = socket.gethostbyname(host)
    assert resolved.startswith("127."), f"{host} resolves to {resolved}, not loopback: test needs a loopback name"
    tg = NamedDownstreamTailgate(tailgate_binary(), tmp_path, receiver.port, host)
    request.node._tailgates = [tg]
    tg.start()
    try:
        result = run_agent("grpc", tg.grpc_endpoint, N_TRACES, seed=77)
        assert result.ok
        expected = {t.trace_id for t in result.traces if must_keep(t)}
        assert expected, "the seed must produce kept traces"
        tg.terminate()  # decides and flushes everything buffered
        assert tg.exit_code == 0, tg.log_tail()
        assert receiver.trace_ids() == expected, tg.log_tail()
    finally:
        tg.kill()
