"""A child process that runs native code on hostile input, so its failures stay contained.

ONNX parsing, checking and ONNX Runtime are C++; a crafted model might crash them, hang them or
make them allocate without bound. :class:`Sandbox` keeps one worker process with an
address-space limit, sends it one call at a time over a pipe, and turns a crash, a timeout or an
allocation failure into :class:`~verinfer.errors.InputError`; the next call gets a fresh worker.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import IO, Any, TypeVar

from verinfer.errors import Error, InputError

__all__ = ["Sandbox"]

T = TypeVar("T")
_HEADER = struct.Struct(">Q")
_ENTRY = "from verinfer.hub.sandbox import _serve; _serve()"


def _send(stream: IO[bytes], value: object) -> None:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) != _HEADER.size:
        raise EOFError
    (length,) = _HEADER.unpack(header)
    data = stream.read(length)
    if len(data) != length:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own parent and child, over a private pipe


def _serve() -> None:
    """The worker's loop (argument: the memory limit): run calls until stdin closes."""
    memory = int(sys.argv[1])
    if memory > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    # the protocol owns the original stdout; anything native code prints goes to stderr
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer
    while True:
        try:
            function, args = _receive(requests)
        except EOFError:
            return
        try:
            reply: tuple[str, Any] = ("ok", function(*args))
        except Error as exc:
            reply = ("error", f"{exc}")
        except MemoryError:
            reply = ("error", "the model needs more memory than the sandbox allows")
        except Exception as exc:  # anything else is reported, never allowed to end the loop
            reply = ("error", f"unexpected {type(exc).__name__}: {exc}")
        _send(replies, reply)


class Sandbox:
    """One worker process, started on first use and replaced after a crash or a timeout.

    The worker is a fresh interpreter started with ``python -c``, not a multiprocessing
    child, so callers need no ``if __name__ == "__main__"`` guard.
    """

    def __init__(self, *, memory: int = 8 << 30) -> None:
        self._memory = memory
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None

    def _start(self) -> subprocess.Popen[bytes]:
        if self._process is not None and self._process.poll() is None:
            return self._process
        self._stop()
        self._process = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, str(self._memory)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return self._process

    def _stop(self) -> int | None:
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.kill()
        code = process.wait()
        for stream in (process.stdin, process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        return code

    def call(self, function: Callable[..., T], *args: Any, timeout: float, what: str) -> T:
        """``function(*args)`` in the worker; ``what`` names the input in error messages.

        ``function`` must be importable by name (a module-level function).
        """
        with self._lock:
            process = self._start()
            assert process.stdin is not None
            assert process.stdout is not None
            try:
                _send(process.stdin, (function, args))
                ready, _, _ = select.select([process.stdout], [], [], timeout)
                if not ready:
                    self._stop()
                    raise InputError(f"{what} took more than {timeout:g} s; it was stopped")
                status, value = _receive(process.stdout)
            except (EOFError, OSError):
                code = self._stop()
                raise InputError(
                    f"{what} crashed the sandboxed checker (exit code {code}); it is refused"
                ) from None
        if status != "ok":
            raise InputError(value)
        result: T = value
        return result

    def close(self) -> None:
        """Stop the worker."""
        with self._lock:
            self._stop()

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
