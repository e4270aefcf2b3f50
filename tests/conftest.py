"""Shared test fixtures: tiny random-init models and tokenizers built from configs, no network.

Session-scoped builders save each tiny model once to a temp directory; tests load it from the
path (a fresh, independent copy every time) exactly as they would a real checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

_CORPUS = [
    "Is this review positive or negative? A wonderful, moving film. Answer: positive",
    "Premise: the cat sat on the mat. Hypothesis: an animal sat. Does the premise entail it? yes",
    "Question: which technology came last? Options: radio, phone. Answer: phone",
    "Write a sentence with the words field, look, stand. The player stood looking at the field.",
    "the quick brown fox jumps over the lazy dog 0123456789 ? ! . , : ; ' \" ( ) [ ] - _",
]


def _byte_bpe_tokenizer(vocab_size: int = 400):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def _wordpiece_tokenizer():
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train_from_iterator(
        _CORPUS * 20,
        trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials, show_progress=False),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    from tokenizers import decoders

    tok.decoder = decoders.WordPiece()
    return BertTokenizerFast(tokenizer_object=tok)


@pytest.fixture(scope="session", autouse=True)
def private_caches(tmp_path_factory):
    """The LM scores and the evaluated LMs' answers are cached in the test session's own folders,
    never the user's (`proxy_lm.score_cache`, `uprise.evaluation.prediction_cache`); converted
    LMs stay shared (`$UPRISE_CACHE`). Tests that count LM calls pass their own folders."""
    folders = {"UPRISE_SCORE_CACHE": tmp_path_factory.mktemp("score-cache"),
               "UPRISE_PREDICTION_CACHE": tmp_path_factory.mktemp("prediction-cache")}
    before = {name: os.environ.get(name) for name in folders}
    os.environ.update({name: str(folder) for name, folder in folders.items()})
    yield folders
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def tiny_bert_path(tmp_path_factory) -> Path:
    """A 2-layer, 32-wide random BERT with its tokenizer, saved like a Hub checkpoint."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    tok = _wordpiece_tokenizer()
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
    )
    path = tmp_path_factory.mktemp("tiny-bert")
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def _save_lm(model, path: Path) -> Path:
    tok = _byte_bpe_tokenizer()
    model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    model.config.bos_token_id = model.config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt_neo_path(tmp_path_factory) -> Path:
    """A 2-layer random GPT-Neo (the paper's LM architecture) with a byte-level BPE tokenizer."""
    from transformers import GPTNeoConfig, GPTNeoForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoConfig(
        vocab_size=400,
        hidden_size=32,
        num_layers=2,
        num_heads=2,
        attention_types=[[["global", "local"], 1]],
        window_size=16,
        max_position_embeddings=512,
    )
    return _save_lm(GPTNeoForCausalLM(cfg), tmp_path_factory.mktemp("tiny-gpt-neo"))


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory) -> Path:
    """A 2-layer random Llama (the embedded SmolLM2's architecture, with GQA)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=400,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    return _save_lm(LlamaForCausalLM(cfg), tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(params=["gpt_neo", "llama"])
def tiny_lm_path(request, tiny_gpt_neo_path, tiny_llama_path) -> Path:
    """Each LM test runs on both architectures."""
    return {"gpt_neo": tiny_gpt_neo_path, "llama": tiny_llama_path}[request.param]


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"offline data mirror not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def one_thread():
    """This process computes with one thread, like the child processes that bitwise
    comparisons run against (scoring shards, a killed and resumed training run)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
