"""ToMe bipartite soft matching against a brute-force reference, source maps, masks and r schedules."""
import pytest
import torch

from lavis_evlgen.models.tome import (
    _best_matches,
    bipartite_soft_matching,
    merge_mask,
    merge_source,
    merge_wavg,
    parse_r,
    token_counts,
)


def reference_merge(metric, x, r, class_token, size=None):
    """One item, loops only: metric [T, C], x [T, D], size [T] or None -> (out [T', D], groups), where
    groups[i] lists the input positions merged into output token i; a size gives ToMe's weighted average.
    Without merges the tokens keep their order."""
    tokens = metric.shape[0]
    size = torch.ones(tokens, dtype=x.dtype) if size is None else size
    r = min(r, (tokens - int(class_token)) // 2)
    if r <= 0:
        return x.clone(), [[i] for i in range(tokens)]
    unit = [metric[i].double() / metric[i].double().norm() for i in range(tokens)]
    a_pos, b_pos = list(range(0, tokens, 2)), list(range(1, tokens, 2))
    best = {}
    for i in a_pos:
        sims = [float(unit[i] @ unit[j]) for j in b_pos]
        k = max(range(len(sims)), key=lambda k: sims[k])
        best[i] = (sims[k], b_pos[k])
    candidates = [i for i in a_pos if not (class_token and i == 0)]
    merged = sorted(candidates, key=lambda i: -best[i][0])[:r]
    groups = [[i] for i in a_pos if i not in merged] + [[j] for j in b_pos]
    for i in merged:
        next(g for g in groups if g[0] == best[i][1]).append(i)
    out = torch.stack([sum(x[p] * size[p] for p in g) / sum(size[p] for p in g) for g in groups])
    return out, groups


def random_case(batch, tokens, channels=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, tokens, channels, generator=gen),
            torch.randn(batch, tokens, 5, generator=gen))


@pytest.mark.parametrize("tokens", [2, 7, 16, 33])
@pytest.mark.parametrize("r", [0, 1, 3, 8, 40])
@pytest.mark.parametrize("class_token", [True, False])
def test_mean_merge_matches_reference(tokens, r, class_token):
    metric, x = random_case(3, tokens, seed=tokens * 100 + r)
    merge, _ = bipartite_soft_matching(metric, r, class_token)
    out = merge(x)
    source = merge_source(merge, x)
    for b in range(3):
        expected, groups = reference_merge(metric[b], x[b], r, class_token)
        torch.testing.assert_close(out[b], expected, rtol=0, atol=1e-6)
        for i, group in enumerate(groups):
            assert source[b, i].nonzero().flatten().tolist() == sorted(group)
    if class_token:
        torch.testing.assert_close(out[:, 0], x[:, 0])


