"""CLIP noun-table speed: the text tower at 77 tokens (before issue 22) and at each batch's own length.

The noun table embeds all 119,034 WordNet noun lemmas with the 7 templates: 833,238 prompts. Timing
all of it at 77 tokens takes hours on a CPU, so both paths run on random samples of the table's
words (seeded), in one process on one model, and report prompts per second and the table's
extrapolated time:

- before: what ``ClipEncoder.embed_words`` did until issue 22 -- word-aligned batches of
  ``--batch-size`` prompts, tokenised (``PromptTokenizer``), ``model.encode_text`` on the full
  context, templates averaged, normalised;
- after: ``ClipEncoder.embed_words`` now (windows of 16 batches sorted by token length, each batch
  cut to its longest prompt), on a sample of ``--after-windows`` whole windows so its batches are
  shaped as the table's are.

The before sample's words are also in the after sample; the largest difference between the two
paths' embeddings of those words is printed. Tokenising is timed in both.

    python benchmarks/bench_text_length.py                                  # ViT-B-32, CPU
    python benchmarks/bench_text_length.py --batch-size 256 --before-prompts 512   # quicker
    python benchmarks/bench_text_length.py --device cuda                    # on a GPU
"""
from __future__ import annotations

import argparse
import json
import os
import random
import time

TABLE_WORDS = 119_034


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--weights", default="none", help="random weights unless a tag or file is given")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=1024, help="prompts per forward pass (embed_nouns: 1024)")
    parser.add_argument("--before-prompts", type=int, default=1024, help="sample size at 77 tokens")
    parser.add_argument("--after-windows", type=int, default=1, help="sample size at prompt length, in windows")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F

    from relaxkd.clip import TEMPLATES, PromptTokenizer, load_clip
    from relaxkd.clip.encoder import _WINDOW_BATCHES
    from relaxkd.wordnet import candidate_nouns

    nouns = candidate_nouns("all", class_synsets=None, class_names=[])
    n_templates = len(TEMPLATES)
    encoder = load_clip(args.model, weights=args.weights, device=args.device)
    after_words = args.after_windows * (args.batch_size * _WINDOW_BATCHES // n_templates)
    sample = random.Random(args.seed).sample(nouns, after_words)
    before_sample = sample[: max(1, args.before_prompts // n_templates)]
    load_before = os.getloadavg()

    def sync() -> None:
        if encoder.device.type == "cuda":
            torch.cuda.synchronize()

    def before(words: list[str]) -> torch.Tensor:
        tokenize = PromptTokenizer(encoder.tokenizer, TEMPLATES)
        words_per_batch = max(1, args.batch_size // n_templates)
        out = []
        with torch.inference_mode():
            for start in range(0, len(words), words_per_batch):
                tokens = tokenize([w.replace("_", " ") for w in words[start : start + words_per_batch]])
                with encoder._autocast():
                    raw = encoder.model.encode_text(tokens.to(encoder.device)).float().cpu()
                out.append(F.normalize(raw.view(-1, n_templates, raw.shape[-1]).mean(dim=1), dim=-1))
        return torch.cat(out)

    encoder.embed_words(sample[:8], batch_size=args.batch_size, progress=False)  # warm-up
    timings = {}
    for name, run, words in (("before", before, before_sample),
                             ("after", lambda w: encoder.embed_words(w, batch_size=args.batch_size, progress=False), sample)):
        sync()
        started = time.perf_counter()
        embeddings = run(words)
        sync()
        timings[name] = (len(words) * n_templates, time.perf_counter() - started, embeddings)
    difference = float((timings["before"][2] - timings["after"][2][: len(before_sample)]).abs().max())
    lengths = encoder.text_forward.lengths(PromptTokenizer(encoder.tokenizer, TEMPLATES)(
        [w.replace("_", " ") for w in sample]))
    result = {
        "model": encoder.describe(), "device": str(encoder.device), "precision": encoder.precision,
        "torch_threads": torch.get_num_threads(), "batch_size": args.batch_size,
        "table_prompts": TABLE_WORDS * n_templates, "mean_prompt_tokens": round(float(lengths.float().mean()), 2),
        "full_length_reason": encoder.text_forward.full_length_reason,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "max_abs_difference": difference,
    }
    for name, (prompts, seconds, _) in timings.items():
        rate = prompts / seconds
        result[name] = {"prompts": prompts, "seconds": round(seconds, 2), "prompts_per_s": round(rate, 1),
                        "table_hours": round(TABLE_WORDS * n_templates / rate / 3600, 3)}
    result["speedup"] = round(result["after"]["prompts_per_s"] / result["before"]["prompts_per_s"], 2)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
