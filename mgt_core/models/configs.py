"""The published configs (models.md sections 2.1, 4, 5) and the reduced-width test configs (11.1)."""

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
