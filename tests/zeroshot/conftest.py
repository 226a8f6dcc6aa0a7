"""Tiny random-weight text and CLIP models, built offline once per test session (no hub is ever reached)."""
from __future__ import annotations

from pathlib import Path

import pytest

WORDS = ("a photo of the red blue green bird finch jay warbler feathers with wings bill small large "
         "tail short long yellow black white , . type").split()


def _tokenizer(folder: Path):
    import inspect

    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    if "vocab" in inspect.signature(BertTokenizerFast.__init__).parameters:  # transformers >= 5
        return BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory) -> str:
    """`sentence-transformers:DIR` id of a 16-d random BERT saved as a sentence-transformers model."""
    pytest.importorskip("sentence_transformers")
    import torch
    from sentence_transformers import SentenceTransformer
    try:  # sentence-transformers >= 6 moved the modules
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:
        from sentence_transformers.models import Pooling, Transformer
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("tiny_st")
    tok = _tokenizer(root / "bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(root / "bert")
    tok.save_pretrained(root / "bert")
    word = Transformer(str(root / "bert"), max_seq_length=32)
    SentenceTransformer(modules=[word, Pooling(16, "mean")], device="cpu").save(str(root / "st"))
    return f"sentence-transformers:{root / 'st'}"


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    """A random-weight Hugging Face CLIP model (8-d joint space, 32 px images) with a tiny tokenizer."""
    pytest.importorskip("transformers")
    import torch
    from transformers import CLIPConfig, CLIPModel

    root = tmp_path_factory.mktemp("tiny_clip")
    tok = _tokenizer(root)
    torch.manual_seed(0)
    cfg = CLIPConfig(text_config=dict(vocab_size=tok.vocab_size, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                                      pad_token_id=0, bos_token_id=2, eos_token_id=3),
                     vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, image_size=32, patch_size=8),
                     projection_dim=8)
    CLIPModel(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root
