"""What a dishonest node could claim about a generation, and which check catches it: offline
(sampler replay, end checks, digests) or by re-execution (one teacher-forced pass)."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from text_support import TextNode, run_with

from verinfer.errors import VerificationError
from verinfer.modes.generation import TOLERANCE, reexecute, verify_generation
from verinfer.node.text import Finished, TextModels
from verinfer.text.chat import Tokenizer
from verinfer.text.generation import Decoder, Generation, empty_cache
from verinfer.text.gguf import Converted
from verinfer.text.sampler import Sampling

CACHE = empty_cache(30, 3, 64)


@pytest.fixture(scope="module")
def honest(text_node: TextNode) -> tuple[TextModels, Finished]:
    texts = TextModels(text_node.node)
    chat = texts.chat_model("alice/smollm2")
    prompt = texts.prompt(chat, messages=[{"role": "user", "content": "Tell me a story."}])
    events = list(texts.generate(chat, prompt, Sampling(temperature=1.0, seed=5, max_tokens=10)))
    finished = events[-1]
    assert isinstance(finished, Finished)
    return texts, finished


def _signed(texts: TextModels, finished: Finished, forged: Generation) -> Finished:
    """The same node signs (logs) a forged record: what a dishonest node can do."""
    return texts._log(finished.manifest, forged, "", None, "private")


def _check(text_node: TextNode, finished: Finished) -> None:
    tokenizer = Tokenizer(text_node.node.hub.blobs.get(text_node.manifest.text["tokenizer"]))  # type: ignore[index]
    verify_generation(
        finished.bundle, finished.generation, [text_node.node.vkey],
        ends=[tokenizer.token_id("<|im_end|>")], detokenize=tokenizer.decode,
        manifest=finished.manifest,
    )  # fmt: skip


def test_honest_generation_verifies_and_reexecutes(
    text_node: TextNode, honest: tuple[TextModels, Finished], session: ort.InferenceSession
) -> None:
    _, finished = honest
    _check(text_node, finished)
    deviation = reexecute(finished.generation, run_with(session), CACHE)
    assert deviation.ratio < 1
    assert finished.generation.commitment_bytes() <= 1024 * len(finished.generation.tokens) / 32


def test_a_record_changed_after_signing_fails_its_digest(
    text_node: TextNode, honest: tuple[TextModels, Finished]
) -> None:
    _, finished = honest
    tokens = list(finished.generation.tokens)
    tokens[2] = finished.generation.top_ids[2, 1]
    changed = dataclasses.replace(finished.generation, tokens=tuple(int(t) for t in tokens))
    with pytest.raises(VerificationError, match="step 5"):
        _check(text_node, dataclasses.replace(finished, generation=changed))


def test_a_replaced_token_fails_the_sampler_replay(
    text_node: TextNode, honest: tuple[TextModels, Finished]
) -> None:
    texts, finished = honest
    g = finished.generation
    position = next(  # a token that the committed candidates and the seed do not lead to
        i for i in range(len(g.tokens)) if int(g.top_ids[i, 3]) != g.tokens[i]
    )
    tokens = list(g.tokens)
    tokens[position] = int(g.top_ids[position, 3])
    forged = _signed(texts, finished, dataclasses.replace(g, tokens=tuple(tokens)))
    with pytest.raises(VerificationError, match=f"step G2 .* position {position}"):
        _check(text_node, forged)


def test_a_replaced_token_with_forged_commitments_fails_reexecution(
    text_node: TextNode, honest: tuple[TextModels, Finished], session: ort.InferenceSession
) -> None:
    texts, finished = honest
    g = finished.generation
    ids, values = g.top_ids.copy(), g.top_logits.copy()
    tokens = list(g.tokens)
    # the liar puts its token first with the top logit, so the sampler replay agrees with it
    ids[3] = np.roll(ids[3], -4)
    values[3] = np.sort(values[3])[::-1]
    tokens[3] = int(ids[3, 0])
    forged = dataclasses.replace(
        g, sampling=dataclasses.replace(g.sampling, temperature=0.0), tokens=tuple(tokens),
        top_ids=ids, top_logits=values,
    )  # fmt: skip
    signed = _signed(texts, finished, dataclasses.replace(forged, tokens=forged.tokens[:4],
                     top_ids=ids[:4], top_logits=values[:4], finish="stop"))  # fmt: skip
    with pytest.raises(VerificationError, match="re-execution"):
        reexecute(signed.generation, run_with(session), CACHE)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"seed": 6}, "step G2"),
        ({"temperature": 0.0}, "step G2"),
        ({"top_k": 1}, "step G2"),
    ],
)
def test_other_sampling_parameters_claimed_fail_the_replay(
    text_node: TextNode,
    honest: tuple[TextModels, Finished],
    change: dict,
    match: str,  # type: ignore[type-arg]
) -> None:
    texts, finished = honest
    g = finished.generation
    forged = _signed(
        texts, finished, dataclasses.replace(g, sampling=dataclasses.replace(g.sampling, **change))
    )
    with pytest.raises(VerificationError, match=match):
        _check(text_node, forged)


def test_a_truncated_output_fails_the_end_check(
    text_node: TextNode, honest: tuple[TextModels, Finished]
) -> None:
    texts, finished = honest
    g = finished.generation
    for finish in ("length", "stop"):
        cut = dataclasses.replace(
            g, tokens=g.tokens[:6], top_ids=g.top_ids[:6], top_logits=g.top_logits[:6],
            finish=finish,
        )  # fmt: skip
        with pytest.raises(VerificationError, match=r"step G3 .*cut short"):
            _check(text_node, _signed(texts, finished, cut))


def test_an_altered_prompt_fails_reexecution(
    honest: tuple[TextModels, Finished], session: ort.InferenceSession
) -> None:
    texts, finished = honest
    g = finished.generation
    prompt = list(g.prompt)
    prompt[-5] = texts.chat_model("alice/smollm2").tokenizer.encode(" poem")[0]
    with pytest.raises(VerificationError, match="re-execution"):
        reexecute(dataclasses.replace(g, prompt=tuple(prompt)), run_with(session), CACHE)


def test_weights_perturbed_in_one_layer_fail_reexecution(
    honest: tuple[TextModels, Finished], converted: Converted
) -> None:
    _, finished = honest
    model = onnx.load_from_string(converted.model)
    for tensor in model.graph.initializer:
        if tensor.name == "blk.20.down":  # one projection of one block, 1% noise
            weights = numpy_helper.to_array(tensor)
            noise = np.random.default_rng(0).standard_normal(weights.shape).astype(np.float32)
            tensor.CopyFrom(numpy_helper.from_array(weights + 0.01 * weights.std() * noise,
                                                    tensor.name))  # fmt: skip
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    other = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    del model
    with pytest.raises(VerificationError, match="re-execution"):
        reexecute(finished.generation, run_with(other), CACHE)


def test_no_false_positives_over_honest_generations(
    honest: tuple[TextModels, Finished], session: ort.InferenceSession, converted: Converted
) -> None:
    """A few honest cached decodes against one full pass each (the calibration script runs
    200, natively and under qemu: scripts/calibrate_generation.py)."""
    tokenizer = Tokenizer(converted.tokenizer)
    run = run_with(session)
    worst = 0.0
    for seed, question in enumerate(
        ["Name a color.", "What is 2+2?", "Hi!", "Why is the sky blue?"]
    ):
        prompt = tokenizer.encode_chat(
            converted.text["chat_template"], [{"role": "user", "content": question}],
            converted.text["special_tokens"],
        )  # fmt: skip
        decoder = Decoder(run, CACHE, prompt, Sampling(temperature=0.8, seed=seed, max_tokens=8),
                          ends=[2], detokenize=tokenizer.decode)  # fmt: skip
        list(decoder)
        assert decoder.generation is not None
        worst = max(worst, reexecute(decoder.generation, run, CACHE).ratio)
    assert worst < 1, f"an honest generation came within {worst:.2f} of the tolerance {TOLERANCE}"
