"""Renderer speed: images per second on one core, at 64, 128 and 256 px (target ≥ 200/s at 64)."""
import time

import torch

from ganpaint.world.scenes import render

torch.set_num_threads(1)
for size, n in ((64, 1000), (128, 400), (256, 150)):
    render(0, size)
    t = time.perf_counter()
    for s in range(n):
        render(s, size)
    rate = n / (time.perf_counter() - t)
    print(f"render {size:>3} px: {rate:7.1f} images/s" + (f"   (target 200: {rate / 200:.2f}×)" if size == 64 else ""))
