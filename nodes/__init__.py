"""ComfyUI nodes of the pack (V3 schema). Imported only inside ComfyUI, see the pack root.

Every module here is a thin adapter over ``mgt_core``. Imports must be relative: ComfyUI loads
the pack under a synthetic module name, never as ``mgt_design_choices``.
"""

from comfy_api.latest import ComfyExtension, io

from .class_label import MGTClassLabel
from .conditioning import MGTTextEncode
from .loader import MGTMaskGITLoaderFiles, MGTModelLoader, MGTModelLoaderFiles
from .sampler import MGTSampler
from .schedule_preview import MGTSchedulePreview
from .tome import MGTTomeMGT
from .vq import MGTVQDecode, MGTVQEncode

NODES: list[type[io.ComfyNode]] = [
    MGTModelLoader, MGTModelLoaderFiles, MGTTextEncode, MGTSampler, MGTTomeMGT, MGTVQDecode, MGTVQEncode,
    MGTSchedulePreview, MGTClassLabel, MGTMaskGITLoaderFiles,
]


class MGTExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return list(NODES)


async def comfy_entrypoint() -> MGTExtension:
    return MGTExtension()
