"""Session fixtures for the text-model tests: SmolLM2-135M-Instruct, converted once, published
once to one node served on loopback (conversion and publishing take seconds and memory)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import onnxruntime as ort
import openai
import pytest
import uvicorn
from text_support import TextNode, minilm_path, smollm_path

from verinfer import note
from verinfer.hub import Manifest
from verinfer.node import Node
from verinfer.node.app import create_app
from verinfer.text.bert import convert_sentence_transformer
from verinfer.text.gguf import Converted, convert_gguf


@pytest.fixture(scope="session")
def converted() -> Converted:
    return convert_gguf(smollm_path())


@pytest.fixture(scope="session")
def session(converted: Converted) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(converted.model, options, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def text_node(tmp_path_factory: pytest.TempPathFactory, converted: Converted) -> Iterator[TextNode]:
    alice = note.Signer(note.generate_key("alice")[0])
    with Node(tmp_path_factory.mktemp("text-node") / "node") as node:
        manifest = node.hub.publish(
            converted.model, repository="alice/smollm2", version="1", signer=alice,
            text=converted.text, tokenizer=converted.tokenizer,
        )  # fmt: skip
        config = uvicorn.Config(create_app(node), host="127.0.0.1", port=0, log_level="error")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            assert thread.is_alive(), "the server did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield TextNode(node, f"http://127.0.0.1:{port}", manifest, server, thread, alice)
        finally:
            server.should_exit = True
            thread.join(timeout=30)


@pytest.fixture
def openai_client(text_node: TextNode) -> Iterator[Callable[[str], openai.OpenAI]]:
    """The real ``openai`` client at a base path of the node (closed after the test)."""
    opened: list[openai.OpenAI] = []

    def at(path: str) -> openai.OpenAI:
        opened.append(openai.OpenAI(base_url=f"{text_node.url}{path}", api_key="unused"))
        return opened[-1]

    yield at
    for client in opened:
        client.close()


@pytest.fixture(scope="session")
def minilm() -> tuple[bytes, bytes, dict[str, object]]:
    return convert_sentence_transformer(minilm_path())


@pytest.fixture(scope="session")
def embedding_manifest(
    text_node: TextNode, minilm: tuple[bytes, bytes, dict[str, object]]
) -> Manifest:
    model, tokenizer, text = minilm
    return text_node.node.hub.publish(
        model, repository="alice/minilm", version="1", signer=text_node.publisher, text=text,
        tokenizer=tokenizer,
    )  # fmt: skip
