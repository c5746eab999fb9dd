"""Tiny model directories for the picture and web-page tests: a Chinese→English translation model
and (:func:`tiny_lm_model_dir`) a character-level GPT.

Each is built in well under a second: BPE tokenizers trained on a handful of sentences and a ``micro``
Transformer with seeded random weights, written exactly as training writes a model directory. The
weights are untrained (the tests check that pictures and pages show the model's own maps, not that
the model is good); the ``<eos>`` output embedding is zeroed so that greedy decoding never stops at
the first step and every translation is a visible, non-empty string.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import torch

from aiayn.data.tokenizers import EOS_ID, BPETokenizer, CharTokenizer
from aiayn.modeldir import save_model_dir
from aiayn.models.seq2seq import PRESETS, Transformer
from aiayn.tasks.translation import TranslationTask
from aiayn.training.checkpoint import WEIGHTS_FILE, save_weights

PAIRS = [
    ("我是一个学生", "I am a student"),
    ("我爱中国", "I love China"),
    ("他是一个老师", "He is a teacher"),
    ("她爱学生", "She loves students"),
    ("我们是学生", "We are students"),
]


LM_TEXT = "the cat sat on the mat; the dog sat on the log.\n"


def _temporary_directory(prefix: str) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    return directory


@functools.cache
def tiny_translation_model_dir() -> Path:
    """Path of the translation model directory (built once per process, removed at exit)."""
    directory = _temporary_directory("aiayn-tiny-translation-")
    src_tok = BPETokenizer.train([s for s, _ in PAIRS], vocab_size=64, min_frequency=1)
    tgt_tok = BPETokenizer.train([t for _, t in PAIRS], vocab_size=64, min_frequency=1)
    config = replace(
        PRESETS["micro"],
        src_vocab_size=src_tok.vocab_size,
        tgt_vocab_size=tgt_tok.vocab_size,
        num_heads=2,
        num_encoder_layers=2,
        num_decoder_layers=2,
        max_len=64,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    model = Transformer(config).eval()
    torch.random.set_rng_state(generator_state)
    with torch.no_grad():
        model.lm_head.weight[EOS_ID].zero_()  # tied to the target embedding: <eos> logit is 0
    task = TranslationTask(
        model,
        src_tok,
        tgt_tok,
        PAIRS,
        PAIRS,
        batch_tokens=256,
        label_smoothing=0.0,
        seed=0,
        device=torch.device("cpu"),
        max_len=config.max_len,
    )
    task.write_model_files(directory)
    save_weights(model, directory / WEIGHTS_FILE)
    return directory


@functools.cache
def tiny_lm_model_dir() -> Path:
    """Path of a character-level GPT's model directory (random weights; built once per process)."""
    from aiayn.models.gpt import GPT, GPTConfig

    directory = _temporary_directory("aiayn-tiny-lm-")
    tokenizer = CharTokenizer.train(LM_TEXT)
    config = GPTConfig(
        vocab_size=tokenizer.vocab_size,
        max_len=48,
        d_model=32,
        num_heads=2,
        d_ff=64,
        num_layers=2,
        dropout=0.0,
        attention_dropout=0.0,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(1234)
    model = GPT(config).eval()
    torch.random.set_rng_state(generator_state)
    save_model_dir(
        directory, "gpt", model, config, task="lm", tokenizers={"text": "tokenizer.json"}
    )
    tokenizer.save(directory, "tokenizer")
    return directory
