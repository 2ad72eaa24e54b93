"""Token merging (ToMe, Bolya et al., ICLR 2023): bipartite soft matching and its merge helpers.

Written from the paper. One layer of merging removes ``r`` tokens: tokens alternate into set A (even
positions) and set B (odd positions), each A token picks its most similar B token (cosine similarity of
``metric``, the attention keys averaged over heads), and the ``r`` A tokens with the most similar partners
are merged into them. ``bipartite_soft_matching`` computes that matching once and returns two closures,
``merge`` and ``unmerge``, which apply it to any tensor laid out like the tokens ([batch, tokens, channels]).

Shapes: B batch, T tokens in, Ta = ceil(T / 2) tokens of set A, Tb = T // 2 tokens of set B, r merged,
C channels.

Padding (``mask``, True = valid): tokens are first stably reordered valid-first, so the A/B alternation runs
over the valid tokens exactly as it would for the item alone. Valid and padded tokens are never paired.
The valid tokens of an item make exactly the merges the item would make without padding (with a class
token this holds for every r; without one, parity can force one extra valid merge when r is at its cap);
the rest of the ``r`` merges are taken from the padding, which is free to drop. A merge that cannot be
avoided, a padded A token left with no padded B token (possible only when r is at its cap), gives the
padding zero weight: a merged value averages its valid members only, so padding never changes a valid
token. Every merged group is otherwise all-valid or all-padded, where the weights are plain.
"""
from __future__ import annotations

import contextlib
from numbers import Integral
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

MergeFn = Callable[..., torch.Tensor]
MERGE_MODES = ("mean", "sum", "amax")

# Offsets that rank merge candidates in the padded case: cosine scores lie in [-1, 1], so each class of
# candidate sits in its own band below the valid merges the item would make on its own.
_PADDED_BAND = 4.0
_EXTRA_VALID_BAND = 8.0
_FORCED_SCORE = -16.0
NO_MERGE = 1.01  # a threshold above any cosine similarity: nothing merges


