"""Disputes in process: real models (three DAG-shaped architectures and a two-output scikit-learn
model), real receipts from a node's log, the referee's game, and verdicts checked offline."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).parent))
from dishonest import Answering, CrossClass, Liar, Perturbing, Replaying, Silent, perturbed_trace

from verinfer import canonical, note
from verinfer.engine import Engine
from verinfer.engine.trace import Steps, Trace
from verinfer.errors import InputError, VerificationError
from verinfer.examples import light_model, sklearn_model
from verinfer.modes.dispute import Dispute, LocalParty, Verdict, settle, verify_verdict
from verinfer.node import Node
from verinfer.node.service import Result
from verinfer.testing import FalsifyingEngine
from verinfer.verify import evidence

ARCHITECTURES = ("squeezenet", "resnet50", "densenet121", "inception_v1")


@dataclass
class Setup:
    name: str
    model: bytes
    steps: Steps
    node: Node
    inputs: dict[str, np.ndarray]
    honest: Result
    referee: note.Signer
    carol: note.Signer

    def answer(self, outputs: Mapping[str, np.ndarray] | None = None) -> Result:
        """An optimistic answer from the node; with ``outputs``, the node signs those."""
        engine = self.node.engine
        if outputs is not None:
            self.node.engine = Answering(outputs)
        try:
            answered = self.node.infer(f"alice/{self.name}", self.inputs, mode="optimistic")
        finally:
            self.node.engine = engine
        self.node.archive.flush()
        return answered

    def party(self, cls: type[LocalParty] = LocalParty, *, side: str, **kwargs: Any) -> Any:
        """A side: the node (``defendant``, standing by what it answered) or carol."""
        signer = self.node.signer if side == "defendant" else self.carol
        engine = kwargs.pop("engine", self.node.engine.identity)
        stands_by: Callable[..., Any] = kwargs.pop("stands_by", self._computes)
        if side == "defendant" and stands_by is self._computes:
            stands_by = self.node.disputes._stands_by  # what the node answered, from its archive
        return cls(signer, lambda _: self.model, stands_by, engine=engine, **kwargs)

    def _computes(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> Any:
        return Engine().run(dispute.receipt["model"], lambda: self.model, inputs)

    def settle(
        self, result: Result, defendant: LocalParty, challenger: LocalParty, deadline: float = 60
    ) -> Verdict:
        dispute = Dispute.create(
            result.bundle, challenger=self.carol.vkey, referee=self.referee.vkey, deadline=deadline
        )
        verdict = settle(
            dispute,
            self.inputs,
            self.model,
            defendant=defendant,
            challenger=challenger,
            signer=self.referee,
            steps=self.steps,
        )
        assert len(verdict.body["rounds"]) <= math.ceil(math.log2(self.steps.count))
        checked = verify_verdict(verdict.data, model=self.model, referees=[self.referee.vkey])
        assert checked.winner == verdict.winner
        return verdict


def _signer(name: str) -> note.Signer:
    return note.Signer(note.generate_key(name)[0])


def _setup(tmp: Path, name: str, model: bytes, inputs: dict[str, np.ndarray]) -> Iterator[Setup]:
    with Node(tmp / "node") as node:
        node.hub.publish(model, repository=f"alice/{name}", version="1", signer=_signer("alice"))
        honest = node.infer(f"alice/{name}", inputs, mode="optimistic")
        yield Setup(name, model, Steps(model), node, inputs, honest, _signer("referee"),
                    _signer("carol"))  # fmt: skip


@pytest.fixture(scope="module", params=ARCHITECTURES)
def arch(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Setup]:
    name = request.param
    image = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    model = light_model(name, seed=11)
    yield from _setup(tmp_path_factory.mktemp(name), name, model, {Steps(model).inputs[0]: image})


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    image = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    yield from _setup(tmp_path_factory.mktemp("sq"), "squeezenet", light_model("squeezenet",
                      seed=5), {"data_0": image})  # fmt: skip


@pytest.fixture(scope="module")
def iris(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    rows = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], dtype=np.float32)
    model = sklearn_model("iris")
    yield from _setup(
        tmp_path_factory.mktemp("iris"), "iris", model, {Steps(model).inputs[0]: rows}
    )


def _positions(steps: Steps, count: int = 6) -> list[int]:
    """Steps spread over the graph (first and last included) that write a live tensor."""
    wanted = np.linspace(1, steps.count, count).round().astype(int)
    chosen = []
    for target in wanted:
        at = int(target)
        while not set(steps.step(at).outputs) & set(steps.live(at)):
            at -= 1
        chosen.append(at)
    return sorted(set(chosen))


def _lying_answer(setup: Setup, at: int, scale: float = 1000.0) -> Result:
    trace = perturbed_trace(setup.steps, setup.inputs, at, scale)
    return setup.answer({name: trace.values[name] for name in setup.steps.outputs})


# ---------------------------------------------------------------------------------------------
# The sweeps: every position, three architectures


def test_a_dishonest_node_loses_at_every_position(arch: Setup) -> None:
    for at in _positions(arch.steps):
        lying = _lying_answer(arch, at)
        defendant = arch.party(Perturbing, side="defendant", at=at)
        verdict = arch.settle(lying, defendant, arch.party(side="challenger"))
        assert verdict.body["judgement"], verdict.reason
        assert (verdict.winner, verdict.body["judgement"]["step"]) == ("challenger", at), (
            at,
            verdict.reason,
        )
        assert "beyond the bound" in verdict.reason


def test_an_honest_node_wins_against_a_false_challenger_at_every_position(arch: Setup) -> None:
    defendant = arch.party(side="defendant")
    for at in _positions(arch.steps):
        challenger = arch.party(Perturbing, side="challenger", at=at)
        verdict = arch.settle(arch.honest, defendant, challenger)
        assert (verdict.winner, verdict.body["judgement"]["step"]) == ("defendant", at)
        assert "disputed a correct step" in verdict.reason


def test_a_node_lying_about_one_state_mid_game_loses(arch: Setup) -> None:
    count = arch.steps.count
    midpoints = [count // 2, count // 4, (count // 2 + count) // 2]
    for at in midpoints:
        lying = _lying_answer(arch, count)  # it must lie about something to be disputed
        defendant = arch.party(Liar, side="defendant", at=at)
        verdict = arch.settle(lying, defendant, arch.party(side="challenger"))
        assert verdict.winner == "challenger", (at, verdict.reason)
    # an honest answer, and the challenger lies about a state: the challenger loses
    liar = arch.party(Liar, side="challenger", at=count // 2,
                      stands_by=lambda d, i: _lying_outputs(arch))  # fmt: skip
    verdict = arch.settle(arch.honest, arch.party(side="defendant"), liar)
    assert verdict.winner == "defendant"


def _lying_outputs(setup: Setup) -> dict[str, np.ndarray]:
    return {name: value + 1 for name, value in setup.honest.outputs.items()}


def _squaring_model() -> bytes:
    """y = relu(x) * relu(x) + c: one step reads the same tensor twice."""
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["x"], ["r"]),
            helper.make_node("Mul", ["r", "r"], ["m"]),
            helper.make_node("Add", ["m", "c"], ["y"]),
        ],
        "squaring",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("c", TensorProto.FLOAT, [4], [0.5, -1.0, 2.0, 0.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


class _Asked(LocalParty):
    """An honest side that records the names it is asked to reveal."""

    asked: list[list[str]]

    def reveal(self, dispute: Dispute, step: int, names: Any) -> Any:
        self.asked = [*getattr(self, "asked", []), list(names)]
        return super().reveal(dispute, step, names)


def test_a_step_that_reads_one_tensor_twice_asks_for_it_once(tmp_path: Path) -> None:
    """Mul(r, r): the referee asks the defendant to reveal ``r`` once (over HTTP a side reveals
    exactly the tensors asked for, so a repeated name would make an honest defendant lose)."""
    inputs = {"x": np.array([[1.0, -2.0, 3.0, 0.5]], dtype=np.float32)}
    setup = next(_setup(tmp_path, "squaring", _squaring_model(), inputs))
    mul = next(k for k in range(1, setup.steps.count + 1) if setup.steps.step(k).op == "Mul")
    defendant = setup.party(_Asked, side="defendant")
    challenger = setup.party(Perturbing, side="challenger", at=mul)
    verdict = setup.settle(setup.honest, defendant, challenger)
    assert (verdict.winner, verdict.body["judgement"]["step"]) == ("defendant", mul)
    assert ["r"] in defendant.asked
    assert all(len(names) == len(set(names)) for names in defendant.asked)
    setup.node.close()


# ---------------------------------------------------------------------------------------------
# Final outputs, several outputs, no disagreement


def test_a_node_that_only_falsifies_its_final_output_loses(tmp_path: Path) -> None:
    model = light_model("squeezenet", seed=5)
    image = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with Node(tmp_path / "node", engine=FalsifyingEngine(share=1.0)) as node:
        node.hub.publish(model, repository="alice/sq", version="1", signer=_signer("alice"))
        lying = node.infer("alice/sq", {"data_0": image}, mode="optimistic")
        setup = Setup("sq", model, Steps(model), node, {"data_0": image}, lying,
                      _signer("referee"), _signer("carol"))  # fmt: skip
        defendant = setup.party(side="defendant", stands_by=lambda d, i: lying.outputs)
        verdict = setup.settle(lying, defendant, setup.party(side="challenger"))
    assert verdict.winner == "challenger"
    assert verdict.body["judgement"]["step"] == setup.steps.count  # the Softmax that writes it


def test_a_model_with_two_outputs(iris: Setup) -> None:
    steps = iris.steps
    assert len(steps.outputs) == 2  # label (int64) and probabilities (float32)
    for at in _positions(steps, count=steps.count):
        lying = _lying_answer(iris, at)
        verdict = iris.settle(lying, iris.party(Perturbing, side="defendant", at=at),
                              iris.party(side="challenger"))  # fmt: skip
        assert (verdict.winner, verdict.body["judgement"]["step"]) == ("challenger", at)
    label = {**iris.honest.outputs}
    name = next(n for n, v in label.items() if v.dtype.kind == "i")
    label[name] = label[name] + 1  # a false label, true probabilities
    lying = iris.answer(label)
    defendant = iris.party(side="defendant", stands_by=lambda d, i: label)
    assert iris.settle(lying, defendant, iris.party(side="challenger")).winner == "challenger"


def test_no_disagreement_no_dispute(squeezenet: Setup) -> None:
    verdict = squeezenet.settle(
        squeezenet.honest,
        squeezenet.party(side="defendant"),
        squeezenet.party(side="challenger"),
    )
    assert verdict.winner == "defendant"
    assert verdict.reason == "the challenger's final state is the receipt's"
    assert verdict.body["rounds"] == []


# ---------------------------------------------------------------------------------------------
# Different hardware: tolerance, and the per-operator bound


def _other_class(identity: str) -> str:
    """The identity of the same engine on a CPU of another kernel class than this one's."""
    runtime, own = identity.rsplit("/", 1)
    return f"{runtime}/{'avx512' if own == 'avx2' else 'avx2'}"


