"""The published configs (models.md sections 2.1, 4, 5, 7, 8) and the reduced-width test configs (11.1)."""

from __future__ import annotations

MEISSONIC_TRANSFORMER = {
    "_class_name": "Transformer2DModel", "_diffusers_version": "0.30.2", "attention_head_dim": 128,
    "axes_dims_rope": [16, 56, 56], "codebook_size": 8192, "downsample": True, "guidance_embeds": False,
    "in_channels": 64, "joint_attention_dim": 1024, "num_attention_heads": 8, "num_layers": 14,
    "num_single_layers": 28, "patch_size": 1, "pooled_projection_dim": 1024, "upsample": True, "vocab_size": 8256,
}
MONETICO_TRANSFORMER = {**MEISSONIC_TRANSFORMER, "downsample": False, "upsample": False}

MEISSONIC_VQ = {
    "_class_name": "VQModel", "_diffusers_version": "0.30.2", "act_fn": "silu",
    "block_out_channels": [128, 256, 256, 512, 768], "down_block_types": ["DownEncoderBlock2D"] * 5,
    "in_channels": 3, "latent_channels": 64, "layers_per_block": 2, "lookup_from_codebook": True,
    "mid_block_add_attention": False, "norm_num_groups": 32, "norm_type": "group", "num_vq_embeddings": 8192,
    "out_channels": 3, "sample_size": 32, "scaling_factor": 0.18215, "up_block_types": ["UpDecoderBlock2D"] * 5,
    "vq_embed_dim": None, "force_upcast": True,
}

CLIP_H_TEXT = {
    "architectures": ["CLIPTextModelWithProjection"], "model_type": "clip_text_model", "vocab_size": 49408,
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "max_position_embeddings": 77, "hidden_act": "gelu", "layer_norm_eps": 1e-5, "projection_dim": 1024,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}

SCHEDULER = {"_class_name": "Scheduler", "_diffusers_version": "0.30.2", "mask_token_id": 8255, "masking_schedule": "cosine"}

MODEL_INDEX = {
    "_class_name": "Pipeline", "_diffusers_version": "0.30.2",
    "scheduler": ["scheduler", "Scheduler"], "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "tokenizer": ["transformers", "CLIPTokenizer"], "transformer": ["transformer", "Transformer2DModel"],
    "vqvae": ["diffusers", "VQModel"],
}


def tiny_transformer(downsample: bool = True, layers: int = 1, single_layers: int = 2) -> dict:
    """Reduced width with the real key layout: 2 heads x 16, rope [4, 6, 6], codebook 64 (mask id 79)."""
    return {
        **MEISSONIC_TRANSFORMER, "num_attention_heads": 2, "attention_head_dim": 16, "axes_dims_rope": [4, 6, 6],
        "pooled_projection_dim": 32, "joint_attention_dim": 24, "num_layers": layers,
        "num_single_layers": single_layers, "vocab_size": 80, "codebook_size": 64,
        "downsample": downsample, "upsample": downsample,
    }


def tiny_vq(codebook: int = 64) -> dict:
    """Factor 4 (3 levels), 8 groups."""
    return {
        **MEISSONIC_VQ, "block_out_channels": [32, 32, 64], "down_block_types": ["DownEncoderBlock2D"] * 3,
        "up_block_types": ["UpDecoderBlock2D"] * 3, "norm_num_groups": 8, "latent_channels": 8,
        "layers_per_block": 1, "num_vq_embeddings": codebook,
    }


def tiny_clip_text(vocab_size: int = 624, positions: int = 24) -> dict:
    return {
        **CLIP_H_TEXT, "vocab_size": vocab_size, "hidden_size": 24, "intermediate_size": 64,
        "num_attention_heads": 4, "num_hidden_layers": 3, "projection_dim": 32,
        "max_position_embeddings": positions, "bos_token_id": vocab_size - 2, "eos_token_id": vocab_size - 1,
        "pad_token_id": vocab_size - 1,
    }


# ---- MaskGIT v1 (valeoai MaskGIT-pytorch v1) and Halton-MaskGIT v2 (models.md sections 7, 8) ----

