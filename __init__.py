"""ComfyUI entry point of the mgt-design-choices node pack.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint`` (V3 node schema).
Outside ComfyUI (unit tests, scripts using ``mgt_core``) ``comfy_api`` is missing and the
package still imports; only that one import is guarded, so a real error in the pack's own
code still fails loudly inside ComfyUI.
"""

try:
    import comfy_api.latest  # noqa: F401
except ImportError:  # not running inside ComfyUI
    comfy_entrypoint = None
else:
    from .nodes import comfy_entrypoint  # noqa: F401

__all__ = ["comfy_entrypoint"]
