"""Measure ``replicated:K`` for generations across real CPU kernel classes: honest cached
decodes of SmolLM2-135M-Instruct on one class, decoded again on another, judged by the rule
of PROTOCOL.md §16 (identical tokens, commitments within twice the generation tolerance).

    python scripts/replicated_generation.py --save-model /tmp/smollm2.onnx --write here.jsonl
    qemu-x86_64 -cpu Haswell $(which python) scripts/replicated_generation.py \\
        --model /tmp/smollm2.onnx --against here.jsonl

Prints, for the second run, how many pairs agree, the refusals (with the token where they
part), and the largest difference between two commitments of one logit as a share of the
bound the rule allows there.

The commitments here are made by the definition (a stable sort: highest first, ties to the
lower ID), not by ``verinfer.text.sampler.commit``'s numpy partitions: under qemu 7.2's
``-cpu Haswell``, numpy's AVX2 arg-partition and arg-sort kernels (which gather) return a
wrong top 8 for about a quarter of random 49,152-float vectors (``np.partition`` and the
stable sort do not), which made honest decodes disagree at tokens whose logits were equal to
the last bit; measured with this script before the change (3 of 6 refused).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort

from verinfer.engine import identity
from verinfer.errors import VerificationError
from verinfer.modes.generation import TOLERANCE
from verinfer.modes.replicated import generations_agree
from verinfer.text import bundled
from verinfer.text import generation as generation_module
from verinfer.text.chat import Tokenizer
from verinfer.text.generation import Decoder, Generation, empty_cache
from verinfer.text.gguf import Converted, convert_gguf
from verinfer.text.sampler import TOP, Sampling

QUESTIONS = ["What is the capital of France?", "Tell me a story.", "Write one sentence about "
             "the sea.", "Why do people like music?", "Describe a cat in three words.",
             "What is 12 times 7?"]  # fmt: skip


def _exact_commit(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The committed candidates by their definition, with a stable sort."""
    ids = np.argsort(-logits, kind="stable")[:TOP]
    return ids.astype(np.uint16), logits[ids].astype(np.float16)


def _worst_share(one: Generation, other: Generation) -> float:
    """The largest |a - b| over the rule's bound, over the logits both commit."""
    worst = 0.0
    for row in range(len(one.tokens)):
        mine = dict(zip(one.top_ids[row].tolist(), one.top_logits[row].astype(float), strict=True))
        for token, value in zip(other.top_ids[row].tolist(), other.top_logits[row].astype(float),
                                strict=True):  # fmt: skip
            if token in mine:
                a, b = mine[token], value
                truth = (max(abs(a), abs(b)) + TOLERANCE.absolute) / (1 - TOLERANCE.relative)
                bound = 2 * (TOLERANCE.absolute + TOLERANCE.relative * truth)
                worst = max(worst, abs(a - b) / bound)
    return worst


Run = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


def _runner(model: bytes) -> Run:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, feed), strict=True))

    return run


def _cases(converted: Converted, tokens: int) -> list[Generation]:
    """The requests: each question, greedy or at temperature 0.8 (prompt and sampling only)."""
    tokenizer, text = Tokenizer(converted.tokenizer), converted.text
    cases = []
    for index, question in enumerate(QUESTIONS):
        messages = [{"role": "user", "content": question}]
        prompt = tokenizer.encode_chat(text["chat_template"], messages, text["special_tokens"])
        sampling = Sampling(temperature=0.8 * (index % 2), seed=index, max_tokens=tokens)
        empty = np.zeros((0, 8))
        cases.append(Generation(tuple(prompt), sampling, (), empty, empty, "length"))
    return cases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tokens", type=int, default=8)
    parser.add_argument("--write", type=Path, help="write this run's generations (JSON lines)")
    parser.add_argument("--against", type=Path, help="judge this run's against those")
    parser.add_argument("--save-model", type=Path, help="also write the converted model here")
    parser.add_argument("--model", type=Path, help="the converted model (no conversion here)")
    args = parser.parse_args()
    generation_module.commit = _exact_commit  # see the module docstring
    if args.against:  # decode the same requests here and judge them
        earlier = [json.loads(line) for line in args.against.read_text().splitlines()]
        tokenizer = Tokenizer(bytes.fromhex(earlier[0]["tokenizer"]))
        eos = earlier[0]["eos"]
        cases = [Generation.from_json(e["generation"]) for e in earlier]
        run = _runner(args.model.read_bytes())
    else:
        converted = convert_gguf(bundled.smollm2())
        if args.save_model:
            args.save_model.write_bytes(converted.model)
        tokenizer = Tokenizer(converted.tokenizer)
        eos = tokenizer.token_id(converted.text["special_tokens"]["eos"])
        cases = _cases(converted, args.tokens)
        run = _runner(converted.model)
    produced, agreed, worst = [], 0, 0.0
    for case in cases:
        decoder = Decoder(run, empty_cache(30, 3, 64), case.prompt, case.sampling,
                          ends=[eos], detokenize=tokenizer.decode)  # fmt: skip
        for _ in decoder:
            pass
        assert decoder.generation is not None
        produced.append(decoder.generation)
        if args.against:
            try:
                generations_agree(case.outputs(), decoder.generation.outputs())
            except VerificationError as exc:
                print(f"refused: {exc}")
                continue
            agreed += 1
            worst = max(worst, _worst_share(case, decoder.generation))
    print(f"engine {identity()}: {len(produced)} generations of up to {args.tokens} tokens")
    if args.write:
        lines = [{"generation": g.to_json(), "tokenizer": converted.tokenizer.hex(), "eos": eos}
                 for g in produced]  # fmt: skip
        args.write.write_text("".join(json.dumps(line) + "\n" for line in lines))
        return 0
    print(f"{agreed} of {len(cases)} agree with the other class's; largest commitment "
          f"difference {worst:.3f} of the allowed bound")  # fmt: skip
    return 0 if agreed == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
