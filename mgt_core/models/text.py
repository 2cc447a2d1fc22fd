"""CLIP text conditioning for Meissonic/Monetico: penultimate hidden states + projected pooled embedding.

Built with ``transformers.CLIPTextModelWithProjection`` from a config dict (never from a hub id,
never running code from a model folder). The hidden states are the output of the second-to-last
layer *before* the final LayerNorm; ComfyUI's stock CLIP-H applies that LayerNorm, so a stock
``CONDITIONING`` does not match these models and the pack has its own encode path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import MGTInputError, MGTLoadError


def clip_text_config(config: dict, source: str = "text_encoder/config.json"):
    from transformers import CLIPTextConfig

    missing = [k for k in ("hidden_size", "num_hidden_layers", "vocab_size") if k not in config]
    if missing:
        raise MGTLoadError(f"{source}: missing {', '.join(missing)}; is this a CLIP text encoder config?")
    keep = {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures", "transformers_version")}
    cfg = CLIPTextConfig(**keep)
    cfg._attn_implementation = "sdpa"
    return cfg


def build_clip_text(config: dict, source: str = "text_encoder/config.json") -> nn.Module:
    """A CLIPTextModelWithProjection; works under ``torch.device("meta")``."""
    from transformers import CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(clip_text_config(config, source))


def infer_clip_text_config(shapes: dict[str, tuple[int, ...]], source: str) -> dict:
    """Config of a text tower from its tensor shapes (a single file without config.json)."""
    try:
        vocab, hidden = shapes["text_model.embeddings.token_embedding.weight"]
        positions = shapes["text_model.embeddings.position_embedding.weight"][0]
        inter = shapes["text_model.encoder.layers.0.mlp.fc1.weight"][0]
        proj = shapes["text_projection.weight"][0]
    except KeyError as e:
        raise MGTLoadError(f"{source}: no {e.args[0]}; is this a CLIP text encoder (with projection)?") from None
    layers = 1 + max(int(k.split(".")[3]) for k in shapes if k.startswith("text_model.encoder.layers."))
    return {
        "vocab_size": vocab, "hidden_size": hidden, "intermediate_size": inter, "projection_dim": proj,
        "num_hidden_layers": layers, "num_attention_heads": max(1, hidden // 64),
        "max_position_embeddings": positions, "hidden_act": "gelu", "layer_norm_eps": 1e-5,
        "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
    }


def finish_meta_buffers(model: nn.Module, device: torch.device) -> None:
    """Non-persistent buffers are not in checkpoints; rebuild those left on the meta device."""
    for name, module in model.named_modules():
        for bname, buf in list(module.named_buffers(recurse=False)):
            if buf is not None and buf.is_meta:
                if bname == "position_ids":
                    module.register_buffer(bname, torch.arange(buf.shape[-1], device=device).expand(buf.shape), persistent=False)
                else:
                    raise MGTLoadError(f"buffer {name}.{bname} was not in the checkpoint and cannot be rebuilt")


@dataclass
class TextConditioning:
    """Encoded prompts: hidden [B, Lt, D] (penultimate layer, no final LN) and pooled [B, P]."""

    hidden: torch.Tensor
    pooled: torch.Tensor
    prompts: list[str]

    def to(self, device=None, dtype=None) -> TextConditioning:
        return TextConditioning(self.hidden.to(device=device, dtype=dtype), self.pooled.to(device=device, dtype=dtype), self.prompts)

    def repeat(self, n: int) -> TextConditioning:
        """Each prompt n times in a row (images per prompt)."""
        return TextConditioning(
            self.hidden.repeat_interleave(n, 0), self.pooled.repeat_interleave(n, 0), [p for p in self.prompts for _ in range(n)]
        )

    def __len__(self) -> int:
        return self.hidden.shape[0]


def max_text_length(tokenizer, model: nn.Module) -> int:
    limit = int(model.config.max_position_embeddings)
    n = getattr(tokenizer, "model_max_length", limit) or limit
    return min(int(n), limit)


def prompt_warnings(tokenizer, prompts, max_length: int, known_words=None) -> list[str]:
    """One line per prompt the encoder will not read as written: past ``max_length`` tokens (the rest
    is cut off), or, given a model's whole vocabulary of words, with words outside it."""
    notes = []
    known = set(known_words) if known_words is not None else None
    for prompt in dict.fromkeys(prompts):  # each distinct prompt once
        ids = tokenizer(prompt, truncation=False, verbose=False).input_ids
        if len(ids) > max_length:
            kept = tokenizer.decode(ids[1:max_length - 1]).strip()
            notes.append(f"prompt {prompt[:60]!r} is {len(ids)} tokens but the text encoder reads {max_length}: "
                         f"everything after ...{kept[-40:]!r} is ignored")
        if known is not None:
            unknown = sorted({w for w in re.findall(r"[a-z]+", prompt.lower()) if w not in known})
            if unknown:
                notes.append(f"prompt {prompt[:60]!r} has words the model was never trained on: {', '.join(unknown)} "
                             f"(it knows {len(known)} words: {', '.join(sorted(known)[:12])}, ...)")
    return notes


@torch.no_grad()
def encode_text(model: nn.Module, tokenizer, prompts: str | list[str]) -> TextConditioning:
    """Tokenize to the full length (padding included: every position reaches the transformer)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise MGTInputError("prompts must be a non-empty list of strings")
    n = max_text_length(tokenizer, model)
    ids = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=n, return_tensors="pt").input_ids
    device = next(model.parameters()).device
    out = model(input_ids=ids.to(device), output_hidden_states=True)
    return TextConditioning(out.hidden_states[-2], out.text_embeds, list(prompts))


def load_tokenizer(folder: str):
    """A CLIPTokenizer from local files only (vocab.json, merges.txt and the special-token files)."""
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as e:
        raise MGTLoadError(f"{folder}: cannot load a CLIP tokenizer from these files ({e})") from None
