"""``verinfer model import``, ``chat`` and ``embed``: text models, from file to verified answer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from verinfer import keys
from verinfer.cli._app import HubOption, KeyOption, _hub, _read_file, app, err, out
from verinfer.cli.models import model_app
from verinfer.client import ChatResult, Client, Network
from verinfer.errors import InputError
from verinfer.verify import replicas_of

NodeUrl = Annotated[str, typer.Option("--node", help="the node's URL")]


@model_app.command("import")
def model_import(  # noqa: PLR0917 - a typer command: its options
    file: Annotated[
        Path,
        typer.Argument(help="a .gguf file, or a sentence-transformers zip or folder", exists=True),
    ],
    name: Annotated[str, typer.Option(help="repository owner/name; owner = your key's name")],
    version: Annotated[str, typer.Option(help="version string, e.g. 1.0.0")],
    description: Annotated[str, typer.Option(help="what the model does")] = "",
    license: Annotated[str, typer.Option(help="license identifier, e.g. Apache-2.0")] = "",
    key: KeyOption = keys.DEFAULT,
    hub: HubOption = None,
) -> None:
    """Convert a text model to ONNX (deterministically) and publish it with its text section:
    tokenizer, chat template or pooling, source file CID, converter version."""
    signer = keys.load(key)
    if file.suffix == ".gguf":
        from verinfer.text.gguf import convert_gguf  # noqa: PLC0415 - the text extra

        converted = convert_gguf(file)
        model, tokenizer, text = converted.model, converted.tokenizer, converted.text
    elif file.is_dir() or file.suffix == ".zip":
        from verinfer.text.bert import convert_sentence_transformer  # noqa: PLC0415

        model, tokenizer, text = convert_sentence_transformer(file)
    else:
        raise InputError(f"{str(file)!r} is neither a .gguf file nor a sentence-transformers "
                         "zip or folder")  # fmt: skip
    with _hub(hub) as store:
        manifest = store.publish(
            model, repository=name, version=version, signer=signer, description=description,
            license=license, text=text, tokenizer=tokenizer,
        )  # fmt: skip
    out.print(f"imported {manifest.repository}@{manifest.version} ({text['kind']})")
    out.print(f"model     {manifest.model}")
    out.print(f"manifest  {manifest.cid}")
    out.print(f"source    {text['source']}")


@app.command()
def chat(  # noqa: PLR0917 - a typer command: its options
    model: Annotated[str, typer.Argument(help="owner/name[@version|tag] of a chat model")],
    question: Annotated[str, typer.Argument(help="the user's message")],
    node: Annotated[str | None, typer.Option("--node", help="the node's URL")] = None,
    network: Annotated[
        Path | None, typer.Option(help="a network.json: any of its nodes answers, or K agree")
    ] = None,
    mode: Annotated[
        str, typer.Option(help="attested, or replicated:K (K nodes of --network must agree)")
    ] = "attested",
    system: Annotated[str | None, typer.Option(help="a system message")] = None,
    temperature: Annotated[float, typer.Option(help="0 for greedy")] = 0.0,
    max_tokens: Annotated[int, typer.Option(help="most tokens to generate")] = 128,
    seed: Annotated[int | None, typer.Option(help="the sampler's seed")] = None,
    bundle: Annotated[Path | None, typer.Option(help="write the bundle and record here")] = None,
) -> None:
    """Ask a chat model on a node; the answer streams to the terminal and is verified at the
    end (signature, inclusion, the record's digests, the sampler replayed, the prompt). On a
    --network, with --mode replicated:K, K nodes answer and must agree (printed once judged)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": question}
    ]
    if (node is None) == (network is None):
        raise InputError("give --node URL or --network FILE (one of them)")
    result: ChatResult | None = None
    if network is not None:
        with Network(network) as nodes:
            result = nodes.chat(model, messages, mode=mode, temperature=temperature,
                                max_tokens=max_tokens, seed=seed)  # fmt: skip
        out.print(result.text, highlight=False, markup=False)
    else:
        if replicas_of(mode) > 1:
            raise InputError(f"mode {mode!r} asks several nodes: give --network")
        with Client(str(node)) as client:
            try:
                for piece in client.chat_stream(model, messages, temperature=temperature,
                                                max_tokens=max_tokens, seed=seed):  # fmt: skip
                    if isinstance(piece, ChatResult):
                        result = piece
                    else:
                        out.print(piece, end="", highlight=False, markup=False)
            finally:
                out.print()  # the error, if any, says whether the text above is verified
    if result is None:  # pragma: no cover - chat_stream ends with the result or raises
        raise InputError("no answer")
    receipt = result.bundle.receipt
    agreed = f", {len(result.bundle.replicas) + 1} nodes agree" if result.bundle.replicas else ""
    err.print(
        f"verified: {len(result.generation.tokens)} tokens, entry {result.bundle.index} of "
        f"{receipt['log']}, model {receipt['model']}, seed {result.generation.sampling.seed}"
        f"{agreed}"
    )
    if bundle is not None:
        bundle.write_text(json.dumps({"bundle": result.bundle.to_dict(),
                                      "generation": result.generation.to_json()}))  # fmt: skip


