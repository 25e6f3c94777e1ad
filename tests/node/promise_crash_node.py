"""A node a crash test kills: ``promise_crash_node.py DATA PORT MODE``.

Serves the node at DATA over HTTP on 127.0.0.1:PORT. In MODE ``stuck`` its log's appends never
finish: a promise is answered (it waits for no commit) and its receipt stays in memory until the
process is killed between promise and commit. In MODE ``commit`` it is a plain node (the test
kills it once the receipt is committed). Prints ``SERVING`` once it listens.
"""

from __future__ import annotations

import sys
import threading

import uvicorn

from verinfer.node import Node
from verinfer.node.app import create_app


def main(data: str, port: int, mode: str) -> None:
    node = Node(data)
    never = threading.Event()

    def stuck(entries: object, **options: object) -> object:
        never.wait()  # the commit never happens: the process is killed here
        raise AssertionError("unreachable")

    if mode == "stuck":
        node.log.append = stuck  # type: ignore[method-assign,assignment]
    config = uvicorn.Config(create_app(node), host="127.0.0.1", port=port, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.01)
    print("SERVING", flush=True)
    thread.join()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
