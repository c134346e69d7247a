"""Model FLOPs of one training step, from the shapes of the batch (for MFU, pipeline/throughput.py).

Per token, each matmul weight ``W`` (nn.Linear, GPT-2's Conv1D, a tied LM head) costs 2·|W| FLOPs forward, 2·|W|
for the input gradient and, when it is trainable, 2·|W| for the weight gradient: 6·|W| trainable, 4·|W| frozen
(a LoRA base weight). Attention scores and their use cost 4·q·k·width per query token and layer forward, 12 with the
backward pass (PaLM's MFU appendix counts the same). Encoder-decoder models: encoder weights see the source tokens,
decoder weights (and the LM head) the target tokens, except the cross-attention key / value projections, which
project the source; decoders also attend to the source (cross-attention).
Embedding look-ups, norms, activations and the optimizer are not counted (no matmul), nor recomputation under
activation checkpointing (model FLOPs, not hardware FLOPs). Full fine-tuning: equal to torch.utils.flop_counter's
count (tests/test_throughput.py). Adapters (LoRA...): the input gradient of frozen matmuls ahead of the first
trainable one is counted though autograd skips it: +5% on a 2-layer test model, about 1/layers of the total.
"""

from __future__ import annotations

import torch
from transformers.pytorch_utils import Conv1D  # GPT-2's matmul layer


def _matmul_weights(model):
    """(module path, weight) of every matmul module, each weight once (a tied LM head counts: it is a matmul)."""
    for name, module in model.named_modules():
        if isinstance(module, (torch.nn.Linear, Conv1D)) and getattr(module, "weight", None) is not None:
            yield name, module.weight


CROSS_ATTENTION = {"EncDecAttention", "encoder_attn", "crossattention"}  # T5, BART/Marian/Pegasus, BERT decoders
KEY_VALUE = {"k", "v", "k_proj", "v_proj", "key", "value"}


def _stack(path: str) -> str:
    """Which tokens a matmul of an encoder-decoder model sees: "encoder" (source) or "decoder" (target)."""
    parts = path.split(".")
    cross = next((i for i, p in enumerate(parts) if p in CROSS_ATTENTION), None)
    if "encoder" in parts or (cross is not None and cross + 1 < len(parts) and parts[cross + 1] in KEY_VALUE):
        return "encoder"
    return "decoder"


def _first(config, *names):
    return next((getattr(config, n) for n in names if getattr(config, n, None)), None)


class FlopPlan:
    """Per-token weight FLOPs of the model's stacks and its attention shape, fixed when training starts."""

    def __init__(self, model):
        config = getattr(model, "config", None)
        self.encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
        self.per_token = {"encoder": 0, "decoder": 0}
        for name, w in _matmul_weights(model):
            stack = _stack(name) if self.encoder_decoder else "decoder"
            self.per_token[stack] += (6 if w.requires_grad else 4) * w.numel()
        heads = _first(config, "num_attention_heads", "n_head")
        hidden = _first(config, "hidden_size", "d_model", "n_embd")
        head_dim = _first(config, "head_dim", "d_kv") or (hidden // heads if hidden and heads else 0)
        self.width = (heads or 0) * head_dim
        if self.encoder_decoder:
            self.enc_layers = _first(config, "encoder_layers", "num_layers", "num_hidden_layers") or 0
            self.dec_layers = _first(config, "decoder_layers", "num_decoder_layers") or self.enc_layers
        else:
            self.enc_layers, self.dec_layers = 0, _first(config, "num_hidden_layers", "n_layer", "num_layers") or 0

    def batch_flops(self, source: tuple, target: tuple | None = None) -> int:
        """Training FLOPs (forward + backward) of one batch: ``source`` the (batch, length) of input_ids;
        ``target`` that of decoder_input_ids / labels for encoder-decoder models."""
        b, s = source[0], source[-1]
        attn = 12 * self.width  # per query token, key and layer: forward 4, backward 8
        if not self.encoder_decoder:
            return b * s * (self.per_token["decoder"] + attn * s * self.dec_layers)
        t = target[-1] if target is not None else 0
        encoder = b * s * (self.per_token["encoder"] + attn * s * self.enc_layers)
        decoder = b * t * (self.per_token["decoder"] + attn * (t + s) * self.dec_layers)
        return encoder + decoder
