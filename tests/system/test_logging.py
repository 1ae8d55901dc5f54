"""The log of a real ``python -m trio_c10k`` process under ``DEBUG``: each line once.

Django's default logging prints the ``django`` loggers' records to the console when ``DEBUG``
is on; the command's own handler (on the root logger) used to print them a second time.
"""

from __future__ import annotations

import re

from tests.helpers import Supervised, http_get


def test_under_debug_each_line_is_printed_once() -> None:
    server = Supervised("--bind", "127.0.0.1:0", env={"DJANGO_DEBUG": "1"})
    try:
        port = int(server.wait_for(r"Listening on http://127\.0\.0\.1:(\d+)")[0][1])
        assert http_get("127.0.0.1", port, "/t/no-such-page/")[0] == 404
        assert http_get("127.0.0.1", port, "/t/ws/echo/")[0] == 426
    finally:
        assert server.stop() == 0
    assert re.findall(r".*/t/no-such-page/.*", server.log) == ["Not Found: /t/no-such-page/"]
    assert re.findall(r".*/t/ws/echo/.*", server.log) == [
        f"{line} [INFO] trio_c10k.websocket: GET /t/ws/echo/: 426 This URL only speaks WebSocket; "
        "send an Upgrade: websocket request"
        for line in re.findall(r"(\S+ \S+) \[INFO\] trio_c10k.websocket", server.log)
    ]
