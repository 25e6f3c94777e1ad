"""Text models: import (GGUF, sentence embeddings), tokenizer and chat template, the sampler,
and the generation record a receipt binds. Needs the ``text`` extra (gguf, tokenizers,
jinja2, safetensors)."""
