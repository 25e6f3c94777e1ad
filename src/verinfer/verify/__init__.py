"""Offline verification: receipts, proof bundles and the verifier. Needs no node and no network.

``Verifier(TrustRoot.from_file("trust.json")).verify(bundle, Claims(inputs=x, outputs=y),
AllOf([WitnessQuorum(2)]))``; :func:`verify_bundle` is the same with keyword arguments."""

from verinfer.modes import Claims
from verinfer.verify.bundle import (
    BUNDLE_TYPE,
    MODES,
    RECEIPT_TYPE,
    Bundle,
    Receipt,
    mode_matches,
    replicas_of,
    window_of,
)
from verinfer.verify.policy import (
    AllOf,
    Policy,
    Reexecute,
    RequireMode,
    UnsafeLocalSrs,
    WitnessQuorum,
)
from verinfer.verify.trust import TrustRoot
from verinfer.verify.verifier import Report, Verifier, verify_bundle, verify_bundles

__all__ = [
    "BUNDLE_TYPE",
    "MODES",
    "RECEIPT_TYPE",
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
