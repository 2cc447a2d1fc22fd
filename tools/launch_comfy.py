"""Start an unmodified ComfyUI: ``python tools/launch_comfy.py <ComfyUI dir> [main.py args...]``.

Does what ``cd ComfyUI && python main.py`` would, plus the torchvision CPU shim (see
torchvision_shim.py), which must be installed before ComfyUI imports torchvision.
"""

import importlib.util
import os
import runpy
import sys
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    comfy = Path(sys.argv[1]).resolve()
    shim = Path(__file__).resolve().with_name("torchvision_shim.py")
    spec = importlib.util.spec_from_file_location("mgt_torchvision_shim_launcher", shim)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))  # installs itself on import
    # As if main.py were the script: its folder first on sys.path (not tools/), cwd there.
    sys.path[0] = str(comfy)
    sys.argv = [str(comfy / "main.py"), *sys.argv[2:]]
    os.chdir(comfy)
    runpy.run_path(str(comfy / "main.py"), run_name="__main__")


if __name__ == "__main__":
    main()
