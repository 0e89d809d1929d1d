"""Statistical classification: the OSB tokenizer, the Bayes math, the count backends and
learning (the learn cache, autolearn's policy)."""

from engine.stats.backend import MemoryStatBackend, StatBackend
from engine.stats.classifier import (
    BAYES_HAM,
    BAYES_SPAM,
    BayesParams,
    Classification,
    TokenInfluence,
    bayes_symbol,
    classify,
    dynamic_weight,
)
from engine.stats.learn import Learner, LearnResult, message_digest
from engine.stats.store_backend import StoreStatBackend
from engine.stats.tokenizer import Tokenizer, TokenizerConfig

__all__ = [
    "BAYES_HAM",
    "BAYES_SPAM",
    "BayesParams",
    "Classification",
    "LearnResult",
    "Learner",
    "MemoryStatBackend",
    "StatBackend",
    "StoreStatBackend",
    "TokenInfluence",
    "Tokenizer",
    "TokenizerConfig",
    "bayes_symbol",
    "classify",
    "dynamic_weight",
    "message_digest",
]