def test_honest_cross_class_sides_never_lose(squeezenet: Setup) -> None:
    other = _other_class(squeezenet.node.engine.identity)
    challenger = squeezenet.party(
        CrossClass, side="challenger", engine=other, stands_by=lambda d, i: _lying_outputs(
            squeezenet))  # fmt: skip
    verdict = squeezenet.settle(squeezenet.honest, squeezenet.party(side="defendant"), challenger)
    assert verdict.winner == "defendant"
    assert {r["basis"] for r in verdict.body["rounds"]} == {"tolerance"}


def test_across_classes_a_perturbation_above_the_bound_always_loses(squeezenet: Setup) -> None:
    other = _other_class(squeezenet.node.engine.identity)
    for at in _positions(squeezenet.steps, count=8):
        lying = _lying_answer(squeezenet, at, scale=1000.0)
        defendant = squeezenet.party(Perturbing, side="defendant", at=at, scale=1000.0)
        challenger = squeezenet.party(CrossClass, side="challenger", engine=other)
        verdict = squeezenet.settle(lying, defendant, challenger)
        assert (verdict.winner, verdict.body["judgement"]["step"]) == ("challenger", at)


@pytest.mark.parametrize("scale", [1.5, 4.0])
def test_at_the_last_step_just_above_the_bound_loses(squeezenet: Setup, scale: float) -> None:
    """The referee's judgement is the bound itself: 1.5 times the bound loses."""
    at = squeezenet.steps.count
    lying = _lying_answer(squeezenet, at, scale=scale)
    defendant = squeezenet.party(Perturbing, side="defendant", at=at, scale=scale)
    verdict = squeezenet.settle(lying, defendant, squeezenet.party(side="challenger"))
    assert verdict.winner == "challenger"
    judgement = verdict.body["judgement"]
    assert float(judgement["deviation"]) > float(judgement["bound"])


