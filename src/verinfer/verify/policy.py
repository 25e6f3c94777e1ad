"""What a verification requires, as objects (sigstore's shape): a policy is passed to
:meth:`verinfer.verify.Verifier.verify`, and a new requirement is a new class here, not a new
keyword argument. A choice that weakens verification has a class with a loud name
(:class:`UnsafeLocalSrs`). Pure."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from verinfer import note
from verinfer.errors import Error, VerificationError

if TYPE_CHECKING:
    from verinfer.modes import Mode
    from verinfer.verify.bundle import Bundle
    from verinfer.verify.trust import TrustRoot

__all__ = [
    "AcceptPromise",
    "AllOf",
    "Policy",
    "Reexecute",
    "RequireMode",
    "UnsafeLocalSrs",
    "WitnessQuorum",
]


class Policy:
    """A requirement of a verification. ``check`` runs after the bundle's own steps; a policy
    that shapes those steps instead (re-execution, the SRS rule) is read by the verifier."""

    def check(self, bundle: Bundle, trust: TrustRoot) -> str | None:
        """Raise :class:`VerificationError` if ``bundle`` fails the requirement; return the line
        that reports it passed (``None``: nothing to report)."""
        return None

    def members(self) -> tuple[Policy, ...]:
        """The policies this one is made of (itself, for a single requirement)."""
        return (self,)


@dataclass(frozen=True)
class AllOf(Policy):
    """Every one of ``policies``."""

    policies: tuple[Policy, ...]

    def __init__(self, policies: Iterable[Policy] = ()) -> None:
        object.__setattr__(self, "policies", tuple(policies))

    def members(self) -> tuple[Policy, ...]:
        return tuple(member for policy in self.policies for member in policy.members())


@dataclass(frozen=True)
class WitnessQuorum(Policy):
    """Step 1+: at least ``count`` of the trust root's witnesses, of as many distinct operators
    other than the log's own, cosigned the bundle's checkpoint (tlog-cosignature/v1, each with
    a timestamp). A log's own witness proves nothing about the history it showed others."""

    count: int

    def check(self, bundle: Bundle, trust: TrustRoot) -> str:
        found = _cosigned(bundle, list(trust.witnesses), self.count, trust.operators)
        return (
            f"1+. {found} trusted witnesses cosigned that checkpoint, each of another operator "
            f"and none the log's own (quorum {self.count})"
        )


@dataclass(frozen=True)
class RequireMode(Policy):
    """The receipt answers a request for ``mode`` (``optimistic`` accepts any stated window)."""

    mode: str

    def check(self, bundle: Bundle, trust: TrustRoot) -> str:
        from verinfer import modes  # noqa: PLC0415 - modes import the verifier's steps

        wanted: Mode = modes.parse(self.mode)
        stated = modes.parse(bundle.receipt["mode"], receipt=True)
        if not wanted.answers(stated):
            raise VerificationError(
                f"mode: the receipt states {bundle.receipt['mode']!r}, the policy requires "
                f"{self.mode!r}"
            )
        if not stated.complete(bundle):
            raise VerificationError(
                f"mode: the bundle is one node's part of a {stated.text} answer, not the answer"
            )
        return f"the receipt's mode {bundle.receipt['mode']} is the one required"


@dataclass(frozen=True)
class Reexecute(Policy):
    """Step 6: run the model here on the given inputs; the outputs must be the receipt's, bit
    for bit (meaningful on the same engine identity). Needs the model and the inputs. For a
    text generation (``verify_generation(..., reexecute=True)``, PROTOCOL.md §16) step 6 is
    one teacher-forced pass compared with the committed logits within a calibrated tolerance."""


@dataclass(frozen=True)
class AcceptPromise(Policy):
    """Accept a *promise*: a bundle whose receipt the node signed it will log by a deadline,
    but which no signed checkpoint covers yet (``durability="promise"``). The node is bound by
    its signature (a broken promise is evidence against it), but nobody can yet see the receipt
    in its log: upgrade the bundle (``Client.upgrade``) for that. Without this policy a promise
    fails verification.

    A promise due more than ``max_delay`` seconds after ``now`` (Unix seconds; the clock's
    when ``None``) is refused: a node that promised "in a thousand years" could never be
    shown overdue. The default is a node's largest merge delay, a day, and five minutes of
    clock skew."""

    max_delay: int = 86400 + 300
    now: float | None = None

    def too_late(self, deadline: int) -> bool:
        """Whether a promise due at ``deadline`` is due too late to be accepted."""
        now = time.time() if self.now is None else self.now
        return deadline > now + self.max_delay


