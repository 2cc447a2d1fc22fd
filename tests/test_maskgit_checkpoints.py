"""Released MaskGIT checkpoints: reduced-width files in the released pickle structures (optimizer state,
DDP / torch.compile prefixes, taming's loss.*, LlamaGen's args) load through weights-only unpickling;
malicious pickles are refused without running; the converter round trip is bit-exact (models.md 10, 11)."""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mgt_testing import optimizer_state, save_released_taming, save_released_v1

import mgt_core
from mgt_core.convert import main as convert_main
from mgt_core.errors import MGTLoadError
from mgt_core.loading.checkpoints import UnsafeCheckpointError, read_state_dict
from mgt_core.loading.maskgit import infer_vq_config, load_maskgit_files
from mgt_core.maskgit_pipeline import MaskGITPipeline
from mgt_core.models import configs as C
from mgt_core.models.halton import HaltonTransformer
from mgt_core.models.maskgit import MaskGITTransformer
from mgt_core.models.vq.vqgan import VQGAN, VQGANConfig

REPO = Path(__file__).resolve().parents[1]


def _random(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval().requires_grad_(False)


def _save(obj, path: Path, legacy: bool = False) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def released_v1(tmp: Path, legacy: bool = False) -> tuple[Path, MaskGITTransformer]:
    m = _random(MaskGITTransformer.from_config(C.tiny_maskgit()), 1)
    ref = {k: v.clone() for k, v in m.state_dict().items()}
    opt = optimizer_state(m)
    m.load_state_dict(ref)
    return save_released_v1(m, tmp / "MaskGIT_ImageNet_tiny.pth", legacy, opt), m


def released_taming(tmp: Path) -> tuple[Path, VQGAN]:
    v = _random(VQGAN.from_config(C.tiny_taming()), 2)
    return save_released_taming(v, tmp / "last.ckpt"), v


def released_halton(tmp: Path) -> tuple[Path, HaltonTransformer]:
    m = _random(HaltonTransformer.from_config(C.tiny_halton()), 3)
    sd = m.state_dict()
    assert "head.weight" in sd and "tok_emb.weight" in sd
    obj = {"iter": 50, "global_epoch": 1, "model_state_dict": {"module._orig_mod." + k: v for k, v in sd.items()},
           "optimizer_state_dict": None}
    return _save(obj, tmp / "ImageNet_256_tiny.pth"), m


def released_llamagen(tmp: Path) -> tuple[Path, VQGAN]:
    v = _random(VQGAN.from_config(C.tiny_llamagen()), 4)
    obj = {"model": v.state_dict(), "optimizer": optimizer_state(torch.nn.Linear(2, 2)),
           "discriminator": {"conv.weight": torch.randn(4, 3, 3, 3)}, "optimizer_disc": None, "steps": 400000,
           "args": argparse.Namespace(vq_model="VQ-16", codebook_size=16, lr=1e-4)}
    return _save(obj, tmp / "vq_ds16_c2i.pt"), v


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


def _logits(model, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = model.config.input_size
    tokens = torch.randint(0, model.config.codebook_size + 1, (2, s, s), generator=g)
    with torch.inference_mode():  # the same (fast-path) attention kernels for every model compared
        return model(tokens, torch.tensor([3, 7]), torch.tensor([False, True]))


def test_released_structures_load_weights_only(tmp_path):
    v1_path, v1 = released_v1(tmp_path)
    taming_path, taming = released_taming(tmp_path)
    p = load_maskgit_files(v1_path, taming_path, transformer_config=C.tiny_maskgit(), dtype=torch.float32)
    assert isinstance(p, MaskGITPipeline) and p.info.family == "maskgit-v1" and p.info.sampler == "confidence"
    _assert_same_state(p.transformer, v1)
    _assert_same_state(p.vq, taming)
    assert torch.equal(_logits(p.transformer), _logits(v1))
    assert p.info.steps == 8 and p.info.cfg_w == 3.0 and p.info.guidance_scale == 4.0
    assert p.info.width == 8 and p.grid == (4, 4) and p.mask_id == 16

    h_path, halton = released_halton(tmp_path)
    l_path, llama = released_llamagen(tmp_path)
    q = load_maskgit_files(h_path, l_path, transformer_config=C.tiny_halton(), dtype=torch.float32)
    assert q.info.family == "halton" and q.info.sampler == "halton" and q.info.steps == 32
    assert q.transformer.head.weight is q.transformer.tok_emb.weight
    _assert_same_state(q.transformer, halton)
    _assert_same_state(q.vq, llama)
    assert torch.equal(_logits(q.transformer), _logits(halton))


def test_legacy_pickle_format_loads(tmp_path):
    path, v1 = released_v1(tmp_path, legacy=True)
    state = read_state_dict(path)
    assert state.keys() == v1.state_dict().keys()


def test_taming_loss_keys_dropped_and_config_inferred(tmp_path):
    path, v = released_taming(tmp_path)
    state = read_state_dict(path)
    assert not any(k.startswith("loss.") for k in state)
    cfg = VQGANConfig.from_dict(infer_vq_config("taming", {k: t.shape for k, t in state.items()}, str(path)))
    assert cfg.attention_levels() == v.config.attention_levels() == {1}
    assert (cfg.ch, cfg.ch_mult, cfg.z_channels, cfg.n_embed) == (32, (1, 2), 8, 16)


def _payload(marker: Path):
    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').close()",))

    return Payload()


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, legacy):
    marker = tmp_path / "PWNED"
    m = _random(MaskGITTransformer.from_config(C.tiny_maskgit()), 1)
    evil = _save({"model_state_dict": m.state_dict(), "optimizer_state_dict": {"state": _payload(marker)}},
                 tmp_path / "evil.pth", legacy)
    taming_path, _ = released_taming(tmp_path)
    with pytest.raises(UnsafeCheckpointError, match=r"evil\.pth: refused.*exec.*Nothing in it was run"):
        load_maskgit_files(evil, taming_path, transformer_config=C.tiny_maskgit())
    out = tmp_path / "out"
    assert convert_main([str(evil), str(taming_path), str(out)]) == 2
    assert not out.exists()
    assert not marker.exists()


def test_plain_pickle_payload_is_refused(tmp_path):
    marker = tmp_path / "PWNED"
    path = tmp_path / "plain.pth"
    with open(path, "wb") as f:
        pickle.dump({"model_state_dict": _payload(marker)}, f)
    with pytest.raises(UnsafeCheckpointError, match="plain.pth: refused"):
        read_state_dict(path)
    assert not marker.exists()
    with open(path, "rb") as f:  # control: the payload is real, an ordinary unpickler runs it
        pickle.load(f)
    assert marker.exists()


def test_convert_round_trip_is_bit_exact(tmp_path):
    v1_path, v1 = released_v1(tmp_path)
    taming_path, taming = released_taming(tmp_path)
    out = tmp_path / "maskgit-tiny"
    cfg = tmp_path / "t.json"
    cfg.write_text(__import__("json").dumps(C.tiny_maskgit()))
    assert convert_main([str(taming_path), str(v1_path), str(out), "--transformer-config", str(cfg)]) == 0
    assert sorted(os.listdir(out)) == ["maskgit_index.json", "transformer", "vq"]
    p = mgt_core.load_pipeline(out, dtype=torch.float32)
    assert isinstance(p, MaskGITPipeline) and p.info.family == "maskgit-v1" and p.info.name == "maskgit-tiny"
    _assert_same_state(p.transformer, v1)
    _assert_same_state(p.vq, taming)
    assert torch.equal(_logits(p.transformer), _logits(v1))
    ids = torch.randint(0, 16, (1, 4, 4))
    assert torch.equal(p.vq.decode(ids), taming.decode(ids))
    img = p.decode(ids)
    assert img.shape == (1, 8, 8, 3) and img.dtype == torch.float32
    assert p.encode_image(img).shape == (1, 4, 4)


def test_convert_halton_stores_tied_head_once(tmp_path):
    from mgt_core.loading.safetensors_io import SafetensorsFile

    h_path, halton = released_halton(tmp_path)
    l_path, llama = released_llamagen(tmp_path)
    out = tmp_path / "halton-tiny"
    import json

    assert convert_main([str(h_path), str(l_path), str(out), "--transformer-config", json.dumps(C.tiny_halton())]) == 0
    keys = SafetensorsFile(out / "transformer" / "model.safetensors").tensors
    assert "head.weight" not in keys and "tok_emb.weight" in keys and len(keys) == 31
    p = mgt_core.load_pipeline(out, dtype=torch.float32)
    assert p.transformer.head.weight is p.transformer.tok_emb.weight
    _assert_same_state(p.transformer, halton)
    _assert_same_state(p.vq, llama)
    assert torch.equal(_logits(p.transformer), _logits(halton))
    half = tmp_path / "halton-bf16"
    assert convert_main([str(h_path), str(l_path), str(half), "--dtype", "bf16",
                         "--transformer-config", json.dumps(C.tiny_halton())]) == 0
    q = mgt_core.load_pipeline(half, dtype=torch.float32)
    assert torch.equal(q.transformer.tok_emb.weight, halton.tok_emb.weight.to(torch.bfloat16).float())


def test_wrong_keys_and_shapes_name_file_key_and_size(tmp_path):
    m = _random(MaskGITTransformer.from_config(C.tiny_maskgit()), 1)
    sd = dict(m.state_dict())
    sd["transformer.layers.1.1.fn.net.0.weight"] = torch.zeros(99, 64)
    del sd["last_layer.4.bias"]
    bad = _save({"model_state_dict": sd}, tmp_path / "bad.pth")
    taming_path, _ = released_taming(tmp_path)
    with pytest.raises(MGTLoadError) as e:
        load_maskgit_files(bad, taming_path, transformer_config=C.tiny_maskgit())
    msg = str(e.value)
    assert "bad.pth" in msg and "last_layer.4.bias" in msg
    assert "transformer.layers.1.1.fn.net.0.weight: file [99, 64], model [128, 64]" in msg
    # a transformer where the VQ belongs, and a VQ that does not fit the transformer
    v1_path, _ = released_v1(tmp_path)
    with pytest.raises(MGTLoadError, match="holds a maskgit-v1 model, expected taming or llamagen"):
        load_maskgit_files(v1_path, v1_path, transformer_config=C.tiny_maskgit())
    l_path, _ = released_llamagen(tmp_path)
    assert convert_main([str(v1_path), str(l_path), str(tmp_path / "x")]) == 1
    with pytest.raises(MGTLoadError, match="a llamagen VQGAN does not go with .*maskgit-v1.*taming"):
        load_maskgit_files(v1_path, l_path, transformer_config=C.tiny_maskgit())
    with pytest.raises(MGTLoadError, match="hidden width 64 is not the released MaskGIT v1"):
        load_maskgit_files(v1_path, taming_path)


def test_convert_cli_subprocess(tmp_path):
    """``python -m mgt_core.convert`` as users run it: refusal message and exit code 2."""
    marker = tmp_path / "PWNED"
    evil = _save({"model_state_dict": {"x": _payload(marker)}}, tmp_path / "evil.pth")
    taming_path, _ = released_taming(tmp_path)
    r = subprocess.run([sys.executable, "-m", "mgt_core.convert", str(evil), str(taming_path), str(tmp_path / "o")],
                       cwd=REPO, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    assert "evil.pth: refused" in r.stderr and "exec" in r.stderr
    assert not marker.exists() and not (tmp_path / "o").exists()


def test_save_folder_for_a_demo_model(tmp_path):
    """The path a built-in model takes: ``save_maskgit_folder`` straight from live modules (tied
    tensors included), index family "demo", its own sampler defaults overriding the family's."""
    from mgt_core.loading.maskgit import save_maskgit_folder

    m = _random(HaltonTransformer.from_config(C.tiny_halton()), 7)
    v = _random(VQGAN.from_config(C.tiny_llamagen()), 8)
    out = save_maskgit_folder(tmp_path / "demo", "demo", m.config.to_dict(), m.state_dict(), v.config.to_dict(),
                              v.state_dict(), defaults={"steps": 12, "cfg_w": 1.5, "class_names": ["a", "b"]})
    p = mgt_core.load_pipeline(out, dtype=torch.float32)
    assert p.info.family == "demo" and p.info.sampler == "halton" and p.info.steps == 12 and p.info.cfg_w == 1.5
    assert p.info.settings["class_names"] == ["a", "b"] and p.info.settings["sm_temp_max"] == 1.2
    assert p.transformer.head.weight is p.transformer.tok_emb.weight
    _assert_same_state(p.transformer, m)
    _assert_same_state(p.vq, v)
