"""Real chat completions from a Hugging Face model: one base model in memory, LoRA adapters
switched per request (PEFT multi-adapter), full fine-tunes as engines of their own.

This module imports torch and transformers; it runs only inside the inference worker
(`python -m ftpipe.inference.worker`), never in the HTTP server's process.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("ftpipe.inference.engine")

DEFAULT_MAX_ADAPTERS = 4
DEFAULT_MAX_ENGINES = 2
_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


class InferenceProblem(Exception):
    """A request the engine refuses or cannot serve; `code` is the protocol's error code."""

    code = "inference_failed"


class ModelNotFound(InferenceProblem):
    code = "model_not_found"


class InvalidMessages(InferenceProblem):
    code = "invalid_request"


class ContextLengthExceeded(InferenceProblem):
    """The templated prompt (plus the requested completion) does not fit the model's context."""

    code = "context_length_exceeded"

    def __init__(self, prompt_tokens: int, context_length: int, max_tokens: int | None) -> None:
        self.prompt_tokens = prompt_tokens
        self.context_length = context_length
        self.max_tokens = max_tokens
        if max_tokens is not None and prompt_tokens < context_length:
            detail = (
                f"However, you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} in "
                f"the messages, {max_tokens} in the completion). Please reduce the length of the "
                "messages or completion."
            )
        else:
            detail = (
                f"However, your messages resulted in {prompt_tokens} tokens. Please reduce the "
                "length of the messages."
            )
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. {detail}"
        )


@dataclass
class Delta:
    """New text of choice `index`."""

    index: int
    text: str


@dataclass
class Choice:
    index: int
    text: str
    finish_reason: str  # "stop" | "length" | "cancelled"
    completion_tokens: int


@dataclass
class Completion:
    """The finished request: `prompt_tokens` is the templated prompt's length."""

    choices: list[Choice]
    prompt_tokens: int

    @property
    def completion_tokens(self) -> int:
        return sum(choice.completion_tokens for choice in self.choices)


def is_adapter_folder(path: Path) -> bool:
    return (path / "adapter_config.json").is_file()


def is_model_folder(path: Path) -> bool:
    return (path / "config.json").is_file()


def pick_device(device: str | None = None) -> tuple[torch.device, torch.dtype]:
    """CUDA in bf16 when present (fp16 on GPUs without bf16), else the CPU in fp32."""
    name = device or ("cuda" if torch.cuda.is_available() else "cpu")
    chosen = torch.device(name)
    if chosen.type == "cuda":
        return chosen, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return chosen, torch.float32