def test_within_the_bound_is_honest_noise(squeezenet: Setup) -> None:
    at = squeezenet.steps.count
    lying = _lying_answer(squeezenet, at, scale=0.5)
    defendant = squeezenet.party(Perturbing, side="defendant", at=at, scale=0.5)
    verdict = squeezenet.settle(lying, defendant, squeezenet.party(side="challenger"))
    assert verdict.winner == "defendant"


# ---------------------------------------------------------------------------------------------
# Deadlines, replays, windows


def test_a_side_that_stops_answering_loses_at_the_deadline(squeezenet: Setup) -> None:
    lying = _lying_answer(squeezenet, 20)
    silent = squeezenet.party(
        Silent, side="defendant", after=2, stands_by=lambda d, i: lying.outputs
    )
    verdict = squeezenet.settle(lying, silent, squeezenet.party(side="challenger"), deadline=1)
    assert verdict.winner == "challenger"
    assert "no answer within the 1 s deadline" in verdict.reason
    assert len(verdict.body["rounds"]) == 2
    quiet = squeezenet.party(Silent, side="challenger", after=0,
                             stands_by=lambda d, i: _lying_outputs(squeezenet))  # fmt: skip
    verdict = squeezenet.settle(squeezenet.honest, squeezenet.party(side="defendant"), quiet, 1)
    assert (verdict.winner, verdict.loser) == ("defendant", "challenger")


