"""``verinfer model import``, ``chat`` and ``embed`` as a user runs them: real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from text_support import TextNode, minilm_path

from verinfer.hub import Manifest

VERINFER = [sys.executable, "-c", "from verinfer.cli import main; main()"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*VERINFER, *args], check=False, capture_output=True, text=True, timeout=300
    )


def test_chat_streams_the_answer_and_verifies_it(text_node: TextNode, tmp_path: Path) -> None:
    bundle = tmp_path / "answer.json"
    result = run("chat", "alice/smollm2", "What is the capital of France?", "--node",
                 text_node.url, "--max-tokens", "12", "--bundle", str(bundle))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
    assert "verified: 8 tokens" in result.stderr
    # offline, from the file, without the model
    tokenizer = tmp_path / "tokenizer.json"
    tokenizer.write_bytes(text_node.node.hub.blobs.get(text_node.manifest.text["tokenizer"]))  # type: ignore[index]
    offline = run("verify-generation", str(bundle), "--node-key", text_node.node.vkey,
                  "--tokenizer", str(tokenizer), "--eos", "2")  # fmt: skip
    assert offline.returncode == 0, offline.stderr
    assert "G2. replaying the sampler" in offline.stdout
    assert "verified 8 generated tokens: 'The capital of France is Paris.'" in offline.stdout
    answer = json.loads(bundle.read_text())
    answer["generation"]["tokens"] = answer["generation"]["tokens"][:-1]
    answer["generation"]["top_ids"] = answer["generation"]["top_ids"][:-1]
    answer["generation"]["top_logits"] = answer["generation"]["top_logits"][:-1]
    bundle.write_text(json.dumps(answer))
    cut = run("verify-generation", str(bundle), "--node-key", text_node.node.vkey)
    assert cut.returncode == 1
    assert "step 5 (outputs)" in cut.stderr


def test_chat_with_a_bad_parameter_fails_with_the_reason(text_node: TextNode) -> None:
    result = run("chat", "alice/smollm2", "hi", "--node", text_node.url, "--temperature", "9")
    assert result.returncode == 1
    assert "temperature must be in [0, 2]" in result.stderr


def test_embed_prints_similarities_and_verifies(
    text_node: TextNode, embedding_manifest: Manifest
) -> None:
    result = run("embed", "alice/minilm", "a cat", "a kitten", "tax law", "--node", text_node.url)
    assert result.returncode == 0, result.stderr
    rows = [line.split()[:3] for line in result.stdout.splitlines()]
    assert float(rows[0][1]) > float(rows[0][2])  # cat ~ kitten, not tax law
    assert "verified: 3 × 384 embeddings" in result.stderr


def test_model_import_publishes_a_text_model(tmp_path: Path) -> None:
    assert run("key", "generate", "--name", "bob").returncode == 0
    hub = tmp_path / "hub"
    result = run("model", "import", str(minilm_path()), "--name", "bob/minilm", "--version", "1",
                 "--hub", str(hub))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "imported bob/minilm@1 (embedding)" in result.stdout
    refused = run("model", "import", str(tmp_path), "--name", "bob/x", "--version", "1",
                  "--hub", str(hub))  # fmt: skip
    assert refused.returncode == 1
    assert "lacks" in refused.stderr
