"""Chat templates with the `{% generation %}` markers that assistant-only loss needs.

TRL swaps in training templates only for the families it knows; SmolLM2's ChatML template is not
one of them, so ftpipe supplies ChatML with the markers for models that speak it.
"""

from __future__ import annotations

CHATML_WITH_GENERATION = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")


def speaks_chatml(template: str | None) -> bool:
    """Whether a model's own template is ChatML (so the marked ChatML template fits it)."""
    return bool(template) and all(marker in template for marker in CHATML_MARKERS)