def test_when_both_sides_stop_answering_the_challenger_loses(squeezenet: Setup) -> None:
    lying = _lying_answer(squeezenet, 20)
    silent = squeezenet.party(Silent, side="defendant", after=0,
                              stands_by=lambda d, i: lying.outputs)  # fmt: skip
    quiet = squeezenet.party(Silent, side="challenger", after=0)
    verdict = squeezenet.settle(lying, silent, quiet, deadline=1)
    assert (verdict.winner, verdict.loser) == ("defendant", "challenger")


def test_replayed_and_re_signed_messages_are_refused(squeezenet: Setup) -> None:
    lying = _lying_answer(squeezenet, 30)
    first = squeezenet.settle(lying, squeezenet.party(Perturbing, side="defendant", at=30),
                              squeezenet.party(side="challenger"))  # fmt: skip
    opening = first.body["openings"]["defendant"]
    stands_by: Any = lambda d, i: lying.outputs  # noqa: E731

    def replaying(**recorded: Any) -> Any:
        return squeezenet.party(Replaying, side="defendant", stands_by=stands_by, **recorded)

    # an opening from another dispute of the same receipt
    verdict = squeezenet.settle(lying, replaying(openings=[opening]), squeezenet.party(
        side="challenger"))  # fmt: skip
    assert verdict.winner == "challenger"
    assert "belongs to another dispute" in verdict.reason
    # the same opening re-signed over this dispute, by another key
    mallory = _signer("mallory")
    text, _ = note.parse(opening)
    body = canonical.loads(text.removesuffix("\n").encode())

    class Resigning(LocalParty):
        def opening(self, dispute: Dispute, inputs: Mapping[str, np.ndarray]) -> str:
            return note.sign_json({**body, "dispute": dispute.id}, mallory).decode()

    verdict = squeezenet.settle(lying, squeezenet.party(Resigning, side="defendant"),
                                squeezenet.party(side="challenger"))  # fmt: skip
    assert verdict.winner == "challenger"
    assert "signed by: mallory" in verdict.reason
    # states replayed from the first dispute, whose trace was another: its proofs fail
    states = [r["defendant"] for r in first.body["rounds"]]
    verdict = squeezenet.settle(lying, replaying(states=states),
                                squeezenet.party(side="challenger"))  # fmt: skip
    assert verdict.winner == "challenger"
    assert "is not in the trace it signed" in verdict.reason


