"""The public surface: the names DESIGN.md promises exist, and nothing is exported by accident."""

from __future__ import annotations

import inspect
import subprocess
import sys

import verinfer
import verinfer.client
import verinfer.explorer
import verinfer.hub
import verinfer.log
import verinfer.modes
import verinfer.node
import verinfer.verify
from verinfer import canonical, cid, errors, merkle, note, tensors
from verinfer.engine import trace
from verinfer.hub import documents
from verinfer.modes import attested, dispute, optimistic, replicated, zk
from verinfer.modes import generation as generation_mode
from verinfer.text import generation as text_generation
from verinfer.text import sampler
from verinfer.verify import bundle, evidence, policy, promise, steps, trust, verifier


def test_the_public_contract_names_exist() -> None:
    for module, name in [
        (cid, "compute"),
        (merkle, "leaf_hash"),
        (merkle, "node_hash"),
        (merkle, "root"),
        (merkle, "inclusion_proof"),
        (merkle, "consistency_proof"),
        (merkle, "verify_inclusion"),
        (merkle, "verify_consistency"),
        (note, "verify"),
        (note, "Signer"),
        (errors, "Error"),
        (errors, "VerificationError"),
    ]:
        assert callable(getattr(module, name)), f"{module.__name__}.{name}"
    assert issubclass(errors.VerificationError, errors.Error)
    assert verinfer.merkle is merkle  # reachable from a plain `import verinfer`
    assert list(inspect.signature(merkle.verify_inclusion).parameters) == [
        "leaf_hash",
        "index",
        "size",
        "proof",
        "root",
    ]
    assert list(inspect.signature(merkle.verify_consistency).parameters) == [
        "size1",
        "size2",
        "root1",
        "root2",
        "proof",
    ]


def test_exports_are_deliberate() -> None:
    assert sorted(verinfer.__all__) == sorted(
        [
            "Error",
            "VerificationError",
            "__version__",
            "canonical",
            "cid",
            "errors",
            "merkle",
            "note",
        ]
    )
    assert sorted(verinfer.log.__all__) == sorted(
        ["MAX_ENTRY_BYTES", "Appended", "Log", "Store", "open_store"]
    )
    assert sorted(verinfer.verify.__all__) == sorted(
        [
            "BUNDLE_TYPE",
            "MODES",
            "RECEIPT_TYPE",
            "AcceptPromise",
            "AllOf",
            "Bundle",
            "Claims",
            "Policy",
            "Receipt",
            "Reexecute",
            "Report",
            "RequireMode",
            "TrustRoot",
            "UnsafeLocalSrs",
            "Verifier",
            "WitnessQuorum",
            "mode_matches",
            "replicas_of",
            "verify_bundle",
            "verify_bundles",
            "window_of",
        ]
    )
    assert sorted(verinfer.modes.__all__) == sorted(
        [
            "FAMILY",
            "MODES",
            "NO_EVIDENCE",
            "Attested",
            "Claims",
            "Context",
            "Evidence",
            "Mode",
            "Optimistic",
            "Replicated",
            "Zk",
            "parse",
        ]
    )
    assert sorted(verinfer.node.__all__) == ["Node", "Result", "load_or_create_key"]
    assert sorted(verinfer.explorer.__all__) == ["STATIC", "add_explorer"]
    assert sorted(verinfer.client.__all__) == sorted(
        [
            "AsyncClient",
            "AsyncNetwork",
            "BrokenPromiseError",
            "ChatResult",
            "Client",
            "EmbedResult",
            "Network",
            "NetworkError",
            "NodeKeys",
            "Publishers",
            "Result",
            "StaleHistory",
            "connect",
        ]
    )
    modules = (canonical, cid, errors, merkle, note, tensors, verinfer.log, verinfer.hub)
    for module in (*modules, verinfer.verify, verinfer.modes, verinfer.node, verinfer.client):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


def test_the_pure_core_does_no_io() -> None:
    """The verification core never imports the log, the store or the network."""
    forbidden = ("sqlite3", "psycopg", "socket", "httpx", "verinfer.log", "open(")
    pure = (canonical, cid, merkle, note, tensors, documents, bundle, verifier, evidence, policy)
    pure += (steps, trust, promise, attested, replicated, optimistic, zk)  # trust reads a file
    pure += (generation_mode, sampler, text_generation)  # generation receipts, offline
    for module in (*pure, trace, dispute):  # disputes: verdicts are checked offline too
        source = inspect.getsource(module)
        for word in forbidden:
            assert f"import {word}" not in source, (module.__name__, word)
            assert f"from {word}" not in source, (module.__name__, word)
        assert " open(" not in source, module.__name__


def test_the_verifier_loads_without_the_node_or_the_runtime() -> None:
    """Embedding the verifier pulls in neither ONNX Runtime nor the log, the hub or a server."""
    code = (
        "import sys, verinfer.verify, verinfer.verify.evidence, verinfer.tensors, "
        "verinfer.hub.documents; "
        "bad = [m for m in ('onnxruntime', 'onnx', 'sqlite3', 'psycopg', 'verinfer.log', "
        "'verinfer.node', 'verinfer.engine') if m in sys.modules]; print(bad)"
    )
    found = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert found.stdout.strip() == "[]", found.stdout


def test_the_client_core_does_no_network_io() -> None:
    """Both SDK clients drive one core of flows; a flow that sent or slept by itself would work
    in one driver only (and block the other's event loop)."""
    from verinfer.client import _core  # noqa: PLC0415 - the internal module under test

    source = inspect.getsource(_core)
    for word in ("httpx.Client(", "httpx.AsyncClient(", ".request(", "time.sleep(", "asyncio"):
        assert word not in source, word