@dataclass(frozen=True)
class UnsafeLocalSrs(Policy):
    """Accept a zk proof whose setup (SRS) is not one the trust root lists, such as a locally
    made development SRS: its maker could forge proofs. For tests and development only."""


def _operator_of(key: note.VerifierKey, operators: Mapping[str, str]) -> str:
    """The operator of ``key``: the label the caller gave it (a label that is itself a vkey
    stands for that key's operator), else the key itself, by its key material (one key under
    two names is one operator)."""
    seen: set[str] = set()
    while True:
        given = operators.get(key.vkey)
        if given is None:
            return "key:" + key.public.hex()
        if given in seen:
            return "cycle:" + min(seen)
        seen.add(given)
        try:
            key = note.VerifierKey.parse(given)
        except Error:
            return "operator:" + given


def _operators(operators: Mapping[str, str]) -> dict[str, str]:
    """The caller's mapping with every key in its normal text form."""
    normal = {}
    for vkey, operator in operators.items():
        try:
            normal[note.VerifierKey.parse(vkey).vkey] = str(operator)
        except Error as exc:
            raise VerificationError(f"step 1+ (witnesses): the operators map: {exc}") from exc
    return normal


def _cosigned(
    bundle: Bundle, witnesses: list[str], quorum: int, operators: Mapping[str, str]
) -> int:
    """Witness policy: at least ``quorum`` trusted witness keys of distinct operators, none of
    them the log's own operator, cosigned the checkpoint (tlog-cosignature/v1: each over the
    checkpoint text, with a timestamp). A log's own witness proves nothing about the history
    it showed others: it is the same party as the log."""
    mapping = _operators(operators)
    receipt = bundle.receipt
    node = note.VerifierKey.parse(receipt["node"])
    own = _operator_of(node, mapping)
    own_names = {f"{node.name}/witness", f"{receipt['log']}/witness"}
    cosigners = [
        key
        for key in map(note.VerifierKey.parse, witnesses)
        if key.algorithm == note.ALG_COSIGNATURE_V1
    ]

    # (a) the log's own witness: by the operator the caller gave, by its key material, or by
    # the name every node gives its own witness (a name its holder chose: it only ever
    # excludes, never admits)
    def is_own(key: note.VerifierKey) -> bool:
        return (
            _operator_of(key, mapping) == own or key.public == node.public or key.name in own_names
        )

    independent = {_operator_of(k, mapping) for k in cosigners if not is_own(k)}
    if len(independent) < quorum:
        raise VerificationError(
            f"step 1+ (witnesses): a quorum of {quorum} needs as many trusted witness keys "
            f"(cosigner keys) of distinct operators other than the log's, {len(independent)} "
            "given"
        )
    try:
        signed = note.attach(bundle.checkpoint, bundle.cosignatures)
        verified = note.verify(signed, cosigners).verified
    except (VerificationError, Error) as exc:
        raise VerificationError(f"step 1+ (witnesses): {exc}") from exc
    by_id = {(k.name, k.key_id): k for k in cosigners}
    counted, ignored = set(), []
    for signature in verified:
        key = by_id[(signature.name, signature.key_id)]
        if signature.timestamp is None:
            continue
        if is_own(key):
            ignored.append(key.name)
        else:
            counted.add(_operator_of(key, mapping))
    # (b) distinct operators: two keys of one operator, or one key under two names, count once
    if len(counted) < quorum:
        why = (
            f" (not counted: {', '.join(sorted(set(ignored)))}, the log's own operator's; a "
            "log's own witness never counts toward its quorum)"
            if ignored
            else ""
        )
        raise VerificationError(
            f"step 1+ (witnesses): {len(counted)} trusted witnesses of distinct operators other "
            f"than the log's cosigned the checkpoint, the policy needs {quorum}{why}"
        )
    return len(counted)
