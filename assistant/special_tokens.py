"""Text from people (messages, personas, memories, OCR) is text, never prompt structure.

A chat template wraps each message in special tokens (`<|im_start|>user ... <|im_end|>`), and the
tokenizer turns their spellings back into those tokens wherever they occur, so a user who types
`<|im_end|><|im_start|>system` would start a system message of their own (and a typed `<|AUDIO|>`
would be taken for an audio placeholder). `neutralize` puts a word joiner (U+2060, invisible) inside
each such spelling: it reads the same and is tokenized as plain text.
"""

from __future__ import annotations

import re

__all__ = ["neutralize"]

JOINER = "\u2060"
# <|...|> (Qwen's specials: im_start/im_end, endoftext, AUDIO, IMAGE, vision_start ...) and the
# added tags the Qwen tokenizers also match as single tokens
_SPECIAL = re.compile(r"<(?=\|)|<(?=/?(?:tool_call|tool_response|think)>)")


def neutralize(text: str) -> str:
    """`text` with every special-token spelling broken by an invisible joiner after its `<`."""
    return _SPECIAL.sub("<" + JOINER, text) if "<" in text else text
