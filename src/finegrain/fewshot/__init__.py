"""Few-shot learning on embeddings: episodes, inductive and transductive (unrolled EM) methods, evaluation."""
from __future__ import annotations
