"""The inference engine: ONNX Runtime on the CPU in one pinned, documented configuration.

Every node runs models the same way, so two nodes with the same *engine identity* produce the same
bytes: CPU execution provider only, sequential execution, ``use_deterministic_compute``, graph
optimization level "all", and an explicit intra-op thread count. What the configuration cannot pin
is the CPU kernel set ONNX Runtime dispatches to at run time (AVX-512 and AVX2 kernels round
differently), so the identity names that *kernel class* too.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import platform
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np
import onnxruntime as ort

from verinfer.errors import InputError, LimitExceeded

__all__ = [
    "DEFAULT_RUN_MEMORY",
    "KERNEL_CLASSES",
    "OPTIMIZATION",
    "PROVIDER",
    "Engine",
    "identity",
    "kernel_class",
    "load_session",
    "run_options",
]

PROVIDER = "CPUExecutionProvider"
OPTIMIZATION = "all"
_LEVELS = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}

# the instruction-set levels ONNX Runtime's CPU kernels (MLAS) dispatch on, best first, as
# numpy's run-time CPUID probe names them
_KERNEL_FEATURES = (
    ("avx512vnni", {"AVX512F", "AVX512VNNI"}),
    ("avx512", {"AVX512F", "AVX512BW"}),
    ("avxvnni", {"AVX2", "AVXVNNI"}),
    ("avx2", {"AVX2", "FMA3"}),
    ("avx", {"AVX"}),
    ("sse4", {"SSE41"}),
)


KERNEL_CLASSES = frozenset(
    [name for name, _ in _KERNEL_FEATURES] + ["x86_64", "aarch64", "arm64", "unknown"]
)  # every value kernel_class() can return on the machines verinfer supports


@functools.cache
def kernel_class() -> str:
    """The CPU kernel class ONNX Runtime will dispatch to on this machine, e.g. ``avx2``.

    Read from CPUID (through numpy's run-time feature probe), as ONNX Runtime does, not from
    ``/proc/cpuinfo``: under an emulator (``qemu-x86_64 -cpu Haswell``) the two disagree.
    """
    machine = platform.machine().lower()
    if machine not in ("x86_64", "amd64"):
        return machine or "unknown"
    from numpy._core._multiarray_umath import (  # type: ignore[import-not-found]  # noqa: PLC0415
        __cpu_features__,
    )

    features = {name for name, present in __cpu_features__.items() if present}
    return next((name for name, needed in _KERNEL_FEATURES if needed <= features), "x86_64")


def identity() -> str:
    """The engine identity string that receipts and manifests record."""
    return f"onnxruntime-{ort.__version__}/{PROVIDER}/opt-{OPTIMIZATION}/{kernel_class()}"


def session_options(threads: int = 1, *, capped: bool = True) -> ort.SessionOptions:
    """The pinned session options, with ``threads`` intra-op threads; ``capped``: the session
    draws its tensors from the process's capped arena, if the process has one."""
    if threads < 1:
        raise InputError(f"threads must be >= 1, got {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[OPTIMIZATION]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.use_deterministic_compute = True
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only: warnings would go to stderr
    if (
        capped and _ARENA
    ):  # this process caps inference memory: every session draws from the shared arena
        options.add_session_config_entry("session.use_env_allocators", "1")
        # the weights stay outside it: the cap is on what a run allocates, not on the models kept
        options.add_session_config_entry("session.use_device_allocator_for_initializers", "1")
    return options


DEFAULT_RUN_MEMORY = 1 << 30
_ARENA: list[int] = []  # the cap of this process's shared ONNX Runtime arena, once set
_ARENA_LOCK = threading.Lock()
_ARENA_FULL = re.compile(r"Available memory of (\d+) is smaller than requested bytes of (\d+)")


def _share_arena(memory: int) -> None:
    """Make every session this process builds from now on allocate its tensors from one ONNX
    Runtime arena of at most ``memory`` bytes (an ``OrtArenaCfg`` with ``max_mem``, registered
    with the environment). An allocation beyond it fails inside ONNX Runtime, before any memory
    is taken: a requester-chosen ``ConstantOfShape`` took a node from 104 MB to 3.3 GB.

    ONNX Runtime has one such arena per process (per device), shared by the runs in progress,
    so the cap is one per process too."""
    if memory < 1 << 20:
        raise InputError(f"the inference memory limit must be at least 1 MiB, got {memory!r}")
    with _ARENA_LOCK:
        if _ARENA:
            if _ARENA[0] != memory:
                raise InputError(
                    f"this process already caps inference memory at {_ARENA[0]} bytes; ONNX "
                    f"Runtime shares one arena per process, so it cannot also be {memory}"
                )
            return
        info = ort.OrtMemoryInfo(
            "Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT
        )
        # -1: ONNX Runtime's defaults for the extend strategy, first chunk and dead bytes
        ort.create_and_register_allocator(info, ort.OrtArenaCfg(memory, -1, -1, -1))
        _ARENA.append(memory)


def load_session(model: bytes, threads: int = 1, *, capped: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session for the model bytes, in the pinned configuration."""
    try:
        options = session_options(threads, capped=capped)
        return ort.InferenceSession(model, options, providers=[PROVIDER])
    except Exception as exc:  # ORT raises its own untyped exceptions (Fail, InvalidGraph, ...)
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"ONNX Runtime cannot load the model: {message}") from exc


def _native(array: np.ndarray) -> np.ndarray:
    """ONNX Runtime reads raw bytes as native order: swap big-endian arrays first."""
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and not np.little_endian):
        return array.astype(array.dtype.newbyteorder("<"))
    return array


class _Watchdog:
    """One thread that sets ``terminate`` on runs past their deadline (no thread per run)."""

    def __init__(self) -> None:
        self._deadlines: list[tuple[float, int]] = []
        self._armed: dict[int, ort.RunOptions] = {}
        self._tickets = itertools.count()
        self._wakeup = threading.Condition()
        self._thread: threading.Thread | None = None

    def arm(self, seconds: float, options: ort.RunOptions) -> int:
        ticket = next(self._tickets)
        with self._wakeup:
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="verinfer-watchdog", daemon=True
                )
                self._thread.start()
            self._armed[ticket] = options
            heapq.heappush(self._deadlines, (time.monotonic() + seconds, ticket))
            if self._deadlines[0][1] == ticket:
                self._wakeup.notify()
        return ticket

    def disarm(self, ticket: int) -> None:
        with self._wakeup:
            self._armed.pop(ticket, None)  # its heap entry is dropped when it comes due,
            if len(self._deadlines) > 2 * len(self._armed) + 1024:  # or in a sweep like this
                self._deadlines = [d for d in self._deadlines if d[1] in self._armed]
                heapq.heapify(self._deadlines)

    def _run(self) -> None:
        with self._wakeup:
            while True:
                while self._deadlines and self._deadlines[0][1] not in self._armed:
                    heapq.heappop(self._deadlines)
                if not self._deadlines:
                    self._wakeup.wait()
                    continue
                due, ticket = self._deadlines[0]
                wait = due - time.monotonic()
                if wait > 0:
                    self._wakeup.wait(wait)
                    continue
                heapq.heappop(self._deadlines)
                options = self._armed.pop(ticket, None)
                if options is not None:
                    options.terminate = True


_WATCHDOG = _Watchdog()
RANDOM_SEED = 0  # ONNX Runtime's seed for random operators that name none (Engine pins it)


def run_options() -> ort.RunOptions:
    """Run options for a session of this process: when the process caps inference memory, the
    arena's free regions are given back after the run (a large run's leftovers would otherwise
    count against the cap for the next one, which then could not fit). Every run of a session
    built here uses them: traces for disputes and one-step re-executions too."""
    options = ort.RunOptions()
    if _ARENA:
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


def _over_memory(requested: int, cap: int) -> InputError | LimitExceeded:
    """The refusal of a run the arena could not serve: one allocation above the whole cap can
    never fit (400); otherwise the runs in progress hold the rest, and a retry may (503)."""
    if requested > cap:
        return InputError(
            f"the model needs {requested} bytes at once on these inputs, above the node's "
            f"inference memory limit of {cap} bytes (verinfer node start --max-run-memory)"
        )
    return LimitExceeded(
        f"the run needed {requested} bytes more, and the node's inference memory limit of "
        f"{cap} bytes, shared by the runs in progress, had less free; retry"
    )


class Engine:
    """Runs models by CID with cached sessions; safe to call from many threads at once.

    ONNX Runtime releases the GIL inside ``run``, so concurrent requests use several cores.
    ``timeout`` bounds each run: a run still going when it passes is terminated. ``memory``
    bounds the bytes of tensors the runs in progress allocate together (not the models'
    weights): a run that needs more is refused (see :func:`_share_arena`; one value per process;
    ``None``: no cap).
    """

    def __init__(
        self,
        *,
        threads: int = 1,
        cache: int = 32,
        timeout: float = 60.0,
        memory: int | None = DEFAULT_RUN_MEMORY,
    ) -> None:
        session_options(threads)  # validates
        # a random operator without a seed attribute draws from ONNX Runtime's process-wide
        # seed, which defaults to the clock: pinned, its answers do not depend on the process
        ort.set_seed(RANDOM_SEED)
        if memory is not None:
            _share_arena(memory)
        self.threads = threads
        self.timeout = timeout
        self.memory = memory
        self._cache = cache
        self._sessions: OrderedDict[str, ort.InferenceSession] = OrderedDict()
        self._outputs: dict[str, list[str]] = {}  # output names by model CID (fixed by its bytes)
        # models with operators whose state a session carries from run to run (random
        # generators: nondeterminism.py): each of their sessions serves exactly one run
        self._stateful: dict[str, bool] = {}
        self._fresh: dict[str, list[ort.InferenceSession]] = {}  # built, not yet run
        self._lock = threading.Lock()

    @property
    def identity(self) -> str:
        """The engine identity this engine's results carry."""
        return identity()

    def cpu_time(self) -> float:
        """The calling thread's CPU time in seconds, which a node times this engine's runs
        with (waiting for the GIL back is not a run's cost); a test engine may count its own."""
        return time.thread_time()

    def session(self, model: str, load: Callable[[], bytes]) -> ort.InferenceSession:
        """The session for model CID ``model``; ``load`` returns the (checked) bytes if needed.

        A model whose operators keep state across runs (a random generator advances on every
        call) gets a new session here, set aside for the next :meth:`run`, which uses it once:
        an answer never depends on the requests before it."""
        return self._session(model, load, set_aside=True)

    def _session(
        self, model: str, load: Callable[[], bytes], *, set_aside: bool
    ) -> ort.InferenceSession:
        with self._lock:
            found = self._sessions.get(model)
            if found is not None:
                self._sessions.move_to_end(model)
                return found
        data = load()
        stateful = self._stateful.get(model)
        if stateful is None:
            from verinfer.engine.nondeterminism import (  # noqa: PLC0415 - needs onnx's parser
                nondeterministic_operators_of,
            )

            try:
                stateful = bool(nondeterministic_operators_of(data))
            except ValueError as exc:
                raise InputError(f"ONNX Runtime cannot load the model: {exc}") from exc
            with self._lock:
                if len(self._stateful) > 4096:
                    self._stateful.clear()
                self._stateful[model] = stateful
        created = load_session(data, self.threads)
        with self._lock:
            if not stateful:
                self._sessions[model] = created
                while len(self._sessions) > self._cache:
                    self._sessions.popitem(last=False)
            elif set_aside:
                if model not in self._fresh and len(self._fresh) >= self._cache:
                    self._fresh.clear()  # sessions nobody ran: built again when asked
                spare = self._fresh.setdefault(model, [])
                if len(spare) < 4:  # for the runs that asked for it first (Node._compute)
                    spare.append(created)
        return created

    def _for_run(self, model: str, load: Callable[[], bytes]) -> ort.InferenceSession:
        """A session for one run: the cached one, or for a stateful model one never run."""
        with self._lock:
            if self._stateful.get(model):
                spare = self._fresh.get(model)
                if spare:
                    return spare.pop()  # taken under the lock: no other run gets it
        return self._session(model, load, set_aside=False)

    def run(
        self,
        model: str,
        load: Callable[[], bytes],
        inputs: Mapping[str, np.ndarray],
        *,
        timeout: float | None = None,
    ) -> dict[str, np.ndarray]:
        """Run the model on named inputs; return its named outputs."""
        session = self._for_run(model, load)
        limit = self.timeout if timeout is None else timeout
        options = run_options()
        ticket = _WATCHDOG.arm(limit, options)
        try:
            values = session.run(None, {k: _native(v) for k, v in inputs.items()}, options)
        except Exception as exc:  # ORT's own exception types are not importable API
            if options.terminate:
                message = f"inference took more than {limit:g} s; it was stopped"
                raise LimitExceeded(message) from exc
            full = _ARENA_FULL.search(str(exc)) if _ARENA else None
            if full is not None:
                raise _over_memory(int(full[2]), _ARENA[0]) from exc
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise InputError(f"the model failed on these inputs: {first}") from exc
        finally:
            _WATCHDOG.disarm(ticket)
        names = self._outputs.get(model)
        if names is None:
            names = self._outputs[model] = [output.name for output in session.get_outputs()]
        return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}