def _text_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Messages as the chat template expects them: plain text content; `developer` → system."""
    result = []
    for i, message in enumerate(messages):
        role = message.get("role")
        if not isinstance(role, str):
            raise InvalidMessages(f"messages[{i}] has no role.")
        content = message.get("content")
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if not (isinstance(part, dict) and part.get("type") == "text"):
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise InvalidMessages(
                        f"messages[{i}].content[{j}] is of type '{kind}'; this model reads text "
                        "only."
                    )
                parts.append(str(part.get("text", "")))
            text = "".join(parts)
        else:
            raise InvalidMessages(f"messages[{i}].content must be a string or a list of parts.")
        result.append({"role": "system" if role == "developer" else role, "content": text})
    return result


def _folder_mtime(folder: Path) -> int:
    """The newest modification time in a folder (not recursive): a rewritten adapter reloads."""
    return max((p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()), default=0)


def _sample(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator
) -> torch.Tensor:
    """One next token per row: greedy at temperature 0, else nucleus sampling."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1:
        ordered, order = probs.sort(dim=-1, descending=True)
        ordered = ordered.masked_fill(ordered.cumsum(dim=-1) - ordered > top_p, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, ordered)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters to hold back while streaming: an incomplete UTF-8 sequence,
    or the start of a stop string that the next tokens may complete."""
    hold = len(text) - len(text.rstrip("\ufffd"))
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                hold = max(hold, size)
                break
    return hold


@dataclass
class _Row:
    """One choice being generated."""

    tokens: list[int] = field(default_factory=list)
    emitted: str = ""
    finish: str | None = None


@dataclass
class _Adapter:
    name: str
    mtime: int
    tokenizer: Any


class Engine:
    """One model folder in memory, with up to `max_adapters` LoRA adapters on top (LRU)."""

    def __init__(
        self,
        folder: str | Path,
        *,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
        device: str | None = None,
    ) -> None:
        from transformers import AutoTokenizer

        self.folder = Path(folder).resolve()
        if not is_model_folder(self.folder):
            raise ModelNotFound(f"No model folder (config.json) at {self.folder}.")
        self.device, self.dtype = pick_device(device)
        self.max_adapters = max(1, max_adapters)
        self.tokenizer = AutoTokenizer.from_pretrained(self.folder)
        self.model = self._load_model()
        self.context_length = self._context_length()
        self._peft: Any = None
        self._cache: Any = None  # the KV cache of the request being served
        self._adapters: OrderedDict[str, _Adapter] = OrderedDict()
        self._counter = 0
        log.info("loaded %s on %s (%s)", self.folder, self.device, self.dtype)

    def _load_model(self) -> Any:
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(self.folder, dtype=self.dtype)
        return model.to(self.device).eval()

    def _context_length(self) -> int:
        config = self.model.config.get_text_config()
        for key in _CONTEXT_KEYS:
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        limit = getattr(self.tokenizer, "model_max_length", None)
        return limit if isinstance(limit, int) and 0 < limit < 10**8 else 2048

    # --- adapters -----------------------------------------------------------------------------

    @property
    def adapters(self) -> list[str]:
        """Folders of the adapters now in memory, least recently used first."""
        return list(self._adapters)

    def _adapter(self, folder: Path) -> _Adapter:
        """The adapter for `folder`, loaded now if it is not in memory (evicting the LRU one)."""
        from peft import PeftModel
        from transformers import AutoTokenizer

        key = str(folder.resolve())
        if not is_adapter_folder(folder):
            raise ModelNotFound(f"No LoRA adapter (adapter_config.json) at {folder}.")
        mtime = _folder_mtime(folder)
        known = self._adapters.get(key)
        if known is not None and known.mtime == mtime:
            self._adapters.move_to_end(key)
            return known
        if known is not None:
            self.unload(key)
        while len(self._adapters) >= self.max_adapters:
            self.unload(next(iter(self._adapters)))
        self._counter += 1
        name = f"adapter{self._counter}"
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(self.model, folder, adapter_name=name)
            else:
                self._peft.load_adapter(folder, adapter_name=name)
            self._peft.to(self.device).eval()
            tokenizer = self.tokenizer
            if (folder / "tokenizer_config.json").is_file():
                tokenizer = AutoTokenizer.from_pretrained(folder)
        except Exception as error:
            self._forget(name)
            raise InferenceProblem(
                f"Could not load the adapter at {folder} onto {self.folder}: "
                f"{type(error).__name__}: {error}"
            ) from error
        adapter = _Adapter(name=name, mtime=mtime, tokenizer=tokenizer)
        self._adapters[key] = adapter
        log.info("loaded adapter %s as %s on %s", key, name, self.folder)
        return adapter

    def _forget(self, name: str) -> None:
        """Undo a failed adapter load, so the next requests see the model as before."""
        if self._peft is None:  # PEFT may have injected layers into the model already
            self.model = self._load_model()
        elif name in self._peft.peft_config:
            self._peft.delete_adapter(name)

    def unload(self, folder: str | Path) -> bool:
        """Free one adapter's weights; False when it was not in memory."""
        adapter = self._adapters.pop(str(Path(folder).resolve()), None)
        if adapter is None:
            return False
        self._peft.delete_adapter(adapter.name)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("unloaded adapter %s from %s", folder, self.folder)
        return True

    def _select(self, adapter: Path | None) -> tuple[Any, contextlib.AbstractContextManager]:
        """The tokenizer to use and a context in which the model runs as asked."""
        if adapter is not None:
            chosen = self._adapter(adapter)
            self._peft.set_adapter(chosen.name)
            return chosen.tokenizer, contextlib.nullcontext()
        if self._peft is not None and self._adapters:
            return self.tokenizer, self._peft.disable_adapter()
        return self.tokenizer, contextlib.nullcontext()  # no adapter layers hold weights

    # --- generation ---------------------------------------------------------------------------

    def prompt_ids(self, messages: Sequence[dict[str, Any]], tokenizer: Any = None) -> list[int]:
        """The templated prompt (with the generation prompt) as token ids."""
        tokenizer = tokenizer or self.tokenizer
        if not getattr(tokenizer, "chat_template", None):
            raise InvalidMessages(f"The model at {self.folder} has no chat template.")
        text = tokenizer.apply_chat_template(
            _text_messages(messages), tokenize=False, add_generation_prompt=True
        )
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    def _stop_ids(self, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        for value in (
            tokenizer.eos_token_id,
            getattr(self.model.generation_config, "eos_token_id", None),
            self.model.config.get_text_config().eos_token_id,
        ):
            ids.update(value if isinstance(value, list) else [value] if value is not None else [])
        return ids

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        adapter: str | Path | None = None,
        **options: Any,
    ) -> Completion:
        """The whole completion at once (see `stream` for the options)."""
        result = None
        for item in self.stream(messages, adapter, **options):
            result = item
        assert isinstance(result, Completion)
        return result

    def stream(
        self,
        messages: Sequence[dict[str, Any]],
        adapter: str | Path | None = None,
        *,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int | None = None,
        n: int = 1,
        seed: int | None = None,
        stop: Sequence[str] = (),
        cancelled: Callable[[], bool] | None = None,
    ) -> Iterator[Delta | Completion]:
        """Deltas of text as they are produced, then the `Completion` as the last item.

        Completion tokens count every generated token, the end-of-turn token included, up to the
        one that completed a stop string; text never contains the stop string or special tokens.
        """
        tokenizer, mode = self._select(Path(adapter) if adapter is not None else None)
        prompt = self.prompt_ids(messages, tokenizer)
        size = len(prompt)
        if size >= self.context_length or (
            max_tokens is not None and size + max_tokens > self.context_length
        ):
            raise ContextLengthExceeded(size, self.context_length, max_tokens)
        budget = max_tokens if max_tokens is not None else self.context_length - size
        stops = [s for s in stop if s]
        stop_ids = self._stop_ids(tokenizer)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else random.getrandbits(63))
        rows = [_Row() for _ in range(n)]
        try:
            with torch.inference_mode(), mode:
                logits = self._first_logits(prompt, n)
                for _step in range(budget):
                    chosen = _sample(logits, temperature, top_p, generator).tolist()
                    for index, (row, token) in enumerate(zip(rows, chosen, strict=True)):
                        if row.finish is None:
                            delta = self._advance(row, token, tokenizer, stop_ids, stops)
                            if delta:
                                yield Delta(index, delta)
                    if all(row.finish for row in rows):
                        break
                    if cancelled is not None and cancelled():
                        for row in rows:
                            row.finish = row.finish or "cancelled"
                        break
                    logits = self._next_logits(chosen)
        finally:
            self._cache = None  # the KV cache of a finished (or failed) request is freed now
        for index, row in enumerate(rows):
            if row.finish is None:  # the budget ran out: flush what was held back
                row.finish = "length"
                text = tokenizer.decode(row.tokens, skip_special_tokens=True)
                rest = text[len(row.emitted) :]
                if rest:
                    row.emitted += rest
                    yield Delta(index, rest)
        yield Completion(
            choices=[
                Choice(i, row.emitted, row.finish or "length", len(row.tokens))
                for i, row in enumerate(rows)
            ],
            prompt_tokens=size,
        )

    def _advance(
        self, row: _Row, token: int, tokenizer: Any, stop_ids: set[int], stops: list[str]
    ) -> str:
        """Add one token to a choice; return the text that is now safe to send."""
        row.tokens.append(token)
        if token in stop_ids:
            row.finish = "stop"
            text = tokenizer.decode(row.tokens[:-1], skip_special_tokens=True)
            return self._emit(row, text, len(text))
        text = tokenizer.decode(row.tokens, skip_special_tokens=True)
        cut = min((p for p in (text.find(s) for s in stops) if p >= 0), default=-1)
        if cut >= 0:
            row.finish = "stop"
            return self._emit(row, text, cut)
        return self._emit(row, text, len(text) - _held_back(text, stops))

    @staticmethod
    def _emit(row: _Row, text: str, end: int) -> str:
        start = len(row.emitted)
        if end <= start:
            return ""
        delta = text[start:end]
        row.emitted += delta
        return delta

    def _forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=ids.to(self.device), cache=self._cache, use_cache=True, logits_to_keep=1
        )  # the cache (transformers 5's name for past_key_values) grows in place
        return out.logits[:, -1, :].float()

    def _first_logits(self, prompt: list[int], n: int) -> torch.Tensor:
        """Run the prompt once and repeat its cache for the `n` choices."""
        from transformers import DynamicCache

        self._cache = DynamicCache(config=self.model.config)
        logits = self._forward(torch.tensor([prompt], dtype=torch.long))
        if n > 1:
            self._cache.batch_repeat_interleave(n)
            logits = logits.repeat_interleave(n, dim=0)
        return logits

    def _next_logits(self, tokens: list[int]) -> torch.Tensor:
        return self._forward(torch.tensor(tokens, dtype=torch.long).unsqueeze(-1))

    def close(self) -> None:
        """Drop the model and adapters so their memory can be reclaimed."""
        self._peft = self.model = self._cache = None
        self._adapters.clear()
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


