"""One unmasking step (design-choices.md section 2.2), split into small pure pieces.

STEP = CFG logits -> [logit transforms, e.g. noise regularization] -> softmax ->
[probability transforms, e.g. differential sampling] -> one categorical draw per position ->
keep decoded tokens -> Gumbel-perturbed confidence -> re-mask the m_b least confident.

RNG draws happen in the reference scheduler's order and shapes (multinomial over the [B*L, K]
rows, then one uniform [B, L] tensor), so the tokens equal the reference's for the same
logits and generator state.
"""

from __future__ import annotations

import torch

FLOOR = 1e-20


def categorical(probs: torch.Tensor, generator: torch.Generator | None, exact: bool = True) -> torch.Tensor:
    """One draw per row of probs [B, L, K] -> [B, L], on the generator's device (as the reference).

    ``exact``: ``torch.multinomial`` as the reference (it draws K exponentials per row). Otherwise
    inverse-CDF sampling with one uniform per row: the same distribution, a fraction of the RNG work.
    """
    b, length, k = probs.shape
    p = probs if generator is None or generator.device == probs.device else probs.to(generator.device)
    if p.device.type == "cpu" and p.dtype != torch.float32:
        p = p.float()  # multinomial has no CPU half kernels
    p = p.reshape(-1, k)
    if exact:
        draw = torch.multinomial(p, 1, generator=generator)[:, 0]
    else:
        cdf = torch.cumsum(p, dim=-1, dtype=torch.float64 if p.device.type == "cpu" else torch.float32)
        u = torch.rand(p.shape[0], 1, device=p.device, generator=generator, dtype=cdf.dtype) * cdf[:, -1:]
        draw = torch.searchsorted(cdf, u, right=True)[:, 0].clamp_max(k - 1)
    return draw.to(probs.device).view(b, length)


def uniform(shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else like.device
    return torch.zeros(shape, dtype=like.dtype, device=device).uniform_(0, 1, generator=generator).to(like.device)


def gumbel(u: torch.Tensor) -> torch.Tensor:
    return -torch.log((-torch.log(u.clamp(FLOOR))).clamp(FLOOR))


def keep_decoded(sampled: torch.Tensor, x: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """Decoded tokens never change; only masked positions take the new draw."""
    return torch.where(unknown, sampled, x)


def clamp_mask_counts(m: int, unknown: torch.Tensor) -> torch.Tensor:
    """Per image: reveal at least one token and keep at least one masked: clamp m to [1, |U_b| - 1]."""
    n_unknown = unknown.sum(dim=-1, keepdim=True)
    return (n_unknown - 1).clamp_max(m).clamp_min(1)


def confidence(probs: torch.Tensor, tokens: torch.Tensor, unknown: torch.Tensor) -> torch.Tensor:
    """log p of each position's token; decoded positions get log(float max) (~88.7) so they stay."""
    chosen = torch.gather(probs, -1, tokens[:, :, None])[:, :, 0]
    chosen = torch.where(unknown, chosen, torch.finfo(chosen.dtype).max)
    return torch.log(chosen.clamp(FLOOR))


def remask_lowest(
    conf: torch.Tensor, counts: torch.Tensor, tokens: torch.Tensor, mask_id: int
) -> torch.Tensor:
    """Mask every position whose confidence is below the counts[b]-th smallest (0-based) of its row."""
    cut = torch.gather(torch.sort(conf, dim=-1).values, 1, counts.long())
    return torch.where(conf < cut, mask_id, tokens)


def confidence_remask(
    probs: torch.Tensor,
    sampled: torch.Tensor,
    unknown: torch.Tensor,
    mask_count: int,
    temperature: torch.Tensor | float,
    mask_id: int,
    generator: torch.Generator | None,
    rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """The reference's re-masking rule: Gumbel-perturbed confidence, keep the top, mask the rest.

    ``rows`` (bool [B]) limits the rule to images that still have unknown tokens; the
    reference would re-mask a decoded token of an image that has none (OURS: leave it).
    """
    counts = clamp_mask_counts(mask_count, unknown)
    conf = confidence(probs, sampled, unknown)
    conf = conf + temperature * gumbel(uniform(conf.shape, conf, generator))
    out = remask_lowest(conf, counts, sampled, mask_id)
    return out if rows is None else torch.where(rows[:, None], out, sampled)
