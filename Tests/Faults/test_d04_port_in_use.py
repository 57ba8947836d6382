"""d04 — a listen port already in use.

When --grpc-listen / --http-listen / --metrics-listen named a port another process already listened
on, tailgate logged "tailgate started", spun at 100 % CPU and ignored SIGTERM. After the fix it exits
non-zero within 10 s with a message naming the address.
"""

from __future__ import annotations

import socket
import subprocess

import pytest

from faultlib import free_ports

EXIT_WITHIN_S = 10


@pytest.mark.parametrize("listener", ["grpc", "http", "metrics"])
def test_d04_port_in_use_exits_nonzero_naming_the_address(tailgates, tmp_path, listener):
    """d04: the port of one listener is taken: exit != 0 within 10 s, message contains 127.0.0.1:P."""
    blocker = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen(8)
        port = blocker.getsockname()[1]
        tg = tailgates(downstream=f"file:{tmp_path / 'kept.jsonl'}", start=False, **{listener: port})
        tg.start(wait_ready=False)
        try:
            code = tg.proc.wait(timeout=EXIT_WITHIN_S)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            tg.kill()  # it may be spinning and deaf to SIGTERM
        output = tg.log_text()
        assert code is not None, (f"--{listener}-listen 127.0.0.1:{port} (in use): still running after "
                                  f"{EXIT_WITHIN_S}s\n{tg.log_tail()}")
        assert code != 0, f"exit status 0 although 127.0.0.1:{port} was in use\n{tg.log_tail()}"
        assert f"127.0.0.1:{port}" in output, f"no message naming 127.0.0.1:{port}\n{tg.log_tail()}"
    finally:
        blocker.close()