@pytest.mark.parametrize("tokens,r", [(9, 2), (20, 5), (33, 16)])
@pytest.mark.parametrize("class_token", [True, False])
def test_wavg_merge_matches_reference(tokens, r, class_token):
    metric, x = random_case(2, tokens, seed=tokens + r)
    size = torch.rand(2, tokens, 1, generator=torch.Generator().manual_seed(7)) * 4 + 1
    merge, _ = bipartite_soft_matching(metric, r, class_token)
    out, new_size = merge_wavg(merge, x, size)
    for b in range(2):
        expected, groups = reference_merge(metric[b], x[b], r, class_token, size[b, :, 0])
        torch.testing.assert_close(out[b], expected, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(new_size[b, :, 0], torch.stack([size[b, g, 0].sum() for g in groups]))


def test_wavg_differs_from_mean_once_sizes_differ():
    metric, x = random_case(2, 17)
    merge, _ = bipartite_soft_matching(metric, 4)
    size = torch.arange(1, 18, dtype=torch.float).expand(2, 17)[..., None]
    assert not torch.allclose(merge_wavg(merge, x, size)[0], merge(x))
    torch.testing.assert_close(merge_wavg(merge, x)[0], merge(x))


def test_source_map_and_sizes_over_layers():
    metric, _ = random_case(4, 65, channels=16)
    x, size, source = metric, None, None
    for r in (10, 10, 10, 10):
        merge, _ = bipartite_soft_matching(x, r)
        source = merge_source(merge, x, source)
        x, size = merge_wavg(merge, x, size)
    assert source.shape == (4, 25, 65)
    assert set(source.unique().tolist()) == {0.0, 1.0}
    torch.testing.assert_close(source.sum(dim=1), torch.ones(4, 65))
    torch.testing.assert_close(source.sum(dim=2), size[..., 0])
    assert (source[:, 0, 0] == 1).all() and (source[:, 0].sum(dim=1) == 1).all()


def test_unmerge_restores_count_with_destination_values():
    metric, x = random_case(2, 21)
    merge, unmerge = bipartite_soft_matching(metric, 6)
    merged = merge(x)
    restored = unmerge(merged)
    assert merged.shape == (2, 15, 5) and restored.shape == (2, 21, 5)
    source = merge_source(merge, x)
    torch.testing.assert_close(restored, source.transpose(1, 2) @ merged)


@pytest.mark.parametrize("tokens,class_token,cap", [(257, True, 128), (10, True, 4), (10, False, 5), (1, True, 0)])
def test_r_is_capped(tokens, class_token, cap):
    metric, x = random_case(1, tokens)
    merge, _ = bipartite_soft_matching(metric, 1000, class_token)
    assert merge(x).shape[1] == tokens - cap
    assert token_counts(tokens, [1000], class_token) == [tokens - cap]


def test_merge_rejects_unknown_mode():
    merge, _ = bipartite_soft_matching(*random_case(1, 8)[:1], r=2)
    with pytest.raises(ValueError, match="merge mode"):
        merge(torch.zeros(1, 8, 3), mode="median")


def padded_case(valid_counts, tokens, seed, suffix=True):
    """Random metric/x with item b valid on valid_counts[b] tokens (position 0 always valid); padded
    tokens at the end or scattered."""
    metric, x = random_case(len(valid_counts), tokens, seed=seed)
    mask = torch.zeros(len(valid_counts), tokens, dtype=torch.bool)
    gen = torch.Generator().manual_seed(seed)
    for b, valid in enumerate(valid_counts):
        rest = torch.arange(1, valid) if suffix else 1 + torch.randperm(tokens - 1, generator=gen)[:valid - 1]
        mask[b, 0] = True
        mask[b, rest] = True
    return metric, x, mask


@pytest.mark.parametrize("suffix", [True, False])
@pytest.mark.parametrize("r", [1, 4, 9, 15])
def test_padding_leaves_valid_tokens_as_if_alone(suffix, r):
    valid_counts = [31, 20, 9, 2]
    metric, x, mask = padded_case(valid_counts, 31, seed=r + 10 * suffix, suffix=suffix)
    merge, _ = bipartite_soft_matching(metric, r, mask=mask)
    out, out_mask = merge(x), merge_mask(merge, mask)
    assert out.shape[1] == 31 - min(r, 15)
    for b, valid in enumerate(valid_counts):
        keep = mask[b]
        expected, _ = reference_merge(metric[b, keep], x[b, keep], r, True)
        torch.testing.assert_close(out[b, out_mask[b]], expected, rtol=0, atol=1e-5)
        assert out[b, 0].equal(x[b, 0])


@pytest.mark.parametrize("r", [2, 7, 15])
def test_padding_never_merges_with_valid_tokens(r):
    metric, x, mask = padded_case([31, 12, 5], 31, seed=r, suffix=False)
    merge, _ = bipartite_soft_matching(metric, r, mask=mask)
    source, out_mask = merge_source(merge, x), merge_mask(merge, mask)
    members_valid = source @ mask.float()[..., None]                   # valid members per output token
    members = source.sum(dim=2, keepdim=True)
    assert ((members_valid == 0) | (members_valid == members)).all()
    assert out_mask.equal(members_valid[..., 0] > 0)
    torch.testing.assert_close(source.sum(dim=1), torch.ones(3, 31))


def test_merge_mask_is_or_of_sources():
    metric, x, mask = padded_case([16, 6], 16, seed=3)
    merge, _ = bipartite_soft_matching(metric, 6, mask=mask)
    source = merge_source(merge, x)
    assert merge_mask(merge, mask).equal((source @ mask.float()[..., None])[..., 0] > 0)


def test_forced_padding_merge_carries_no_weight():
    """One padded token in set A with no padded partner, r at its cap: it must merge into a valid token,
    and is dropped (zero weight) instead of changing it."""
    metric, x, mask = padded_case([8, 9], 9, seed=5)
    merge, _ = bipartite_soft_matching(metric, 4, mask=mask)
    out, out_mask = merge(x), merge_mask(merge, mask)
    out_wavg, size = merge_wavg(merge, x)
    assert out_mask[0].all()
    expected, groups = reference_merge(metric[0, :8], x[0, :8], 4, True)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_wavg[0], expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(size[0, :, 0], torch.tensor([float(len(g)) for g in groups]))


def test_unmerge_with_padding_returns_input_order():
    metric, x, mask = padded_case([13, 5], 13, seed=2, suffix=False)
    merge, unmerge = bipartite_soft_matching(metric, 5, mask=mask)
    source = merge_source(merge, x)
    torch.testing.assert_close(unmerge(merge(x)), source.transpose(1, 2) @ merge(x))


def test_mask_errors():
    metric, _ = random_case(2, 8)
    with pytest.raises(ValueError, match="class token"):
        bipartite_soft_matching(metric, 2, mask=torch.tensor([[True] * 8, [False] + [True] * 7]))
    with pytest.raises(ValueError, match="bool"):
        bipartite_soft_matching(metric, 2, mask=torch.ones(2, 8))


def test_parse_r_forms():
    assert parse_r(19, 12) == [19] * 12
    assert parse_r([1, 2, 3], 3) == [1, 2, 3]
    assert parse_r((19, 0.0), 12) == [19] * 12
    decreasing = parse_r((19, 1.0), 12)
    assert decreasing[0] == 38 and decreasing[-1] == 0 and sum(decreasing) == 19 * 12
    assert decreasing == sorted(decreasing, reverse=True)
    increasing = parse_r((10, -0.5), 5)
    assert increasing == [5, 8, 10, 13, 15]
    assert parse_r((7, 1.0), 1) == [7]


@pytest.mark.parametrize("bad,match", [([1, 2], "length 2"), ((5, 1.5), "inflection"), (-1, "non-negative"),
                                       ([1, 2.5, 3], "non-negative int"), ((1, 2, 3), r"\(r, inflection\)")])
def test_parse_r_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_r(bad, 3)


def test_token_counts():
    assert token_counts(257, parse_r(19, 12)) == [257 - 19 * (i + 1) for i in range(12)]
    assert token_counts(10, [4, 4, 4]) == [6, 4, 3]
    assert token_counts(10, [4, 4, 4], class_token=False) == [6, 3, 2]
    assert token_counts(5, [0, 1]) == [5, 4]



def test_matching_under_bf16_autocast_ranks_by_fp32_similarities():
    # A trained connector's best matches lie within 0.99-1, where bf16 resolves only steps of 2^-8.
    torch.manual_seed(0)
    metric = torch.randn(1, 1, 64) + 0.02 * torch.randn(4, 41, 64)      # best-match cosines about 0.9995
    tokens = torch.arange(41.0).expand(4, 41)[..., None].contiguous()    # each token's own index
    merge, _ = bipartite_soft_matching(metric, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        merge_autocast, _ = bipartite_soft_matching(metric, 12)
        node_max = _best_matches(metric, None)[2]
    assert node_max.dtype == torch.float32 and node_max.min() > 0.99
    assert torch.equal(merge(tokens), merge_autocast(tokens))