def test_only_optimistic_receipts_within_their_window_are_disputed(squeezenet: Setup) -> None:
    carol, referee = squeezenet.carol.vkey, squeezenet.referee.vkey
    bundle = squeezenet.honest.bundle
    assert bundle.receipt["mode"] == "optimistic:86400"
    Dispute.create(bundle, challenger=carol, referee=referee, opened=_opened(bundle, 86399))
    with pytest.raises(VerificationError, match=r"window of 86400 s .* has closed"):
        Dispute.create(bundle, challenger=carol, referee=referee, opened=_opened(bundle, 86401))
    attested = squeezenet.node.infer("alice/squeezenet", squeezenet.inputs)
    with pytest.raises(VerificationError, match="only optimistic answers are disputed"):
        Dispute.create(attested.bundle, challenger=carol, referee=referee)
    with pytest.raises(VerificationError, match="cannot challenge its own receipt"):
        Dispute.create(bundle, challenger=squeezenet.node.vkey, referee=referee)
    with pytest.raises(VerificationError, match="deadline"):
        Dispute.create(bundle, challenger=carol, referee=referee, deadline=0)
    for conflicted in (carol, squeezenet.node.vkey):
        with pytest.raises(VerificationError, match="referee cannot be one of the sides"):
            Dispute.create(bundle, challenger=carol, referee=conflicted)
    with pytest.raises(VerificationError, match="malformed dispute"):
        Dispute.from_header({**Dispute.create(bundle, challenger=carol, referee=referee).header,
                             "opened": "2026-13-01T00:00:00.000Z"})  # fmt: skip
    short = squeezenet.node.infer("alice/squeezenet", squeezenet.inputs, mode="optimistic:60")
    assert short.bundle.receipt["mode"] == "optimistic:60"
    with pytest.raises(VerificationError, match="window of 60 s"):
        Dispute.create(short.bundle, challenger=carol, referee=referee,
                       opened=_opened(short.bundle, 61))  # fmt: skip


def _opened(bundle: Any, after: float) -> float:
    from verinfer.modes.dispute import seconds_of  # noqa: PLC0415 - the receipt's clock

    return seconds_of(bundle.receipt["time"]) + after


def test_the_referee_refuses_inputs_and_models_that_are_not_the_receipts(squeezenet: Setup) -> None:
    dispute = Dispute.create(squeezenet.honest.bundle, challenger=squeezenet.carol.vkey,
                             referee=squeezenet.referee.vkey)  # fmt: skip
    sides = {"defendant": squeezenet.party(side="defendant"),
             "challenger": squeezenet.party(side="challenger")}  # fmt: skip
    other = {"data_0": squeezenet.inputs["data_0"] + 1}
    with pytest.raises(InputError, match="not the disputed receipt's: their digest"):
        settle(dispute, other, squeezenet.model, signer=squeezenet.referee, **sides)
    with pytest.raises(InputError, match="not the disputed receipt's model"):
        settle(dispute, squeezenet.inputs, b"other", signer=squeezenet.referee, **sides)
    with pytest.raises(InputError, match="another referee"):
        settle(dispute, squeezenet.inputs, squeezenet.model, signer=squeezenet.carol, **sides)


# ---------------------------------------------------------------------------------------------
# Verdicts offline


