"""Synthetic text-to-image domain for the pack's small, genuinely trained demo model.

``scenes``: seeded scenes, prompt grammar, splits and renderer; ``judge``: exact programmatic
evaluator (the offline stand-in for HPS v2 winning rates); ``tokenizer``: CLIP-format BPE files in
which every grammar word is one token. Modules are imported explicitly (``tokenizer`` needs
transformers; the others only numpy and PIL).
"""
