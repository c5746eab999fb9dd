"""aiayn: "Attention Is All You Need", built as a small, exact, fast toolkit.

The building blocks (attention, multi-head attention, positional encodings, masks), the models built from
them (encoder-decoder Transformer, GPT, BERT, ViT), training and decoding, and pictures of attention.
"""

from .attention import KVCache, MultiHeadAttention, scaled_dot_product_attention
from .layers import Decoder, DecoderLayer, Encoder, EncoderLayer, FeedForward
from .models.seq2seq import Transformer, TransformerConfig
from .positional import LearnedPositionalEmbedding, SinusoidalPositionalEncoding

__version__ = "0.1.0"

__all__ = [
    "Decoder",
    "DecoderLayer",
    "Encoder",
    "EncoderLayer",
    "FeedForward",
    "KVCache",
    "LearnedPositionalEmbedding",
    "MultiHeadAttention",
    "SinusoidalPositionalEncoding",
    "Transformer",
    "TransformerConfig",
    "scaled_dot_product_attention",
]