MASKGIT_V1_256 = {
    "family": "maskgit-v1", "input_size": 16, "hidden_dim": 768, "depth": 24, "heads": 16, "mlp_dim": 3072,
    "codebook_size": 1024, "nclass": 1000,
}
MASKGIT_V1_512 = {**MASKGIT_V1_256, "input_size": 32}

TAMING_VQGAN = {  # pretrained_maskgit/VQGAN model.yaml (the same VQGAN serves 256 and 512 px)
    "layout": "taming", "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "z_channels": 256,
    "embed_dim": 256, "n_embed": 1024, "attn_resolutions": [16], "resolution": 256, "in_channels": 3, "out_ch": 3,
    "l2_norm": False, "codebook_used": 0,
}

LLAMAGEN_VQ16 = {  # LlamaGen VQ_models["VQ-16"](codebook_size=16384, codebook_embed_dim=8), vq_ds16_c2i.pt
    "layout": "llamagen", "ch": 128, "ch_mult": [1, 1, 2, 2, 4], "num_res_blocks": 2, "z_channels": 256,
    "embed_dim": 8, "n_embed": 16384, "attn_resolutions": [], "resolution": 256, "in_channels": 3, "out_ch": 3,
    "l2_norm": True, "codebook_used": 65536,
}

_HALTON_SIZES = {"tiny": (384, 6, 6), "small": (512, 12, 6), "base": (768, 12, 12), "large": (1024, 24, 16)}


def halton(size: str, image_size: int = 256) -> dict:
    """A published Halton-MaskGIT config: ``size`` tiny/small/base (256 px) or small/base/large (384 px)."""
    d, depth, heads = _HALTON_SIZES[size]
    return {
        "family": "halton", "input_size": image_size // 16, "hidden_dim": d, "depth": depth, "heads": heads,
        "mlp_dim": 4 * d, "codebook_size": 16384, "nclass": 1000, "register": 1, "proj": 1,
    }


# the released files: ImageNet_{256,384}_{size}.pth
HALTON_RELEASES = {f"ImageNet_{px}_{size}": halton(size, px) for px, sizes in
                   ((256, ("tiny", "small", "base")), (384, ("small", "base", "large"))) for size in sizes}


def tiny_maskgit(codebook: int = 16, nclass: int = 10, input_size: int = 4, depth: int = 2) -> dict:
    """models.md 11.1: hidden 64, depth 2, heads 4, mlp 128 -> 41 keys at depth 2."""
    return {**MASKGIT_V1_256, "input_size": input_size, "hidden_dim": 64, "depth": depth, "heads": 4, "mlp_dim": 128,
            "codebook_size": codebook, "nclass": nclass}


def tiny_halton(codebook: int = 16, nclass: int = 10, input_size: int = 4, depth: int = 2, heads: int = 4) -> dict:
    """models.md 11.1: hidden 64, depth 2, heads 4, mlp 256 (SwiGLU 256) -> 32 keys at depth 2."""
    return {**halton("tiny"), "input_size": input_size, "hidden_dim": 64, "depth": depth, "heads": heads,
            "mlp_dim": 256, "codebook_size": codebook, "nclass": nclass}


def tiny_taming(n_embed: int = 16, embed_dim: int = 8) -> dict:
    """models.md 11.1: ch 32, ch_mult [1, 2], z 8, attention at 8 px (of resolution 16: the lower level), factor 2."""
    return {**TAMING_VQGAN, "ch": 32, "ch_mult": [1, 2], "z_channels": 8, "embed_dim": embed_dim, "n_embed": n_embed,
            "attn_resolutions": [8], "resolution": 16}


def tiny_llamagen(n_embed: int = 16, embed_dim: int = 8) -> dict:
    """models.md 11.1: ch fixed at 128; ch_mult [1, 2], z 32, factor 2 (about 15 M params, CPU-fast)."""
    return {**LLAMAGEN_VQ16, "ch_mult": [1, 2], "z_channels": 32, "embed_dim": embed_dim, "n_embed": n_embed,
            "codebook_used": 64}
