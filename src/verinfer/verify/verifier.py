"""The offline verifier: checks a bundle with nothing but trusted keys and, optionally, the
tensors and the model. Pure except for the optional local re-execution.

:class:`Verifier` takes the caller's :class:`~verinfer.verify.TrustRoot` once and a
:class:`~verinfer.verify.Policy` per call; every mode-specific step is asked of the bundle's
mode (:mod:`verinfer.modes`). :func:`verify_bundle` is the same as keyword arguments."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from verinfer import cid, modes, tensors
from verinfer.errors import Error, VerificationError
from verinfer.modes import Claims, Context
from verinfer.modes.replicated import KERNEL_CLASSES, cross_class_bound, kernel_class_of
from verinfer.note import Checkpoint
from verinfer.verify.bundle import Bundle
from verinfer.verify.policy import (
    AcceptPromise,
    AllOf,
    Policy,
    Reexecute,
    UnsafeLocalSrs,
    WitnessQuorum,
)
from verinfer.verify.promise import open_promise
from verinfer.verify.steps import Report, checkpoint_of, inclusion
from verinfer.verify.trust import TrustRoot

__all__ = [
    "KERNEL_CLASSES",
    "Report",
    "Verifier",
    "cross_class_bound",
    "kernel_class_of",
    "verify_bundle",
    "verify_bundles",
]


class Verifier:
    """Verifies bundles under one trust root (sigstore's shape: the trust is built once, the
    policy is given per call)."""

    def __init__(self, trust: TrustRoot) -> None:
        self.trust = trust

    def verify(
        self,
        bundle: Bundle,
        claims: Claims | None = None,
        policy: Policy | None = None,
        *,
        report: Report | None = None,
    ) -> None:
        """Verify ``bundle``; return ``None`` or raise :class:`VerificationError` naming the
        step that failed.

        Steps: (1) the checkpoint is signed by a trusted node key, the one the receipt names,
        for the receipt's log; (1+) the policy's witness quorum; (2) the receipt is included in
        that checkpoint's tree; (2+) the mode's evidence (e.g. replicated agreement); (3) the
        model bytes, if given, are the receipt's model; (4) the inputs and (5) the outputs, if
        given, have the receipt's digests; (6) with :class:`Reexecute`, running the model on
        the inputs here gives the receipt's outputs bit for bit; (7) the mode's proof about the
        claims (zk); then the policy's other requirements."""
        say = report or (lambda _: None)
        claims = claims or Claims()
        members = (policy or AllOf()).members()
        trusted = list(self.trust.nodes)
        receipt = bundle.receipt
        mode = modes.parse(receipt["mode"], receipt=True)
        if bundle.promised:
            _promise(bundle, trusted, members, say)
        else:
            checkpoint = checkpoint_of(bundle, trusted)
            node = receipt["node"]
            say(f"1. checkpoint of size {checkpoint.size} is signed by trusted node {node}")
            for member in members:
                if isinstance(member, WitnessQuorum) and member.count > 0:
                    say(member.check(bundle, self.trust))
            inclusion(bundle, checkpoint)
            say(f"2. receipt is entry {bundle.index} of that log ({len(bundle.proof)}-hash proof)")
        mode.check_evidence(bundle, trusted, say)
        if claims.model is not None:
            try:
                cid.verify(receipt["model"], claims.model)
            except VerificationError as exc:
                raise VerificationError(f"step 3 (model): {exc}") from exc
            say(f"3. model bytes are {receipt['model']}")
        for step, name, given in ((4, "inputs", claims.inputs), (5, "outputs", claims.outputs)):
            if given is None:
                continue
            try:
                found = tensors.map_digest(given)
            except Error as exc:
                raise VerificationError(f"step {step} ({name}): {exc}") from exc
            if found != receipt[name]:
                raise VerificationError(
                    f"step {step} ({name}): the given {name} have digest {found}, the receipt "
                    f"says {receipt[name]}"
                )
            say(f"{step}. {name} match the receipt's digest {found}")
        if any(isinstance(member, Reexecute) for member in members):
            if claims.model is None or claims.inputs is None:
                raise VerificationError("step 6 (re-execution) needs the model and the inputs")
            _reexecute(bundle, claims.model, claims.inputs, say)
        insecure = any(isinstance(member, UnsafeLocalSrs) for member in members)
        mode.check_claims(bundle, claims, Context(self.trust, say, insecure))
        for member in members:
            if not isinstance(member, WitnessQuorum | Reexecute | UnsafeLocalSrs | AcceptPromise):
                line = member.check(bundle, self.trust)
                if line:
                    say(line)


