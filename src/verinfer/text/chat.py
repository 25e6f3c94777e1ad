"""Tokenizer and chat template of a published text model (its manifest's ``text`` section).

The chat template is the model's own Jinja template (from the GGUF file), rendered as Hugging
Face's ``apply_chat_template`` renders it: a sandboxed, immutable Jinja environment with
``trim_blocks`` and ``lstrip_blocks``, the ``messages``, ``add_generation_prompt`` and the
special tokens as variables. Special tokens in message text are split as text, not matched as
control tokens, so a user cannot forge a turn boundary.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from verinfer.errors import InputError

__all__ = ["Tokenizer", "render_chat"]

_ROLES = ("system", "user", "assistant")


def check_messages(messages: object) -> list[dict[str, str]]:
    """Chat messages as ``[{"role", "content"}]``; raise :class:`InputError` naming a bad one."""
    if not isinstance(messages, list) or not messages:
        raise InputError(f"messages must be a non-empty list, got {messages!r}")
    checked = []
    for index, message in enumerate(messages):
        if (
            not isinstance(message, Mapping)
            or message.get("role") not in _ROLES
            or not isinstance(message.get("content"), str)
        ):
            raise InputError(
                f"messages[{index}] must be {{role: system|user|assistant, content: text}}, "
                f"got {message!r}"
            )
        checked.append({"role": str(message["role"]), "content": str(message["content"])})
    return checked


@functools.cache
def _template(source: str) -> Any:
    from jinja2.exceptions import TemplateError  # noqa: PLC0415 - optional
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(source)


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, str]],
    special_tokens: Mapping[str, str],
    *,
    add_generation_prompt: bool = True,
) -> str:
    """The prompt text of ``messages`` under the model's chat template."""
    from jinja2.exceptions import TemplateError  # noqa: PLC0415

    try:
        return str(
            _template(template).render(
                messages=list(messages),
                add_generation_prompt=add_generation_prompt,
                bos_token=special_tokens.get("bos", ""),
                eos_token=special_tokens.get("eos", ""),
            )
        )
    except TemplateError as exc:
        raise InputError(f"the chat template refused these messages: {exc}") from exc


class Tokenizer:
    """A ``tokenizers`` tokenizer from its JSON bytes (the blob the manifest names)."""

    def __init__(self, data: bytes) -> None:
        from tokenizers import Tokenizer as _Tokenizer  # noqa: PLC0415 - optional

        try:
            self._tokenizer = _Tokenizer.from_str(data.decode())
        except Exception as exc:  # tokenizers raises its own Exception subclass
            raise InputError(f"malformed tokenizer: {exc}") from exc

    def token_id(self, token: str) -> int | None:
        """The ID of a token, or ``None``."""
        found = self._tokenizer.token_to_id(token)
        return None if found is None else int(found)

    def ends(self, special_tokens: Mapping[str, str]) -> tuple[int, ...]:
        """The IDs that end a turn, by a manifest's ``special_tokens`` (its ``eos``)."""
        found = self.token_id(special_tokens.get("eos", ""))
        return () if found is None else (found,)

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token IDs of ``text``; ``special``: control tokens written in it are matched (the
        rendered chat template's turn markers); else only ordinary text is produced."""
        if special:
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return list(self._tokenizer.encode_batch([text], add_special_tokens=False)[0].ids)

    def encode_chat(
        self, template: str, messages: Sequence[Mapping[str, str]], special: Mapping[str, str]
    ) -> list[int]:
        """The prompt's IDs: the rendered template, with each message's content tokenised as
        plain text (a ``<|im_end|>`` typed by a user is text, not a turn boundary)."""
        marker = "\x00verinfer-content-{}\x00"
        masked = [{"role": m["role"], "content": marker.format(i)} for i, m in enumerate(messages)]
        rendered = render_chat(template, masked, special)
        ids: list[int] = []
        rest = rendered
        for index, message in enumerate(messages):
            head, found, rest = rest.partition(marker.format(index))
            if not found:
                raise InputError("the chat template does not place every message's content")
            ids += self.encode(head)
            ids += self._plain(message["content"])
        return ids + self.encode(rest)

    def _plain(self, text: str) -> list[int]:
        """IDs of ``text`` with every special token in it read as ordinary characters."""
        specials = [t for t in self._tokenizer.get_added_tokens_decoder().values() if t.special]
        if not any(t.content in text for t in specials):
            return self.encode(text)
        # split around each special token's text and encode its characters one by one
        ids: list[int] = []
        pieces = [text]
        for token in specials:
            pieces = [p for piece in pieces for p in _split_keep(piece, token.content)]
        names = {t.content for t in specials}
        for piece in pieces:
            if piece in names:
                for char in piece:
                    ids += self.encode(char)
            else:
                ids += self.encode(piece)
        return ids

    def encode_padded(self, texts: Sequence[str]) -> tuple[list[list[int]], list[list[int]]]:
        """IDs and attention masks of a batch, as the tokenizer's own truncation, padding and
        post-processing (``[CLS]`` ... ``[SEP]``) make them."""
        encoded = self._tokenizer.encode_batch(list(texts))
        return [list(e.ids) for e in encoded], [list(e.attention_mask) for e in encoded]

    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``, control tokens left out."""
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=True))


def _split_keep(text: str, separator: str) -> list[str]:
    parts = text.split(separator)
    found: list[str] = []
    for index, part in enumerate(parts):
        if index:
            found.append(separator)
        if part:
            found.append(part)
    return found
