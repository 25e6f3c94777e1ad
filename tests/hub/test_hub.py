"""The hub end to end through its SDK: publish real models, find, resolve, pull, verify."""

from __future__ import annotations

import threading
from pathlib import Path

import onnx
import pytest
from hub_models import LIGHT_MODELS, multi_io_model, sklearn_model, tiny_model

from verinfer import cid, engine, note
from verinfer.errors import ConflictError, InputError, NotFound
from verinfer.hub import Hub, Manifest, Sandbox, verify_history


def _check_manifest(manifest: Manifest, data: bytes, hub: Hub) -> None:
    model = onnx.load_from_string(data)
    initializers = {t.name for t in model.graph.initializer}
    body = manifest.body
    assert manifest.model == cid.compute(data)
    assert body["size"] == len(data)
    assert [i["name"] for i in body["inputs"]] == [
        i.name for i in model.graph.input if i.name not in initializers
    ]
    assert [o["name"] for o in body["outputs"]] == [o.name for o in model.graph.output]
    assert body["determinism"]["bit_identical"] is True
    assert body["determinism"]["engine"] == engine.identity()
    assert body["determinism"]["runs"] == 4
    assert body["operators"] == sorted(body["operators"])
    assert Manifest.from_bytes(hub.blobs.get(manifest.cid), manifest.cid) == manifest


@pytest.mark.parametrize("dataset", ["iris", "digits", "breast_cancer"])
def test_publish_scikit_learn_models(hub: Hub, alice: note.Signer, dataset: str) -> None:
    data = sklearn_model(dataset)
    name = f"alice/{dataset.replace('_', '-')}"
    manifest = hub.publish(
        data, repository=name, version="1.0.0", signer=alice, description=f"{dataset} model"
    )
    _check_manifest(manifest, data, hub)
    assert manifest.body["producer"].startswith("skl2onnx")
    assert manifest.body["inputs"][0]["shape"][0] is None  # a free batch dimension
    assert "ai.onnx.ml" in manifest.body["opsets"] or dataset == "digits"
    assert hub.resolve(name) == manifest
    assert hub.resolve(f"{name}@1.0.0") == manifest
    assert hub.resolve(f"{name}@latest") == manifest
    assert hub.resolve(manifest.cid) == manifest
    assert hub.resolve(manifest.model) == manifest


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=lambda p: p.stem.removeprefix("light_"))
def test_publish_real_architectures(hub: Hub, alice: note.Signer, path: Path) -> None:
    name = "alice/" + path.stem.removeprefix("light_").replace("_", "-")
    manifest = hub.publish(path, repository=name, version="1", signer=alice)
    _check_manifest(manifest, path.read_bytes(), hub)
    assert manifest.body["inputs"][0]["shape"][1:] == [3, 224, 224]
    assert "Conv" in manifest.body["operators"]


def test_publish_edge_case_signatures(hub: Hub, alice: note.Signer) -> None:
    data = multi_io_model()
    manifest = hub.publish(data, repository="alice/multi-io", version="0.1", signer=alice)
    _check_manifest(manifest, data, hub)
    assert manifest.body["inputs"] == [
        {"name": "x", "dtype": "float32", "shape": ["batch", 3]},
        {"name": "k", "dtype": "int64", "shape": [1, 3]},
    ]
    assert manifest.body["outputs"][1] == {
        "name": "positive",
        "dtype": "bool",
        "shape": ["batch", 3],
    }
    assert manifest.body["parameters"] == 1


def test_versions_are_immutable_and_latest_moves(
    hub: Hub, alice: note.Signer, tmp_path: Path
) -> None:
    first = hub.publish(
        tiny_model("Relu").SerializeToString(), repository="alice/t", version="1", signer=alice
    )
    second = hub.publish(
        tiny_model("Sigmoid").SerializeToString(), repository="alice/t", version="2", signer=alice
    )
    assert hub.resolve("alice/t") == second
    assert hub.resolve("alice/t@1") == first
    with pytest.raises(ConflictError, match=r"alice/t@1 is already published .* immutable"):
        hub.publish(
            tiny_model("Tanh").SerializeToString(), repository="alice/t", version="1", signer=alice
        )
    hub.tag("alice/t", "stable", "1", alice)
    assert hub.resolve("alice/t@stable") == first
    with pytest.raises(NotFound, match="no version '3'"):
        hub.tag("alice/t", "stable", "3", alice)
    with pytest.raises(NotFound, match=r"has no version or tag 'beta' \(known: 1, 2, latest"):
        hub.resolve("alice/t@beta")
    history = hub.history("alice/t")
    assert history.versions == {"1": first.cid, "2": second.cid}
    assert history.tags == {"latest": "2", "stable": "1"}
    assert len(history.changes) == 5
    # the state survives reopening, and is re-verified from the signed blobs
    hub.close()
    with Hub(hub.root) as again:
        assert again.resolve("alice/t@stable") == first
        assert again.verify() == []


