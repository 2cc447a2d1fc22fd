"""Dev check: our transformer against the official Meissonic class, max |diff| per dtype.

Needs what the pack never ships: the official ``src/transformer.py`` of viiika/Meissonic and a
diffusers release it runs with (0.31.0 - 0.39.0; 0.31.0 for exact bf16/fp16). For example:

    pip install --no-deps --target /tmp/diff031 diffusers==0.31.0
    python tools/parity_official.py --official /path/to/Meissonic/src --diffusers /tmp/diff031

Random N(0, 0.2) weights, 2 dual + 3 single blocks, an 8x6 token grid, both down-sampling settings.
Measured here: max |diff| = 0.0 in fp32, bf16 and fp16 for both (diffusers 0.31.0, torch 2.13 CPU).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--official", required=True, help="folder holding the official transformer.py")
    ap.add_argument("--diffusers", help="a site folder with diffusers 0.31-0.39, put first on sys.path")
    args = ap.parse_args()
    sys.path[:0] = [p for p in (args.diffusers, args.official, str(REPO)) if p]
    from transformer import Transformer2DModel  # the official module

    from mgt_core.models.configs import tiny_transformer
    from mgt_core.models.meissonic import MeissonicTransformer

    torch.manual_seed(0)
    for down in (True, False):
        cfg = {**tiny_transformer(down, layers=2, single_layers=3)}
        ref = Transformer2DModel(**{k: v for k, v in cfg.items() if not k.startswith("_")})
        state = {k: torch.randn_like(v) * 0.2 for k, v in ref.state_dict().items()}
        ref.load_state_dict(state)
        ours = MeissonicTransformer.from_config(cfg)
        ours.load_state_dict(state, strict=True)
        b, h, w = 2, 8, 6
        ids = torch.randint(0, cfg["vocab_size"], (b, h, w))
        ids[:, :3] = cfg["vocab_size"] - 1
        text, pooled = torch.randn(b, 7, cfg["joint_attention_dim"]), torch.randn(b, cfg["pooled_projection_dim"])
        micro = torch.tensor([[w * 16.0, h * 16.0, 0, 0, 6]]).expand(b, -1)
        gh, gw = (h // 2, w // 2) if down else (h, w)
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            ref, ours = ref.to(dtype), ours.to(dtype)
            img_ids = torch.zeros(gh, gw, 3)
            img_ids[..., 1] += torch.arange(gh)[:, None]
            img_ids[..., 2] += torch.arange(gw)[None]
            with torch.no_grad():
                a = ref(hidden_states=ids, encoder_hidden_states=text.to(dtype), pooled_projections=pooled.to(dtype),
                        timestep=torch.tensor([5]), img_ids=img_ids.reshape(-1, 3).to(dtype),
                        txt_ids=torch.zeros(7, 3, dtype=dtype), micro_conds=micro.to(dtype), return_dict=False)[0]
                o = ours(ids, text.to(dtype), pooled.to(dtype), 5, micro.to(dtype))
            print(f"downsample={down!s:5} {str(dtype):15} max |diff| = {(a.float() - o.float()).abs().max().item()}")


if __name__ == "__main__":
    main()
