"""Transfer learning: pretrained backbones, freeze policies, heads and fine-tuning.

Not built yet; the foundation leaves this home for it (see the README).
"""
