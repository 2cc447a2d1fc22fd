"""The real configs on the meta device: key counts, parameter counts and the published file sizes.

The byte size of a safetensors file depends on every key name and every shape digit, so matching
the published sizes checks the whole key layout against the real files without downloading them.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from mgt_core.loading.modules import meta_module, param_count
from mgt_core.loading.safetensors_io import safetensors_file_size
from mgt_core.models.configs import CLIP_H_TEXT, MEISSONIC_TRANSFORMER, MEISSONIC_VQ, MONETICO_TRANSFORMER
from mgt_core.models.meissonic import MeissonicTransformer
from mgt_core.models.text import build_clip_text
from mgt_core.models.vq import VQModel


def shapes_of(module, dtype):
    return {k: (tuple(v.shape), dtype) for k, v in module.state_dict().items()}


@pytest.mark.parametrize(
    "config, keys, params",
    [(MEISSONIC_TRANSFORMER, 867, 1_006_946_304), (MONETICO_TRANSFORMER, 863, 998_555_648)],
)
def test_transformer_manifest(config, keys, params):
    m = meta_module(lambda: MeissonicTransformer.from_config(config))
    sd = m.state_dict()
    assert len(sd) == keys
    assert param_count(m) == params
    assert sd["transformer_blocks.13.attn.to_q.weight"].shape == (1024, 1024)
    assert sd["single_transformer_blocks.27.proj_out.weight"].shape == (1024, 5120)
    assert sd["cond_embed.linear_1.weight"].shape == (1024, 2304)
    assert ("down_block.downsample.conv.weight" in sd) == config["downsample"]


def test_meissonic_published_sizes():
    m = meta_module(lambda: MeissonicTransformer.from_config(MEISSONIC_TRANSFORMER))
    assert safetensors_file_size(shapes_of(m, torch.float32), {"format": "pt"}) == 4_027_886_416
    assert safetensors_file_size(shapes_of(m, torch.float16)) == 2_013_993_248
    mono = meta_module(lambda: MeissonicTransformer.from_config(MONETICO_TRANSFORMER))
    assert safetensors_file_size(shapes_of(mono, torch.float32), {"format": "pt"}) == 3_994_323_336


def test_vq_manifest_and_sizes():
    m = meta_module(lambda: VQModel.from_config(MEISSONIC_VQ))
    sd = m.state_dict()
    assert len(sd) == 277 and param_count(m) == 146_244_675
    dec = [k for k in sd if k.startswith(("decoder.", "post_quant_conv", "quantize."))]
    enc = [k for k in sd if k.startswith(("encoder.", "quant_conv"))]
    assert len(dec) == 159 and sum(sd[k].numel() for k in dec) == 87_546_947
    assert len(enc) == 118 and sum(sd[k].numel() for k in enc) == 58_697_728
    assert sd["decoder.up_blocks.4.resnets.0.conv_shortcut.weight"].shape == (128, 256, 1, 1)
    assert safetensors_file_size(shapes_of(m, torch.float32), {"format": "pt"}) == 585_009_980
    assert safetensors_file_size(shapes_of(m, torch.float16), {"format": "pt"}) == 292_520_582


def test_clip_h_text_manifest():
    m = meta_module(lambda: build_clip_text(CLIP_H_TEXT))
    assert len(m.state_dict()) == 389 and param_count(m) == 354_032_640
    # 1.416 GB fp32 / 708 MB fp16 (published "1.42 GB" / "708 MB")
    assert round(safetensors_file_size(shapes_of(m, torch.float16)) / 1e6) == 708


def test_size_calculator_matches_safetensors(tmp_path):
    tensors = {
        "b.weight": torch.zeros(3, 5), "a.bias": torch.zeros(7, dtype=torch.float16), "c": torch.zeros(2, 2, 2, dtype=torch.bfloat16),
        "d": torch.zeros(1, dtype=torch.int64),
    }
    for meta in (None, {"format": "pt"}):
        path = tmp_path / "t.safetensors"
        save_file(tensors, str(path), metadata=meta)
        want = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
        assert safetensors_file_size(want, meta) == path.stat().st_size
