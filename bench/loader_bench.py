"""The Python baseline of loader_bench: a torchvision pipeline as a PyTorch
user writes it (PIL decode, Resize to 150x150, RandomAffine + horizontal flip
for the keras-book augmentation, ToTensor + Normalize), DataLoader with batch
20 and 1 or 2 worker processes. Prints JSON lines.

Run with Debian's interpreter: /usr/bin/python3 bench/loader_bench.py DIR
"""
import argparse
import json
import os
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class Folder(Dataset):
    def __init__(self, root, transform):
        self.files = sorted(os.path.join(root, f) for f in os.listdir(root))
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        label = 1 if os.path.basename(path).startswith("dog") else 0
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), label


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    norm = [transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])]
    plain = transforms.Compose([transforms.Resize((150, 150))] + norm)
    augmented = transforms.Compose([
        transforms.Resize((150, 150)),
        transforms.RandomAffine(degrees=40, translate=(0.2, 0.2), scale=(0.8, 1.2), shear=0.2),
        transforms.RandomHorizontalFlip()] + norm)
    for augment, tf in ((False, plain), (True, augmented)):
        for workers in (1, 2):
            loader = DataLoader(Folder(args.dir, tf), batch_size=20, shuffle=True,
                                num_workers=workers, persistent_workers=True,
                                prefetch_factor=4)
            images, seconds = 0, 0.0
            for epoch in range(args.epochs + 1):  # epoch 0 warms up
                start = time.perf_counter()
                n = sum(x.shape[0] for x, _ in loader)
                if epoch > 0:
                    images += n
                    seconds += time.perf_counter() - start
            print(json.dumps({"impl": "python", "augment": augment, "workers": workers,
                              "images_per_second": round(images / seconds, 1)}), flush=True)


if __name__ == "__main__":
    main()
