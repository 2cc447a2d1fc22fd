"""ComfyUI entry point of the mgt-design-choices node pack.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint`` (V3 node schema).
Outside ComfyUI (unit tests, scripts using ``mgt_core``) ``comfy_api`` is missing and the
package still imports; only that one import is guarded, so a real error in the pack's own
code still fails loudly inside ComfyUI.
"""

NODE_IDS = (
    "MGTModelLoader", "MGTModelLoaderFiles", "MGTTextEncode", "MGTSampler", "MGTTomeMGT", "MGTVQDecode",
    "MGTVQEncode", "MGTSchedulePreview", "MGTClassLabel", "MGTMaskGITLoaderFiles",
)
"""Every node id the pack registers. Importable without ComfyUI, so the test harness can insist
that a real server lists each of them; the ComfyUI tests also check that the server lists no
other node of this pack, so a node added to ``nodes/`` without an entry here fails the suite."""

try:
    import comfy_api.latest  # noqa: F401
except ImportError:  # not running inside ComfyUI
    comfy_entrypoint = None
else:
    from .nodes import comfy_entrypoint  # noqa: F401

__all__ = ["NODE_IDS", "comfy_entrypoint"]