def _promise(bundle: Bundle, trusted: list[str], members: tuple[Policy, ...], say: Report) -> None:
    """Steps 1-2 of a promise: only under :class:`AcceptPromise`, and reported as a promise."""
    receipt = bundle.receipt
    accept = next((member for member in members if isinstance(member, AcceptPromise)), None)
    if accept is None:
        raise VerificationError(
            f"step 1 (log): this bundle is a signed promise that the receipt will be entry "
            f"{bundle.index} of the node's log, not yet a logged receipt: upgrade it "
            "(verinfer upgrade, Client.upgrade) or accept promises with AcceptPromise()"
        )
    if any(isinstance(member, WitnessQuorum) and member.count > 0 for member in members):
        raise VerificationError(
            "step 1+ (witnesses): a promise has no checkpoint for witnesses to cosign: upgrade it"
        )
    if receipt["node"] not in trusted:
        raise VerificationError(
            f"step 1 (promise): the receipt's node {receipt['node']!r} is not a trusted key"
        )
    try:
        promise = open_promise(
            bundle.promise,
            [receipt["node"]],
            receipt=receipt.data,
            index=bundle.index,
            path=bundle.proof,
        )
    except VerificationError as exc:
        raise VerificationError(f"step 1 (promise): {exc}") from exc
    if promise.log != receipt["log"]:
        raise VerificationError(
            f"step 1 (promise): it promises entries of log {promise.log!r}, the receipt is "
            f"for log {receipt['log']!r}"
        )
    if accept.too_late(promise.deadline):
        raise VerificationError(
            f"step 1 (promise): its deadline {promise.when} is more than {accept.max_delay} s "
            "away: a promise due that late could never be shown overdue"
        )
    say(
        f"1. PROMISE, NOT YET LOGGED: trusted node {receipt['node']} signed that this receipt "
        f"will be entry {promise.index} of log {promise.log!r} by {promise.when}"
    )
    say("2. no inclusion proof yet: upgrade the bundle to see the receipt in the log")


def verify_bundle(
    bundle: Bundle,
    trusted_vkeys: Iterable[str],
    inputs: Mapping[str, np.ndarray] | None = None,
    outputs: Mapping[str, np.ndarray] | None = None,
    model: bytes | None = None,
    *,
    reexecute: bool = False,
    report: Report | None = None,
    witnesses: Iterable[str] = (),
    quorum: int = 0,
    operators: Mapping[str, str] | None = None,
    zk_materials: Mapping[str, bytes] | None = None,
    zk_publishers: Iterable[str] = (),
    trusted_srs: Iterable[str] = (),
    allow_insecure_srs: bool = False,
    accept_promise: AcceptPromise | None = None,
) -> None:
    """Verify a bundle offline; return ``None`` or raise :class:`VerificationError`: the
    steps of :meth:`Verifier.verify`, with the trust root and the policy as keyword arguments.

    With ``quorum``, step (1+): at least ``quorum`` of the trusted ``witnesses``, of as many
    distinct operators other than the log's own, cosigned the checkpoint. ``operators`` maps
    keys (node vkeys and witness vkeys) to their operator, the caller's trust decision; a key
    it does not name is its own operator, and a witness named ``<the node key's name>/witness``
    (how every node names its own) is taken as the log's own witness whatever the mapping says.
    ``zk_publishers`` are the publisher keys trusted to endorse circuits, ``trusted_srs`` the
    zk setups accepted (``allow_insecure_srs``: any, see :class:`UnsafeLocalSrs`).
    ``accept_promise=AcceptPromise()``: a promise passes (reported as one); by default it fails.
    """
    trust = TrustRoot.of(
        trusted_vkeys,
        witnesses=witnesses,
        operators=operators,
        publishers=zk_publishers,
        srs=trusted_srs,
    )
    policy: list[Policy] = [WitnessQuorum(quorum)] if quorum > 0 else []
    policy += [Reexecute()] if reexecute else []
    policy += [UnsafeLocalSrs()] if allow_insecure_srs else []
    policy += [accept_promise] if isinstance(accept_promise, AcceptPromise) else []
    claims = Claims(inputs, outputs, model, zk_materials)
    Verifier(trust).verify(bundle, claims, AllOf(policy), report=report)


