from .denoiser import HaltonDenoiser
from .transformer import SIZES, HaltonConfig, HaltonTransformer

__all__ = ["SIZES", "HaltonConfig", "HaltonDenoiser", "HaltonTransformer"]
