"""Chat templates with the `{% generation %}` markers that assistant-only loss needs.

TRL swaps in training templates only for the families it knows; SmolLM2's ChatML template is not
one of them, so ftpipe supplies ChatML with the markers for models that speak it.

Tool calling is rendered in the Hermes / Qwen2.5 ChatML convention, the one most open ChatML
models were tuned on: tool definitions as JSON lines inside `<tools></tools>` in the system turn,
each call as `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` in the assistant
turn, tool results as `<tool_response>\\n...\\n</tool_response>` in a user turn (consecutive
results share one). The same text is what `training.data` writes for templates that know no
tools, so a ChatML model sees the same bytes either way. Examples without tools render exactly
as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to help with the user's request. "
    "Their signatures are inside <tools></tools> tags:\n<tools>"
)
TOOLS_FOOTER = (
    "\n</tools>\n\nTo call a function, reply with a JSON object holding its name and arguments "
    'inside <tool_call></tool_call> tags:\n<tool_call>\n{"name": <function-name>, '
    '"arguments": <arguments-object>}\n</tool_call>'
)


def _literal(text: str) -> str:
    """A Python string as a single-quoted Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


_TOOLS_BLOCK = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\n' }}"
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- messages[0]['content'] + '\\n\\n' }}"
    "{%- endif %}"
    "{{- " + _literal(TOOLS_HEADER) + " }}"
    "{%- for tool in tools %}{{- '\\n' + (tool | tojson) }}{%- endfor %}"
    "{{- " + _literal(TOOLS_FOOTER) + " + '<|im_end|>\\n' }}"
    "{%- endif %}"
)
_ASSISTANT_TURN = (
    "{{- '<|im_start|>assistant\\n' }}"
    "{% generation %}{{- message['content'] }}"
    "{%- for call in (message['tool_calls'] or []) %}"
    "{%- if message['content'] or not loop.first %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_call>\\n{\"name\": \"' + call['function']['name'] + '\", \"arguments\": ' }}"
    "{%- if call['function']['arguments'] is string %}{{- call['function']['arguments'] }}"
    "{%- else %}{{- call['function']['arguments'] | tojson }}{%- endif %}"
    "{{- '}\\n</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
)
_TOOL_TURN = (
    "{%- if loop.first or loop.previtem['role'] != 'tool' %}{{- '<|im_start|>user\\n' }}"
    "{%- else %}{{- '\\n' }}{%- endif %}"
    "{{- '<tool_response>\\n' + message['content'] + '\\n</tool_response>' }}"
    "{%- if loop.last or loop.nextitem['role'] != 'tool' %}{{- '<|im_end|>\\n' }}{%- endif %}"
)
CHATML_WITH_GENERATION = (
    _TOOLS_BLOCK + "{%- for message in messages %}"
    "{%- if tools and loop.first and message['role'] == 'system' %}"
    "{%- elif message['role'] == 'assistant' %}" + _ASSISTANT_TURN + ""
    "{%- elif message['role'] == 'tool' %}" + _TOOL_TURN + ""
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
CHATML_MARKERS = ("<|im_start|>", "<|im_end|>")


def speaks_chatml(template: str | None) -> bool:
    """Whether a model's own template is ChatML (so the marked ChatML template fits it)."""
    return bool(template) and all(marker in template for marker in CHATML_MARKERS)


def example_tools(example: Mapping[str, Any]) -> list[dict[str, Any]]:
    """An example's function definitions in the `tools` form, the legacy `functions` wrapped,
    so counting and rendering see one shape; malformed entries are left out (checked elsewhere)."""
    tools = example.get("tools")
    functions = example.get("functions")
    found = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    if isinstance(functions, list):
        found += [{"type": "function", "function": f} for f in functions if isinstance(f, dict)]
    return found


def tools_text(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tool definitions block as the tool-aware ChatML template writes it."""
    lines = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    return TOOLS_HEADER + lines + TOOLS_FOOTER


def tool_call_text(name: str, arguments: Any) -> str:
    """One call as the tool-aware ChatML template writes it (arguments as a JSON object)."""
    text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    return f'<tool_call>\n{{"name": "{name}", "arguments": {text}}}\n</tool_call>'


def tool_response_text(content: str) -> str:
    """One tool result as the tool-aware ChatML template writes it."""
    return f"<tool_response>\n{content}\n</tool_response>"
