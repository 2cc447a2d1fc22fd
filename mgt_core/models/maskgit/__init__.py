"""MaskGIT families: v1 (valeoai MaskGIT-pytorch) here, Halton-MaskGIT v2 in ``..halton``, their VQGANs in ``..vq.vqgan``.

API (stable names):
- ``MaskGITConfig`` / ``MaskGITTransformer.from_config(dict | MaskGITConfig)``: v1 transformer.
  ``model(tokens [B,S,S] long, labels [B] long, drop [B] bool | None) -> logits [B, S*S, codebook+1]``;
  ``.mask_id`` (= codebook size), ``.grid`` (S, S), ``.config.nclass``.
- ``HaltonConfig`` (``HaltonConfig.of_size("base", input_size=16)``) / ``HaltonTransformer.from_config``:
  same call signature and output; call ``tie_weights()`` after replacing ``tok_emb.weight``.
- ``VQGAN.from_config(dict | VQGANConfig)`` (``mgt_core.models.vq.vqgan``): layout "taming" (v1) or "llamagen"
  (Halton). ``decode(ids [B,h,w]) -> [B,3,H,W] in [0,1]``, ``decode_raw`` (the reference's [-1,1]),
  ``encode(images [B,3,H,W] in [0,1]) -> ids``, ``.factor``, ``.codebook_size``.
- ``MaskGITDenoiser(transformer, labels, mask_logit=False)`` / ``HaltonDenoiser``: the sampler engine's
  Denoiser; ``(tokens [B,h,w], t, branches) -> (uncond, cond)`` logits [B, K, h, w], K = codebook size
  (codebook + 1 with ``mask_logit=True``); the unconditional branch is the class-dropped one.
- Configs: ``mgt_core.models.configs``: ``MASKGIT_V1_256/512``, ``TAMING_VQGAN``, ``halton(size, px)``,
  ``HALTON_RELEASES``, ``LLAMAGEN_VQ16``; reduced width: ``tiny_maskgit``, ``tiny_halton``, ``tiny_taming``,
  ``tiny_llamagen``.
- Loading: ``mgt_core.load_pipeline(folder)`` on a converted folder, ``mgt_core.loading.maskgit`` for the
  released files (``load_maskgit_files``), ``python -m mgt_core.convert SRC... OUT``.
"""

from .denoiser import MaskGITDenoiser
from .transformer import MaskGITConfig, MaskGITTransformer

__all__ = ["MaskGITConfig", "MaskGITDenoiser", "MaskGITTransformer"]
