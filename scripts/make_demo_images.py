"""Writes the demo's small labelled image set: JPEGs of circles and squares in
random colours, positions and sizes over noisy backgrounds, in the Keras
flow_from_directory layout (train/circle/*.jpg, validation/square/*.jpg ...).
Deterministic for a seed; uses only Debian's python3 with PIL (a dependency of
python3-torchvision, which scripts/install-deps installs).

  /usr/bin/python3 scripts/make_demo_images.py OUT [--train 60] [--validation 20]
"""
import argparse
import os
import random

from PIL import Image, ImageDraw


def draw(shape, size, rng):
    bg = tuple(rng.randrange(0, 120) for _ in range(3))
    img = Image.new("RGB", (size, size), bg)
    px = img.load()
    for _ in range(size * size // 8):  # speckle noise
        x, y = rng.randrange(size), rng.randrange(size)
        px[x, y] = tuple(min(255, c + rng.randrange(0, 60)) for c in bg)
    d = ImageDraw.Draw(img)
    r = rng.randrange(size // 6, size // 3)
    cx, cy = rng.randrange(r, size - r), rng.randrange(r, size - r)
    fill = tuple(rng.randrange(130, 256) for _ in range(3))
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "circle":
        d.ellipse(box, fill=fill)
    else:
        d.rectangle(box, fill=fill)
    return img


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=150, help="images per class")
    ap.add_argument("--validation", type=int, default=40, help="images per class")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    for split, n in (("train", args.train), ("validation", args.validation)):
        for shape in ("circle", "square"):
            folder = os.path.join(args.out, split, shape)
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                draw(shape, args.size, rng).save(os.path.join(folder, f"{shape}{i}.jpg"),
                                                 quality=90)
    print(f"{2 * (args.train + args.validation)} images in {args.out}")


if __name__ == "__main__":
    main()