class Engines:
    """The worker's models: engines per model folder (LRU, `max_engines`), each with adapters."""

    def __init__(
        self,
        *,
        max_engines: int = DEFAULT_MAX_ENGINES,
        max_adapters: int = DEFAULT_MAX_ADAPTERS,
        device: str | None = None,
    ) -> None:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # bars of loading weights are noise in a worker's log
        self.max_engines = max(1, max_engines)
        self.max_adapters = max_adapters
        self.device = device
        self._engines: OrderedDict[str, Engine] = OrderedDict()

    def engine(self, folder: str | Path) -> Engine:
        """The engine of a model folder, loaded now if needed (evicting the LRU engine)."""
        path = Path(folder)
        if not is_model_folder(path):
            raise ModelNotFound(f"No model folder (config.json) at {path}.")
        key = str(path.resolve())
        if key in self._engines:
            self._engines.move_to_end(key)
            return self._engines[key]
        while len(self._engines) >= self.max_engines:
            self._engines.popitem(last=False)[1].close()
        engine = Engine(key, max_adapters=self.max_adapters, device=self.device)
        self._engines[key] = engine
        return engine

    def resolve(
        self, model_path: str | None, adapter_path: str | None
    ) -> tuple[Engine, Path | None, Path]:
        """The engine, the adapter folder (None for the model alone) and the folder that runs.

        An `adapter_path` holding a complete model (a full fine-tune) runs as its own engine.
        """
        if adapter_path is not None:
            folder = Path(adapter_path)
            if is_adapter_folder(folder):
                base = model_path or _adapter_base(folder)
                if base is None:
                    raise ModelNotFound(f"No base model folder given for the adapter at {folder}.")
                return self.engine(base), folder, folder
            if is_model_folder(folder):
                return self.engine(folder), None, folder
            raise ModelNotFound(f"No adapter or model at {folder}.")
        if model_path is None:
            raise ModelNotFound("No model folder given.")
        return self.engine(model_path), None, Path(model_path)

    def unload(self, model_path: str | None, adapter_path: str | None) -> bool:
        """Free an adapter, a full fine-tune or a base model; False when it was not loaded."""
        if adapter_path is not None and is_adapter_folder(Path(adapter_path)):
            return any([engine.unload(adapter_path) for engine in self._engines.values()])
        target = adapter_path or model_path
        if target is None:
            return False
        engine = self._engines.pop(str(Path(target).resolve()), None)
        if engine is None:
            return False
        engine.close()
        return True

    def describe(self) -> dict[str, Any]:
        return {folder: engine.adapters for folder, engine in self._engines.items()}


def _adapter_base(folder: Path) -> str | None:
    """The adapter's own base model, when it names an existing local folder."""
    try:
        config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    base = config.get("base_model_name_or_path")
    return base if isinstance(base, str) and is_model_folder(Path(base)) else None
