from .vqmodel import VQConfig, VQModel

__all__ = ["VQConfig", "VQModel"]