@app.command()
def embed(
    model: Annotated[str, typer.Argument(help="owner/name[@version|tag] of an embedding model")],
    texts: Annotated[list[str], typer.Argument(help="the texts to embed")],
    node: NodeUrl,
    output: Annotated[Path | None, typer.Option("--out", help="write the vectors (JSON)")] = None,
) -> None:
    """Embed texts on a node, verified; print their pairwise cosine similarities."""
    with Client(node) as client:
        result = client.embed(model, texts)
    vectors = result.embeddings
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    similarity = (vectors / norms) @ (vectors / norms).T
    for i, text in enumerate(texts):
        row = " ".join(f"{similarity[i, j]:6.3f}" for j in range(len(texts)))
        out.print(f"{row}  {text}")
    err.print(f"verified: {vectors.shape[0]} × {vectors.shape[1]} embeddings, entry "
              f"{result.bundle.index} of {result.bundle.receipt['log']}")  # fmt: skip
    if output is not None:
        output.write_text(json.dumps({"embeddings": vectors.tolist(),
                                      "bundle": result.bundle.to_dict()}))  # fmt: skip


@app.command("verify-generation")
def verify_generation_command(  # noqa: PLR0917 - a typer command: its options
    answer: Annotated[
        Path,
        typer.Argument(
            help="a chat answer file (verinfer chat --bundle)", exists=True, dir_okay=False
        ),
    ],
    node_key: Annotated[list[str], typer.Option("--node-key", help="a trusted node vkey")],
    tokenizer: Annotated[
        Path | None,
        typer.Option(
            help="the model's tokenizer blob, with --eos: check where the generation ended "
            "offline (--node fetches both by the receipt's manifest instead)"
        ),
    ] = None,
    eos: Annotated[
        list[int] | None, typer.Option(help="with --tokenizer: an end-of-turn ID (repeatable)")
    ] = None,
    reexecute: Annotated[
        bool,
        typer.Option(
            "--reexecute",
            help="also run the model here in one teacher-forced pass and compare it with the "
            "committed logits within the tolerance (needs --model or --node)",
        ),
    ] = False,
    model: Annotated[
        Path | None,
        typer.Option(help="the model's bytes (.onnx), checked against the receipt's CID"),
    ] = None,
    node: Annotated[
        str | None,
        typer.Option(
            help="fetch the receipt's manifest and tokenizer (and, with --reexecute, its model) "
            "by CID from this node, each hash-checked"
        ),
    ] = None,
) -> None:
    """Verify a generation: the bundle's signature and inclusion, the record's digests, the
    sampler replayed on the committed logits, and where it ended (needs the tokenizer: --node,
    or --tokenizer with --eos); with --reexecute, the model's one teacher-forced pass within
    the tolerance (step 6)."""
    from verinfer.modes.generation import verify_generation  # noqa: PLC0415 - the text extra
    from verinfer.text.chat import Tokenizer  # noqa: PLC0415
    from verinfer.text.generation import Generation  # noqa: PLC0415
    from verinfer.verify import Bundle  # noqa: PLC0415

    try:
        body = json.loads(answer.read_text())
        bundle, generation = Bundle.from_json(body["bundle"]), Generation.from_json(
            body["generation"])  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{str(answer)!r} is not a chat answer file: {exc}") from exc
    if model is not None and not reexecute:
        raise InputError("--model gives the model to --reexecute: add --reexecute")
    if (tokenizer is None) != (not eos):
        raise InputError("--tokenizer and --eos go together: the end of a turn is a token")
    if model is not None and node is not None:
        raise InputError("give the model either as --model FILE or from --node URL, not both")
    if reexecute and model is None and node is None:
        raise InputError("--reexecute needs the model: --model FILE or --node URL")
    model_bytes = _read_file(model, "model") if model is not None else None
    manifest, ends, decode = None, list(eos or ()) or None, None
    if tokenizer is not None:
        decode = Tokenizer(_read_file(tokenizer, "tokenizer")).decode
    if node is not None:  # the receipt's manifest, its tokenizer and ends: all by CID
        with Client(node) as client:
            if reexecute and model is None:
                model_bytes = client.blob(str(bundle.receipt["model"]))  # checked by its CID
            if bundle.receipt["manifest"] is not None and decode is None:
                manifest = client.manifest(str(bundle.receipt["manifest"]))
                section = manifest.text or {}
                words = Tokenizer(client.blob(str(section.get("tokenizer"))))
                ends, decode = list(words.ends(section.get("special_tokens") or {})), words.decode
    verify_generation(
        bundle, generation, node_key, ends=ends, detokenize=decode, manifest=manifest,
        model=model_bytes, reexecute=reexecute,
        report=lambda line: out.print(f"  [green]✓[/] {line}", highlight=False),
    )  # fmt: skip
    text = f": {decode(generation.tokens)!r}" if decode else ""
    out.print(f"[green]verified[/] {len(generation.tokens)} generated tokens{text}")
