from .transformer import MeissonicConfig, MeissonicTransformer

__all__ = ["MeissonicConfig", "MeissonicTransformer"]
