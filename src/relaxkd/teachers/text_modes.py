"""Per-sample text modes (docs/method.md §5): a seeded split of a set in the configured proportions."""
from __future__ import annotations

import torch

from relaxkd.names import TEXT_MODES

MODE_IDS = {mode: i for i, mode in enumerate(TEXT_MODES)}


def assign_text_modes(num_samples: int, proportions: dict[str, float], seed: int) -> torch.Tensor:
    """Mode id per sample; counts follow the proportions (largest remainder), positions are random."""
    modes = [m for m in TEXT_MODES if proportions.get(m, 0.0) > 0]
    exact = [proportions[m] * num_samples for m in modes]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(modes)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in by_remainder[: num_samples - sum(counts)]:
        counts[i] += 1
    ids = torch.cat([torch.full((c,), MODE_IDS[m], dtype=torch.long) for m, c in zip(modes, counts)])
    generator = torch.Generator().manual_seed(seed)
    return ids[torch.randperm(num_samples, generator=generator)]


def assign_noise_classes(num_samples: int, num_classes: int, seed: int) -> torch.Tensor:
    """The random class whose name a ``noise`` sample is given, fixed by the seed."""
    generator = torch.Generator().manual_seed(seed + 7_777)
    return torch.randint(num_classes, (num_samples,), generator=generator)


def mode_proportions(modes: torch.Tensor) -> dict[str, float]:
    n = max(1, modes.numel())
    return {m: round((modes == i).sum().item() / n, 6) for m, i in MODE_IDS.items() if (modes == i).any()}