def _identity(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
    return x


def _check_mode(mode: str) -> None:
    if mode not in MERGE_MODES:
        raise ValueError(f"merge mode must be one of {MERGE_MODES}, got '{mode}'")


def _gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x [B, T, C], index [B, K] -> [B, K, C]."""
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _valid_pairs(node_max: torch.Tensor, mask: torch.Tensor, protected: int) -> torch.Tensor:
    """[B, Ta] bool: valid A tokens (not the class token) with a valid partner (mask already valid-first)."""
    valid_pair = mask[:, ::2] & (node_max > float("-inf"))
    if protected:
        valid_pair[:, 0] = False
    return valid_pair


def _merge_quota(node_max: torch.Tensor, mask: torch.Tensor, r: int, protected: int,
                 threshold: float | None) -> torch.Tensor:
    """[B] merges each item makes alone: min(r, cap), and with a threshold no more than its valid A tokens
    whose best match scores at least the threshold."""
    quota = ((mask.sum(dim=1) - protected) // 2).clamp(max=r)
    if threshold is not None:
        above = _valid_pairs(node_max, mask, protected) & (node_max >= threshold)
        quota = torch.minimum(quota, above.sum(dim=1))
    return quota


def _padded_priority(node_max: torch.Tensor, mask: torch.Tensor, quota: torch.Tensor, protected: int) -> torch.Tensor:
    """Rank A tokens for merging when some tokens are padding (mask already valid-first).

    Order: the valid merges the item would make alone (its top ``quota`` [B] valid A tokens by score), then
    padded A tokens with a padded partner, then further valid A tokens, then A tokens without a partner of
    their own kind. node_max [B, Ta] is -inf where an A token has no such partner.
    """
    feasible = node_max > float("-inf")                               # [B, Ta]
    valid_pair = _valid_pairs(node_max, mask, protected)
    valid_scores = node_max.masked_fill(~valid_pair, float("-inf"))
    by_score = valid_scores.sort(dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(by_score).scatter_(
        1, by_score, torch.arange(by_score.shape[1], device=by_score.device).expand_as(by_score))
    in_quota = valid_pair & (rank < quota[:, None])                   # [B, Ta]
    forced = torch.full_like(node_max, _FORCED_SCORE)
    padded = torch.where(feasible, node_max - _PADDED_BAND, forced)
    extra_valid = torch.where(valid_pair, node_max - _EXTRA_VALID_BAND, padded)
    return torch.where(in_quota, node_max, extra_valid)


def bipartite_soft_matching(metric: torch.Tensor, r: int, class_token: bool = True,
                            mask: torch.Tensor | None = None,
                            threshold: float | None = None) -> tuple[MergeFn, MergeFn]:
    """Match tokens for one ToMe step and return ``(merge, unmerge)``.

    metric [B, T, C] (attention keys averaged over heads); r tokens are removed, capped at
    (T - protected) // 2 with protected = 1 when ``class_token`` (position 0, never merged, stays first).
    mask [B, T] bool, True = valid (with a class token, position 0 must be valid).

    threshold (needs ``mask``): each item merges only its valid A tokens whose best match has cosine
    similarity >= threshold, at most r (the item's own count k); the tensor loses max k tokens, and an item
    with fewer merges drops padding instead, so the caller must give each item at least 2 (max k - k)
    padding tokens (``pad_tokens`` with 2 r is always enough) and may drop the padding left (``compact``).

    ``merge(x, mode="mean")``: x [B, T, C] -> [B, T - r, C], ordered as [class token, unmerged A tokens in
    their input order, B tokens]. "mean" averages each B token with every A token merged into it (the
    paper); "sum" adds them (for size-weighted averages, see ``merge_wavg``); "amax" takes the element-wise
    maximum (membership maps: ``merge_source``, ``merge_mask``) and ignores padding weights.
    ``unmerge(y)``: y [B, T - r, C] -> [B, T, C] in the input order, each merged token given its destination's
    value.
    """
    batch, tokens, _ = metric.shape
    protected = int(class_token)
    r = min(r, (tokens - protected) // 2)
    if r <= 0:
        return _identity, _identity
    if mask is not None:
        if mask.shape != (batch, tokens) or mask.dtype != torch.bool:
            raise ValueError(f"mask must be a bool tensor of shape {(batch, tokens)}, got {mask.dtype} "
                             f"{tuple(mask.shape)}")
        if class_token and not bool(mask[:, 0].all()):
            raise ValueError("mask marks the class token (position 0) as padding")
    elif threshold is not None:
        raise ValueError("threshold merging needs a mask (pad with pad_tokens)")

    with torch.no_grad():
        order, mask, node_max, node_idx = _best_matches(metric, mask)
        if mask is None:
            priority = node_max
        else:
            quota = _merge_quota(node_max, mask, r, protected, threshold)  # [B]
            if threshold is not None:
                r = int(quota.max())                                      # r = 0 still orders tokens [A, B],
                _check_threshold_padding(mask, quota, r)                  # as an item merging 0 of r does
            priority = _padded_priority(node_max, mask, quota, protected)
        if class_token:
            priority[:, 0] = float("-inf")
        edges = priority.sort(dim=-1, descending=True, stable=True).indices  # [B, Ta]
        src_idx = edges[:, :r]                                             # [B, r] A tokens merged away
        unm_idx = edges[:, r:].sort(dim=-1).values                         # [B, Ta - r] kept, input order
        dst_idx = node_idx.gather(1, src_idx)                              # [B, r] their B partners
        weights = None if mask is None else _padding_weights(mask, src_idx, dst_idx)

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        _check_mode(mode)
        if order is not None:
            x = _gather_tokens(x, order)
        src, dst = x[:, ::2], x[:, 1::2]                                   # [B, Ta, C], [B, Tb, C]
        unm = _gather_tokens(src, unm_idx)                                 # [B, Ta - r, C]
        src = _gather_tokens(src, src_idx)                                 # [B, r, C]
        index = dst_idx[..., None].expand(-1, -1, x.shape[-1])             # [B, r, C]
        if weights is None or mode == "amax":
            dst = dst.scatter_reduce(1, index, src, reduce=mode, include_self=True)
        else:
            w_src, w_dst = (w.to(x.dtype) for w in weights)                 # [B, r], [B, Tb]
            total = (dst * w_dst[..., None]).scatter_add(1, index, src * w_src[..., None])
            if mode == "mean":
                total = total / w_dst.scatter_add(1, dst_idx, w_src)[..., None]
            dst = total
        return torch.cat([unm, dst], dim=1)                                # [B, T - r, C]

    def unmerge(y: torch.Tensor) -> torch.Tensor:
        channels = y.shape[-1]
        unm, dst = y[:, :unm_idx.shape[1]], y[:, unm_idx.shape[1]:]         # [B, Ta - r, C], [B, Tb, C]
        src = _gather_tokens(dst, dst_idx)                                 # [B, r, C]
        out = y.new_empty(batch, tokens, channels)                         # [B, T, C]
        out[:, 1::2] = dst
        out.scatter_(1, (2 * unm_idx)[..., None].expand(-1, -1, channels), unm)
        out.scatter_(1, (2 * src_idx)[..., None].expand(-1, -1, channels), src)
        if order is not None:
            out = torch.empty_like(out).scatter_(1, order[..., None].expand(-1, -1, channels), out)
        return out

    return merge, unmerge


def _autocast_off(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast disabled, so the similarity scores stay fp32: under bf16 autocast a cosine similarity near 1
    is resolved to 2^-8 only (fp16, the authors' CUDA autocast: 2^-11), while a trained connector's best
    matches lie between 0.99 and 1, where bf16 would leave a handful of tied values to rank."""
    if device_type in ("cpu", "cuda"):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


def _best_matches(metric: torch.Tensor, mask: torch.Tensor | None
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """Each A token's most similar B token: (order [B, T] that moves valid tokens first or None, mask in that
    order, node_max [B, Ta] cosine similarity (-inf where valid meets padding), node_idx [B, Ta])."""
    order = None
    if mask is not None:
        order = (~mask).to(torch.uint8).sort(dim=1, stable=True).indices      # [B, T] valid first
        metric = _gather_tokens(metric, order)
        mask = mask.gather(1, order)
    metric = F.normalize(metric.float(), dim=-1)
    a, b = metric[:, ::2], metric[:, 1::2]                                 # [B, Ta, C], [B, Tb, C]
    with _autocast_off(metric.device.type):
        scores = a @ b.transpose(1, 2)                                     # [B, Ta, Tb], fp32
    if mask is not None:
        scores.masked_fill_(mask[:, ::2, None] != mask[:, None, 1::2], float("-inf"))
    node_max, node_idx = scores.max(dim=-1)                                # [B, Ta] best B for each A
    return order, mask, node_max, node_idx


@torch.no_grad()
def batch_threshold(metric: torch.Tensor, r: int, cap: int, class_token: bool = True,
                    mask: torch.Tensor | None = None) -> float:
    """The similarity threshold at which a batch merges ``r`` tokens per item on average, no item more than
    ``cap`` (DyMU's batch-level threshold): the (B r)-th highest best-match score among each item's top
    ``cap`` candidates. ``bipartite_soft_matching(metric, cap, class_token, mask, threshold)`` with it merges
    B r tokens over the batch (more only on tied scores). metric [B, T, C]; mask [B, T] bool or None (all
    valid). Returns ``NO_MERGE`` when r is 0 or nothing can merge."""
    batch, tokens, _ = metric.shape
    protected = int(class_token)
    if r <= 0 or cap <= 0 or tokens - protected < 2:
        return NO_MERGE
    if mask is None:
        mask = torch.ones(batch, tokens, dtype=torch.bool, device=metric.device)
    _, mask, node_max, _ = _best_matches(metric, mask)
    candidates = node_max.masked_fill(~_valid_pairs(node_max, mask, protected), float("-inf"))
    limit = _merge_quota(node_max, mask, cap, protected, None)          # [B] merges each item may make
    ranked = candidates.sort(dim=1, descending=True).values              # [B, Ta]
    within = torch.arange(ranked.shape[1], device=ranked.device) < limit[:, None]
    pool = ranked[within & (ranked > float("-inf"))]                     # [P] scores of allowed merges
    wanted = batch * r
    if pool.numel() == 0:
        return NO_MERGE
    return float(pool.topk(min(wanted, pool.numel())).values[-1])


def _check_threshold_padding(mask: torch.Tensor, quota: torch.Tensor, r: int) -> None:
    short = (~mask).sum(dim=1) < 2 * (r - quota)
    if bool(short.any()):
        raise ValueError(f"threshold merging removes {r} tokens, but items {short.nonzero()[:, 0].tolist()} "
                         f"lack the padding to drop for the merges they skip (pad with pad_tokens)")


def pad_tokens(x: torch.Tensor, count: int, value: float = 0.0) -> torch.Tensor:
    """x [B, T, ...] -> [B, T + count, ...], the new tokens filled with ``value`` (a bool x gets False)."""
    fill = x.new_full((x.shape[0], count, *x.shape[2:]), False if x.dtype == torch.bool else value)
    return torch.cat([x, fill], dim=1)


def compact(mask: torch.Tensor) -> torch.Tensor:
    """Index [B, K] that moves each item's valid tokens first (in order) and keeps K = the most valid
    tokens of any item: ``x.gather`` with it drops the padding no item needs."""
    keep = int(mask.sum(dim=1).max())
    return (~mask).to(torch.uint8).sort(dim=1, stable=True).indices[:, :keep]


def _padding_weights(mask: torch.Tensor, src_idx: torch.Tensor,
                     dst_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights of merged A tokens [B, r] and of B tokens [B, Tb]: 1 for valid tokens, 0 for padding in a
    group that has a valid member, 1 for all members of an all-padding group."""
    valid_b = mask[:, 1::2]                                                # [B, Tb]
    src_valid = mask[:, ::2].gather(1, src_idx)                            # [B, r]
    group_valid = valid_b.float().scatter_reduce(
        1, dst_idx, src_valid.float(), reduce="amax", include_self=True) > 0  # [B, Tb]
    w_dst = valid_b | ~group_valid
    w_src = src_valid | ~group_valid.gather(1, dst_idx)
    return w_src.float(), w_dst.float()


def merge_wavg(merge: MergeFn, x: torch.Tensor,
               size: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Size-weighted average merge (ToMe): x [B, T, C], size [B, T, 1] tokens covered (None = all 1)
    -> (x [B, T - r, C], size [B, T - r, 1]); sizes are carried from layer to layer."""
    if size is None:
        size = x.new_ones(x.shape[0], x.shape[1], 1)
    x = merge(x * size, mode="sum")
    size = merge(size, mode="sum")
    return x / size, size


def merge_source(merge: MergeFn, x: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
    """Source map: source [B, T, N] 0/1, which of the N input tokens each current token covers (None =
    identity, N = T, taken from x [B, T, C]) -> [B, T - r, N]."""
    if source is None:
        batch, tokens = x.shape[:2]
        source = torch.eye(tokens, dtype=x.dtype, device=x.device).expand(batch, tokens, tokens)
    return merge(source, mode="amax")


def merge_mask(merge: MergeFn, mask: torch.Tensor) -> torch.Tensor:
    """mask [B, T] bool -> [B, T - r]: a merged token is valid when any token merged into it is."""
    return merge(mask[..., None].float(), mode="amax")[..., 0] > 0


def parse_r(r: int | Sequence[int] | tuple[int, float], num_layers: int) -> list[int]:
    """Tokens merged per layer.

    r is an int (the same every layer), a list of ints (one per layer), or a tuple ``(r, inflection)``
    with inflection in [-1, 1]: a linear schedule from r * (1 + inflection) at the first layer to
    r * (1 - inflection) at the last, rounded per layer (0 constant, +1 decreasing, -1 increasing; the
    total stays about r * num_layers).
    """
    if isinstance(r, tuple):
        if len(r) != 2:
            raise ValueError(f"r as a tuple must be (r, inflection), got {r!r}")
        base, inflection = r
        _check_r(base)
        if not -1.0 <= float(inflection) <= 1.0:
            raise ValueError(f"r inflection must be in [-1, 1], got {inflection}")
        first, last = base * (1.0 + inflection), base * (1.0 - inflection)
        if num_layers == 1:
            return [int(base)]
        step = (last - first) / (num_layers - 1)
        return [int(first + step * layer + 0.5) for layer in range(num_layers)]
    if isinstance(r, Sequence) and not isinstance(r, str):
        if len(r) != num_layers:
            raise ValueError(f"r as a list must have one entry per layer ({num_layers}), got length {len(r)}")
        for value in r:
            _check_r(value)
        return [int(value) for value in r]
    _check_r(r)
    return [int(r)] * num_layers


def _check_r(value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"r must be a non-negative int, got {value!r}")


def token_counts(num_tokens: int, r_list: Sequence[int], class_token: bool = True) -> list[int]:
    """Token count after each layer when layer i merges r_list[i] tokens (capped as in the matching)."""
    protected = int(class_token)
    counts = []
    for r in r_list:
        num_tokens -= max(0, min(r, (num_tokens - protected) // 2))
        counts.append(num_tokens)
    return counts


def parse_threshold(threshold: float | Sequence[float | None] | None, num_layers: int) -> list[float | None] | None:
    """Similarity thresholds per layer: None (off, fixed r), a number (every layer) or a list with one
    number or None (that layer merges its full r) per layer."""
    if threshold is None:
        return None
    values = list(threshold) if isinstance(threshold, Sequence) and not isinstance(threshold, str) else \
        [threshold] * num_layers
    if len(values) != num_layers:
        raise ValueError(f"threshold as a list must have one entry per layer ({num_layers}), got length {len(values)}")
    for value in values:
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"threshold entries must be numbers or None, got {value!r}")
    return [None if value is None else float(value) for value in values]


def r_for_tokens(num_tokens: int, target: int, num_layers: int, class_token: bool = True) -> list[int]:
    """Per-layer r that takes ``num_tokens`` down to exactly ``target`` tokens, as even as the merge caps allow:
    the smallest constant r whose capped schedule reaches the target, one less in later layers where that
    overshoots, then the last layers trimmed to land exactly (ValueError when the caps make it unreachable)."""
    lowest = _final_tokens(num_tokens, [num_tokens] * num_layers, class_token)
    if not lowest <= target <= num_tokens:
        raise ValueError(f"cannot reach {target} tokens from {num_tokens} in {num_layers} layers "
                         f"(reachable: {lowest} to {num_tokens})")
    if target == num_tokens:
        return [0] * num_layers
    top = next(c for c in range(1, num_tokens + 1)
               if _final_tokens(num_tokens, [c] * num_layers, class_token) <= target)
    schedule = next(s for m in range(num_layers + 1)
                    for s in [[top] * m + [top - 1] * (num_layers - m)]
                    if _final_tokens(num_tokens, s, class_token) <= target)
    schedule = _capped(num_tokens, schedule, class_token)
    excess = target - _final_tokens(num_tokens, schedule, class_token)
    for layer in reversed(range(num_layers)):
        cut = min(excess, schedule[layer])
        schedule[layer] -= cut
        excess -= cut
    return schedule


def _capped(num_tokens: int, schedule: Sequence[int], class_token: bool) -> list[int]:
    """The merges each layer really makes (r capped as in the matching)."""
    counts = token_counts(num_tokens, schedule, class_token)
    return [before - after for before, after in zip([num_tokens, *counts], counts)]


def _final_tokens(num_tokens: int, schedule: Sequence[int], class_token: bool) -> int:
    return token_counts(num_tokens, schedule, class_token)[-1]