@pytest.fixture(scope="module")
def verdict(squeezenet: Setup) -> Verdict:
    lying = _lying_answer(squeezenet, 40)
    return squeezenet.settle(lying, squeezenet.party(Perturbing, side="defendant", at=40),
                             squeezenet.party(side="challenger"))  # fmt: skip


def _resealed(
    verdict: Verdict, change: Callable[[dict[str, Any]], None], signer: note.Signer
) -> bytes:
    body = json.loads(json.dumps(verdict.body))
    change(body)
    return Verdict.create(body, signer).data


def test_a_verdict_verifies_offline_and_names_the_loser(
    squeezenet: Setup, verdict: Verdict
) -> None:
    checked = verify_verdict(verdict.data, model=squeezenet.model)
    assert (checked.winner, checked.loser) == ("challenger", "defendant")
    assert checked.body["dispute"]["defendant"] == squeezenet.node.vkey
    with pytest.raises(VerificationError, match="not a trusted referee"):
        verify_verdict(verdict.data, model=squeezenet.model, referees=[squeezenet.carol.vkey])
    with pytest.raises(VerificationError, match="not the disputed receipt's model"):
        verify_verdict(verdict.data, model=light_model("squeezenet", seed=6))


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b: b.update(winner="defendant", loser="challenger"), "the record gives"),
        (lambda b: b.update(reason="the defendant lost"), "the record gives"),
        (
            lambda b: b["rounds"][0].update(agree=not b["rounds"][0]["agree"]),
            "rounds|record|judgement",
        ),
        (lambda b: b["rounds"].pop(), "rounds|record|judgement"),
        (
            lambda b: b["rounds"][1].update(defendant=b["rounds"][0]["defendant"]),
            "record|judgement",
        ),
        (
            lambda b: b["judgement"].update(written=b["judgement"]["written"][:-8] + "AAAAAAA="),
            "malformed|record|judgement",
        ),
        (
            lambda b: b["judgement"]["after"][0].__setitem__(1, "sha256:" + "0" * 64),
            "record|judgement",
        ),
        (
            lambda b: b["judgement"]["before"].append(["x", "sha256:" + "0" * 64]),
            "record|judgement",
        ),
        (lambda b: b.update(steps=b["steps"] + 1), "steps"),
        (
            lambda b: b["dispute"].update(opened="2020-01-01T00:00:00.000Z"),
            "dispute|record|judgement",
        ),
        (lambda b: b["dispute"].update(deadline_ms=5000), "record|another dispute|judgement"),
    ],
)
def test_a_changed_verdict_is_refused(
    squeezenet: Setup, verdict: Verdict, change: Callable[[dict[str, Any]], None], error: str
) -> None:
    resealed = _resealed(verdict, change, squeezenet.referee)  # even re-signed by the referee
    with pytest.raises(VerificationError, match=error):
        verify_verdict(resealed, model=squeezenet.model)


@pytest.mark.parametrize(
    ("change", "error"),
    [
        (lambda b: b.update(rounds=["x"]), "malformed verdict: round 'x'"),
        (lambda b: b.update(rounds=[{"step": [], "agree": True}]), "malformed verdict: round {"),
        (lambda b: b.update(judgement="x"), "malformed verdict: judgement"),
        (lambda b: b.update(openings={"defendant": 3}), "judgement is not what its reveal gives"),
        (lambda b: b["judgement"].update(step="x"), "judgement is not what its reveal gives"),
    ],
)
def test_a_malformed_verdict_is_refused_not_crashed_on(
    squeezenet: Setup, verdict: Verdict, change: Callable[[dict[str, Any]], None], error: str
) -> None:
    with pytest.raises(VerificationError, match=error):
        verify_verdict(_resealed(verdict, change, squeezenet.referee), model=squeezenet.model)


