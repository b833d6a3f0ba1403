"""A tiny random Llama with a byte-level BPE trained on the fixture text, built in code.

It trains in seconds on a CPU and needs nothing from a hub: the plumbing tests of real training
and inference use it (loss falls, events, checkpoints, adapters); learning itself is proven on
SmolLM2 in the slow test.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ftpipe.training.templates import CHATML_WITH_GENERATION

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_TEXTS = (
    "system user assistant You are a helpful assistant.",
    "What is the code word number 1? The code word number 1 is word-1.",
    "Classify the sentiment: positive negative neutral",
    "The ferry leaves at nine. Bicycles are allowed. Dogs travel free.",
)


def build_tiny_model(folder: Path, texts: Iterable[str] = DEFAULT_TEXTS, seed: int = 0) -> Path:
    """Save a tokenizer and a random 2-layer Llama (hidden size 64) to `folder`."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(texts) * 4, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML_WITH_GENERATION
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=512,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