def test_only_the_owner_key_may_publish_or_tag(
    hub: Hub, alice: note.Signer, mallory: note.Signer
) -> None:
    data = tiny_model().SerializeToString()
    hub.publish(data, repository="alice/t", version="1", signer=alice)
    with pytest.raises(ConflictError, match="owner 'alice' belongs to key"):
        hub.publish(data, repository="alice/t", version="2", signer=mallory)
    with pytest.raises(ConflictError, match="owner 'alice' belongs to key"):
        hub.publish(data, repository="alice/other", version="1", signer=mallory)
    with pytest.raises(InputError, match="only the owner's key"):
        hub.tag("alice/t", "latest", "1", mallory)
    bob = note.Signer(note.generate_key("bob")[0])
    with pytest.raises(InputError, match="signing key is named 'bob'"):
        hub.publish(data, repository="alice/t", version="2", signer=bob)
    assert hub.history("alice/t").versions.keys() == {"1"}


@pytest.mark.parametrize(
    ("repository", "version"),
    [("alice", "1"), ("Alice/x", "1"), ("alice/x/y", "1"), ("alice/x", ""), ("alice/x", "a b")],
)
def test_bad_names_are_refused(hub: Hub, alice: note.Signer, repository: str, version: str) -> None:
    with pytest.raises(InputError, match="malformed"):
        hub.publish(b"", repository=repository, version=version, signer=alice)
    assert list(hub.blobs) == []


def test_listing_and_search(hub: Hub, alice: note.Signer) -> None:
    bob = note.Signer(note.generate_key("bob")[0])
    hub.publish(
        tiny_model("Relu").SerializeToString(),
        repository="alice/relu",
        version="1",
        signer=alice,
        description="rectifier",
        tags=("activation",),
    )
    hub.publish(
        tiny_model("Sigmoid").SerializeToString(),
        repository="bob/sigmoid",
        version="1",
        signer=bob,
        description="logistic curve",
    )
    assert {m.repository for m in hub.models()} == {"alice/relu", "bob/sigmoid"}
    assert [m.repository for m in hub.models(owner="bob")] == ["bob/sigmoid"]
    assert [m.repository for m in hub.models(tag="activation")] == ["alice/relu"]
    assert [m.repository for m in hub.models(text="LOGISTIC")] == ["bob/sigmoid"]
    assert hub.models(text="nothing like it") == []
    assert hub.repositories() == ["alice/relu", "bob/sigmoid"]


def test_pull_copies_and_verifies_everything(
    tmp_path: Path, hub: Hub, alice: note.Signer, sandbox: Sandbox
) -> None:
    data = sklearn_model("iris")
    first = hub.publish(data, repository="alice/iris", version="1", signer=alice)
    with Hub(tmp_path / "mirror", sandbox=sandbox) as mirror:
        with pytest.raises(NotFound, match="no repository"):
            mirror.pull("alice/absent", hub)
        pulled = mirror.pull("alice/iris", hub)
        assert pulled == first
        assert mirror.pinned_owner("alice") == alice.vkey
        mirror.export("alice/iris@1", tmp_path / "iris.onnx")
        assert (tmp_path / "iris.onnx").read_bytes() == data
        # a newer version on the source extends the mirror's history
        second = hub.publish(
            tiny_model().SerializeToString(), repository="alice/iris", version="2", signer=alice
        )
        assert mirror.pull("alice/iris", hub) == second
        assert mirror.history("alice/iris").changes == hub.history("alice/iris").changes
        assert mirror.verify() == []


def test_pull_refuses_an_owner_key_other_than_the_trusted_one(
    tmp_path: Path, hub: Hub, alice: note.Signer, mallory: note.Signer, sandbox: Sandbox
) -> None:
    hub.publish(tiny_model().SerializeToString(), repository="alice/t", version="1", signer=alice)
    with Hub(tmp_path / "mirror", sandbox=sandbox) as mirror:
        with pytest.raises(Exception, match="not by the owner's key") as caught:
            mirror.pull("alice/t", hub, trusted_owner=mallory.vkey)
        assert type(caught.value).__name__ == "VerificationError"
        assert mirror.repositories() == []


def test_verify_reports_a_corrupt_model(hub: Hub, alice: note.Signer) -> None:
    manifest = hub.publish(
        tiny_model().SerializeToString(), repository="alice/t", version="1", signer=alice
    )
    path = hub.blobs.path(manifest.model)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    problems = hub.verify()
    assert [(p.subject, "is corrupt" in p.message) for p in problems] == [(manifest.model, True)]
    assert [p.subject for p in hub.verify("alice/t")] == [manifest.model]


def test_concurrent_publishes_never_fork_a_history(hub: Hub, alice: note.Signer) -> None:
    outcomes: dict[str, str] = {}

    def publish(version: str) -> None:
        try:
            hub.publish(
                tiny_model().SerializeToString(),
                repository="alice/race",
                version=version,
                signer=alice,
            )
            outcomes[version] = "published"
        except ConflictError:
            outcomes[version] = "conflict"

    threads = [threading.Thread(target=publish, args=(str(v),)) for v in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = verify_history("alice/race", hub.change_blobs("alice/race"))
    published = {v for v, outcome in outcomes.items() if outcome == "published"}
    assert published  # at least one wins
    assert set(history.versions) == published  # every acknowledged publish is in the history
