"""Attention for padding-free packed rows: each packed example attends only to itself, computed per example.

Padding-free packing puts several examples in one row whose position ids restart at 0 at each example.
transformers' sdpa path turns that into a block-diagonal mask and computes the whole row's attention
(quadratic in the row's length) before masking most of it away. ``packed_sdpa`` cuts the row at the
restarts and runs causal SDPA on each example: the same values (exactly the entries the mask keeps), for
the sum of the examples' squared lengths instead of the row's. On the demo's 512-token rows of ~5
examples it measured 1.2x the training tokens/s on 2 CPU cores (bench/README.md, bench_train's section).

Anything that is not one packed row (a padded batch, a decoding step with a cache, a row of one example)
goes to transformers' own sdpa unchanged. Registered with transformers' AttentionInterface under
``PACKED_SDPA``; the name is a runtime choice that is not saved with the model.
"""

from __future__ import annotations

from typing import Any

PACKED_SDPA = "tunegate_packed_sdpa"
_last: list[Any] = [None, -1, None]  # (position_ids, its version, bounds): every layer of one forward gets the same tensor


def segment_bounds(position_ids: Any) -> list[int] | None:
    """Start offsets of the packed examples in a (1, length) position-id row, plus its length; None unless it packs several."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.size(0) != 1:
        return None
    version = None if position_ids.is_inference() else position_ids._version  # inference tensors keep no version
    if version is not None and _last[0] is position_ids and _last[1] == version:
        return _last[2]
    starts = (position_ids[0] == 0).nonzero().flatten().tolist()  # one host sync per forward, not per layer
    bounds = starts + [position_ids.size(1)] if len(starts) > 1 and starts[0] == 0 else None
    _last[:] = [position_ids, version, bounds] if version is not None else [None, -1, None]
    return bounds


def packed_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *, position_ids: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """transformers' attention signature: per-example causal SDPA on a packed row, sdpa_attention_forward otherwise."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    bounds = segment_bounds(position_ids)
    if bounds is None or query.size(0) != 1 or not query.size(2) == key.size(2) == bounds[-1]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, position_ids=position_ids, **kwargs)
    kwargs.pop("is_causal", None)
    parts = [
        sdpa_attention_forward(module, query[:, :, a:b], key[:, :, a:b], value[:, :, a:b], None, is_causal=True, **kwargs)[0]
        for a, b in zip(bounds, bounds[1:])
    ]
    return torch.cat(parts, dim=1), None  # (1, length, heads, head_dim), as sdpa_attention_forward returns


def register() -> str:
    """Register ``packed_sdpa`` (and sdpa's mask for the rows it hands on) with transformers; returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(PACKED_SDPA, packed_sdpa)
    ALL_MASK_ATTENTION_FUNCTIONS.register(PACKED_SDPA, sdpa_mask)
    return PACKED_SDPA


def use_packed_attention(model: Any, max_length: int) -> bool:
    """Switch a model that uses sdpa to ``packed_sdpa``; False (unchanged) for any other attention implementation,
    and for a sliding window shorter than ``max_length`` (a packed example could outgrow it; plain causal SDPA knows no window)."""
    config = model.config
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return False
    window = getattr(config, "sliding_window", None)
    if window is not None and getattr(config, "use_sliding_window", True) and window < max_length:
        return False
    model.set_attn_implementation(register())
    return model.config._attn_implementation == PACKED_SDPA