def test_a_verdict_with_a_broken_seal_is_refused(squeezenet: Setup, verdict: Verdict) -> None:
    document = json.loads(verdict.data)
    document["verdict"]["reason"] = "x"
    with pytest.raises(VerificationError, match="not the one its referee signed"):
        verify_verdict(canonical.dumps(document), model=squeezenet.model)
    with pytest.raises(VerificationError, match="malformed"):
        verify_verdict(verdict.data[: len(verdict.data) // 2], model=squeezenet.model)
    other = _resealed(verdict, lambda b: None, squeezenet.carol)
    with pytest.raises(VerificationError, match="names another referee"):
        verify_verdict(other, model=squeezenet.model)


def test_a_convicting_verdict_is_evidence_anyone_can_check(
    squeezenet: Setup, verdict: Verdict
) -> None:
    document = evidence.dispute(verdict)
    assert document is not None
    assert document["vkey"] == squeezenet.node.vkey
    proven = evidence.verify_evidence(json.dumps(document), model=squeezenet.model)
    assert "answered falsely: step 40" in proven
    with pytest.raises(VerificationError, match="needs the model"):
        evidence.verify_evidence(document)
    with pytest.raises(VerificationError, match="another node"):
        evidence.verify_evidence(
            {**document, "vkey": squeezenet.carol.vkey}, model=squeezenet.model
        )
    # a verdict the defendant won, or lost only on the referee's word, convicts nobody
    won = squeezenet.settle(squeezenet.honest, squeezenet.party(side="defendant"),
                            squeezenet.party(Perturbing, side="challenger", at=40))  # fmt: skip
    assert evidence.dispute(won) is None
    lying = _lying_answer(squeezenet, 20)
    silent = squeezenet.party(Silent, side="defendant", after=1,
                              stands_by=lambda d, i: lying.outputs)  # fmt: skip
    missed = squeezenet.settle(lying, silent, squeezenet.party(side="challenger"), deadline=1)
    assert missed.loser == "defendant"
    assert evidence.dispute(missed) is None
    forged = {**document, "verdict": won.data.decode()}
    with pytest.raises(VerificationError, match="does not convict"):
        evidence.verify_evidence(forged, model=squeezenet.model)


# -- a zero of the wrong sign is a lie, not a rounding (found by an adversarial review) -------


def _reciprocal_model(negate: bool = False) -> bytes:
    """y = Sigmoid(1 / (x * 0)): every zero is +0.0, so y is 1; a node that turns it into -0.0
    (here: a Neg the honest model does not have) answers 0."""
    nodes = [helper.make_node("Mul", ["x", "c"], ["m" if negate else "z"])]
    nodes += [helper.make_node("Neg", ["m"], ["z"])] if negate else []
    nodes += [helper.make_node("Reciprocal", ["z"], ["r"]),
              helper.make_node("Sigmoid", ["r"], ["y"])]  # fmt: skip
    graph = helper.make_graph(
        nodes, "zeros", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor("c", TensorProto.FLOAT, [4], [0.0] * 4)],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


class _NegativeZero(LocalParty):
    """A defendant whose state after the Mul holds -0.0 where the model computes +0.0."""

    def trace(self, dispute: Dispute, inputs: Mapping[str, np.ndarray] | None = None) -> Any:
        if dispute.id not in self._traces:
            steps = self.steps(dispute.receipt["model"])
            honest = steps.trace(inputs)
            lying = Steps(_reciprocal_model(negate=True)).trace(inputs)
            values = {name: value for name, value in lying.values.items() if name in honest.values}
            self._traces[dispute.id] = Trace(steps, values)
        return self._traces[dispute.id]


def test_a_zero_of_the_other_sign_loses_the_dispute(tmp_path: Path) -> None:
    inputs = {"x": np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)}
    made = _setup(tmp_path, "zeros", _reciprocal_model(), inputs)  # held: it owns the node
    setup = next(made)
    try:
        assert setup.honest.outputs["y"].tolist() == [[1.0] * 4]
        lie = Steps(_reciprocal_model(negate=True)).trace(inputs).values["y"]
        assert lie.tolist() == [[0.0] * 4]
        lying = setup.answer({"y": lie})
        verdict = setup.settle(lying, setup.party(_NegativeZero, side="defendant"),
                               setup.party(side="challenger"))  # fmt: skip
        assert verdict.winner == "challenger", verdict.reason
        assert verdict.body["judgement"]["step"] == 1
    finally:
        made.close()