def _reexecute(bundle: Bundle, model: bytes, inputs: Mapping[str, np.ndarray], say: Report) -> None:
    # (6) run it here; imported lazily so the verifier needs ONNX Runtime only for this step
    from verinfer import engine  # noqa: PLC0415
    from verinfer.engine.nondeterminism import nondeterministic_operators_of  # noqa: PLC0415

    receipt = bundle.receipt
    if set(inputs) == {"prompt", "sampling"}:  # a generation record's inputs (PROTOCOL.md §16)
        raise VerificationError(
            "step 6 (re-execution): these are a generation record's tensors, not the model's "
            "inputs: a generation is re-executed teacher-forced within a tolerance "
            "(verify_generation(..., reexecute=True), verinfer verify-generation --reexecute)"
        )
    try:
        random = nondeterministic_operators_of(model)
    except ValueError as exc:
        raise VerificationError(f"step 6 (re-execution): {exc}") from exc
    if random:  # a different draw here would prove nothing, and a same one nothing either
        raise VerificationError(
            f"step 6 (re-execution): the model holds nondeterministic operators "
            f"({', '.join(random)}): its outputs are not a function of its inputs, so "
            "re-execution cannot judge them"
        )
    try:
        computed = engine.Engine(memory=None).run(receipt["model"], lambda: model, inputs)
    except Error as exc:
        raise VerificationError(f"step 6 (re-execution): {exc}") from exc
    found = tensors.map_digest(computed)
    if found != receipt["outputs"]:
        here = engine.identity()
        hint = (
            ""
            if here == receipt["engine"]
            else f" (engines differ: here {here}, node {receipt['engine']}; low bits may differ "
            f"across CPU kernel classes)"
        )
        raise VerificationError(
            f"step 6 (re-execution): outputs here have digest {found}, the receipt says "
            f"{receipt['outputs']}{hint}"
        )
    say(f"6. re-executed here on {engine.identity()}: outputs are bit-identical")


def verify_bundles(bundles: Iterable[Bundle], trusted_vkeys: Iterable[str]) -> None:
    """Verify many bundles (steps 1-2); each distinct checkpoint is verified once.

    Returns ``None`` or raises :class:`VerificationError` naming the first bad bundle.
    """
    trusted = list(trusted_vkeys)
    seen: dict[tuple[str, str, str], Checkpoint] = {}
    for position, bundle in enumerate(bundles):
        receipt = bundle.receipt
        key = (bundle.checkpoint, receipt["node"], receipt["log"])
        try:
            if bundle.promised:
                raise VerificationError("a promise, not yet logged: upgrade it")
            checkpoint = seen.get(key)
            if checkpoint is None:
                checkpoint = seen[key] = checkpoint_of(bundle, trusted)
            inclusion(bundle, checkpoint)
            modes.parse(receipt["mode"], receipt=True).check_evidence(bundle, trusted, _quiet)
        except VerificationError as exc:
            raise VerificationError(f"bundle {position}: {exc}") from exc


def _quiet(_: str) -> None:
    pass
