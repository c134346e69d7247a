"""Packing causal-LM examples into blocks without cross-contamination, the collator, and the response-token loss.

``packing_strategy: bfd`` (``trl.pack_dataset``, best-fit decreasing): short examples share a row of at most
``block_size`` tokens; ``position_ids`` restart at 0 at every example. transformers (masking_utils) reads a restart in
the position ids as a sequence boundary when no 2-D attention mask and no KV cache are given, and builds a
block-diagonal causal mask for sdpa and eager attention (flash-attention uses the same ids as cu_seqlens), so
attention stays inside each example. Two traps: with ``use_cache`` (the config default, also in training) the model
builds a cache and the detection is skipped, so packed batches carry ``use_cache=False``; and an attention mask
turns it off, so packed batches have none.

Rows of one batch are padded to the longest; the padding tail has position 0 on every token (length-1 segments, no
label), which is how pipeline/throughput.py tells it from real tokens. Rows are not flattened into one long row
(``DataCollatorWithFlattening``): without varlen kernels (CPU, sdpa) a flat row of B x block tokens costs a dense
(B x block)^2 mask and attention, measured 4.2x slower than B rows of one block (16 x 256, GPT-2 256 wide, CPU).

``wrapped``: the examples joined and cut into full blocks, attention across them (the classic run_clm grouping).
"""

from __future__ import annotations

STRATEGIES = ("bfd", "wrapped")


def pack(ds, block_size: int, strategy: str, num_proc=None):
    """Dataset(Dict) of examples (input_ids, labels) -> rows of packed examples (+ position_ids for bfd)."""
    from trl import pack_dataset

    ds = pack_dataset(ds, block_size, strategy=strategy, map_kwargs={"num_proc": num_proc,
                                                                     "desc": f"pack ({strategy}, {block_size})"})
    if strategy == "wrapped":
        return ds

    def positions(batch):
        return {"position_ids": [[i for n in lens for i in range(n)] for lens in batch["seq_lengths"]]}

    return ds.map(positions, batched=True, remove_columns=["seq_lengths"], num_proc=num_proc, desc="position ids")


class CausalCollator:
    """Right-padded batches; labels -100 on padding. Packed rows (``position_ids``) get no attention mask and
    ``use_cache=False`` (see the module docstring); other rows an attention mask."""

    def __init__(self, pad_id: int):
        self.pad_id = int(pad_id)

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        n = len(features)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        labels = torch.full((n, width), -100, dtype=torch.long)
        packed = "position_ids" in features[0]
        extra = torch.zeros((n, width), dtype=torch.long)  # position ids (packed) or attention mask
        for row, f in enumerate(features):
            k = len(f["input_ids"])
            ids[row, :k] = torch.as_tensor(f["input_ids"])
            labels[row, :k] = torch.as_tensor(f["labels"])
            extra[row, :k] = torch.as_tensor(f["position_ids"]) if packed else 1
        if packed:
            return {"input_ids": ids, "labels": labels, "position_ids": extra, "use_cache": False}
        return {"input_ids": ids, "labels": labels, "attention_mask": extra}


def token_loss_sums(logits, labels):
    """preprocess_logits_for_metrics: per row [summed cross-entropy of the labelled tokens, their number]; only
    these two numbers per row are kept through evaluation (not the logits)."""
    import torch

    if isinstance(logits, tuple):
        logits = logits[0]
    target = labels[:, 1:]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), target, ignore_index=-100,
                                           reduction="none")
    return torch.stack([ce.sum(-1), (target != -100).sum(-1).float()], dim=-1)


def response_metrics(eval_pred) -> dict:
    """Token-weighted mean loss over the trained (response) tokens of the whole split: the same number whatever the
    batching or packing (the Trainer's eval_loss averages per-batch means)."""
    sums = eval_pred.predictions
    total, count = float(sums[:, 0].sum()), float(sums[:, 1].sum())
    return {"response_loss": total / max(count, 1.0), "response_tokens": int(count)}
