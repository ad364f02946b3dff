"""Chat templates: render a model's jinja template the way transformers does, plus fallbacks.

A template is untrusted code that came with a model file, so it runs in jinja2's immutable
sandbox with the same globals transformers provides (`raise_exception`, `strftime_now`,
a `tojson` that does not HTML-escape), with `trim_blocks` and `lstrip_blocks` on. Rendering the
same template with the same messages therefore gives the same text transformers'
`apply_chat_template(..., tokenize=False)` gives.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

# Gemma's turn format, for Gemma files that carry no template (the 270M base model). It is the
# format of Gemma's instruction-tuned template without its system-prompt folding: the assistant's
# role is spelled "model", every other role "user", and the prompt starts with <bos>.
GEMMA_FALLBACK_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% set role = 'model' if m['role'] == 'assistant' else 'user' %}"
    "<start_of_turn>{{ role }}\n{{ m['content'] | trim }}<end_of_turn>\n{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

# ChatML, for Llama-family files without a template (SmolLM2's own template is ChatML too).
CHATML_FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Plain "role: content" lines, for random-weight models whose byte tokenizer has no chat tokens.
PLAIN_FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

FALLBACK_TEMPLATES = {
    "gemma3": GEMMA_FALLBACK_TEMPLATE,
    "llama": CHATML_FALLBACK_TEMPLATE,
    "plain": PLAIN_FALLBACK_TEMPLATE,
}


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
            separators: tuple[str, str] | None = None, sort_keys: bool = False) -> str:
    # jinja's own tojson HTML-escapes, which would change the prompt text
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env.from_string(template)


def render_chat_template(template: str, messages: list[dict[str, Any]],
                         add_generation_prompt: bool = True, **special_tokens: Any) -> str:
    """Render `template` over `messages` (dicts with "role" and "content").

    special_tokens are passed as template variables (bos_token, eos_token, ...).
    Raises ValueError when a message is not a dict with string "role" and "content", and when the
    template itself raises (e.g. SmolLM2's template on a role it does not know).
    """
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ValueError(f"message {i} must be a dict with string 'role' and 'content', "
                             f"got {m!r}")
    try:
        return _compile(template).render(messages=messages,
                                         add_generation_prompt=add_generation_prompt,
                                         **special_tokens)
    except jinja2.exceptions.TemplateError as e:
        raise ValueError(f"chat template failed: {e}") from e
