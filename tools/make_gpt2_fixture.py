"""Writes the GPT-2 parity fixture of tests/test_models_gpt2.py with Hugging Face transformers.

Needs torch and transformers (neither is an adc_jax dependency; run it in a scratch environment:
`pip install torch transformers tokenizers numpy`, then from the repository root
`PYTHONPATH=. python tools/make_gpt2_fixture.py --output tests/gpt2_fixture`). It
  1. trains a byte-level BPE tokenizer.json of 384 tokens on the synthetic data's captions
     (`adc_jax.models.tiny_gpt2.train_tokenizer`, which needs only `tokenizers`);
  2. builds transformers' GPT2LMHeadModel with a tiny random config (n_embd 32, 2 layers, 4 heads,
     64 positions, the tokenizer's vocabulary), perturbs every LayerNorm and bias so that none is
     at its trivial initial value, and scales the weights up so logits are O(1-10);
  3. writes it with `save_pretrained` (config.json, model.safetensors: the hub's format), and
     `expected.npz`: token ids [2, 24] (a tokenised caption and random ids) and the float32 logits
     [2, 24, 384] of GPT2LMHeadModel in eval mode (torch float32 on CPU).
The fixture is a few hundred KB; the test compares adc_jax's logits with expected.npz (<= 1e-4).
"""

from __future__ import annotations

import argparse
import os

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="directory to write")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch
    import transformers
    from tokenizers import Tokenizer

    from adc_jax.models.tiny_gpt2 import END_OF_TEXT, train_tokenizer

    os.makedirs(args.output, exist_ok=True)
    captions = [
        "add a dog barking",
        "remove the footsteps and make the church bells louder",
        "the thunderstorm starts earlier, then a car horn is added",
        "make the chirping birds quieter",
    ] * 20
    tokenizer_json = train_tokenizer(captions, 384)
    with open(os.path.join(args.output, "tokenizer.json"), "w") as f:
        f.write(tokenizer_json)
    tokenizer = Tokenizer.from_str(tokenizer_json)
    eos = tokenizer.token_to_id(END_OF_TEXT)

    torch.manual_seed(args.seed)
    config = transformers.GPT2Config(
        vocab_size=384,
        n_positions=64,
        n_embd=32,
        n_layer=2,
        n_head=4,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or ".ln_" in name or "ln_f" in name:
                p.add_(0.1 * torch.randn_like(p))
            else:
                p.mul_(10.0)
    model.save_pretrained(args.output, safe_serialization=True)

    rng = np.random.default_rng(args.seed)
    text = tokenizer.encode(captions[1] + " " + captions[2]).ids[:24]
    ids = np.stack([np.array(text + [eos] * (24 - len(text))), rng.integers(0, 384, 24)])
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.numpy().astype(np.float32)
    np.savez(
        os.path.join(args.output, "expected.npz"),
        ids=ids.astype(np.int32),
        logits=logits,
        transformers_version=np.array(transformers.__version__),
        torch_version=np.array(torch.__version__),
    )
    print(f"Wrote {args.output}: logits {logits.shape}, |logits| max {np.abs(logits).max():.2f}")


if __name__ == "__main__":
    main()
