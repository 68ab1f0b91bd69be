"""The PyTorch baseline of the real-data acceptance run (bench/run_acceptance.sh):
the keras-book-style recipe on MobileNet alpha 0.25 at 224 px written the way a
PyTorch user would write it -- PIL decoding, torchvision transforms, a
DataLoader with 2 workers, the Keras weights loaded with h5py, fp32. The
augmentation is Keras ImageDataGenerator's, as transferd runs it
(bench/keras_augment.py: shear in degrees, two zoom factors, bilinear,
edges repeated), not torchvision's RandomAffine, whose semantics differ.

  stage 1: frozen base + augmentation, RMSprop 2e-5, --frozen-epochs (15)
  stage 2: conv_dw_12 onwards trainable, RMSprop 1e-5, --tune-epochs (5);
           with --bn-inference every BatchNorm stays in inference mode (Keras'
           training=False), as the transferd job's batchNormInference does
  head:    Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(1, sigmoid)

With a test/ folder beside train/ and validation/, the model of the best
validation epoch is scored on it (what transferd keeps and the acceptance
script's PREDICT job scores).

Prints one JSON line per epoch and a final summary line.
Run with Debian's interpreter: /usr/bin/python3 bench/acceptance_baseline.py DATA WEIGHTS.h5
"""
import argparse
import json
import os
import time

import h5py
import numpy as np
import torch
import torch.nn as nn
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from keras_augment import KerasAugment


class Folder(Dataset):
    def __init__(self, root, transform):
        self.files = sorted(os.path.join(root, f) for f in os.listdir(root)
                            if f.endswith(".jpg"))
        self.transform = transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        path = self.files[i]
        label = 1.0 if os.path.basename(path).startswith("dog") else 0.0
        with Image.open(path) as img:
            return self.transform(img.convert("RGB")), torch.tensor([label])


def mobilenet_v1(alpha):
    """Keras MobileNet v1 (include_top=False); returns (model, [(keras name, module)])."""
    names = []

    def conv_bn(name, conv, c, seq):
        bn = nn.BatchNorm2d(c, eps=1e-3, momentum=0.01)
        seq += [conv, bn, nn.ReLU6()]
        names.append((name, conv))
        names.append((name + "_bn", bn))

    seq = []
    first = int(32 * alpha)
    seq.append(nn.ZeroPad2d((0, 1, 0, 1)))  # Keras 'same' with stride 2
    conv_bn("conv1", nn.Conv2d(3, first, 3, 2, bias=False), first, seq)
    filters = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    c = first
    for i, (f, s) in enumerate(zip(filters, strides), start=1):
        out = int(f * alpha)
        if s == 2:
            seq.append(nn.ZeroPad2d((0, 1, 0, 1)))
            dw = nn.Conv2d(c, c, 3, 2, groups=c, bias=False)
        else:
            dw = nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)
        conv_bn(f"conv_dw_{i}", dw, c, seq)
        conv_bn(f"conv_pw_{i}", nn.Conv2d(c, out, 1, bias=False), out, seq)
        c = out
    return nn.Sequential(*seq), names, c


def load_keras(names, path):
    with h5py.File(path, "r") as f:
        for name, module in names:
            g = f[name][name]
            if isinstance(module, nn.Conv2d):
                key = "depthwise_kernel:0" if module.groups > 1 else "kernel:0"
                k = np.array(g[key])
                # Keras HWIO (depthwise: H W C 1) -> torch OIHW (C 1 H W).
                w = k.transpose(2, 3, 0, 1) if module.groups > 1 else k.transpose(3, 2, 0, 1)
                module.weight.data.copy_(torch.from_numpy(np.ascontiguousarray(w)))
                if module.bias is not None:  # VGG's convolutions have biases
                    module.bias.data.copy_(torch.from_numpy(np.array(g["bias:0"])))
            else:
                module.weight.data.copy_(torch.from_numpy(np.array(g["gamma:0"])))
                module.bias.data.copy_(torch.from_numpy(np.array(g["beta:0"])))
                module.running_mean.copy_(torch.from_numpy(np.array(g["moving_mean:0"])))
                module.running_var.copy_(torch.from_numpy(np.array(g["moving_variance:0"])))


def recipe_parser(backbones=None):
    """The command line both PyTorch pipelines take. With `backbones` (backbone
    name -> its default input size; the first is the default backbone) it also
    takes --backbone, WEIGHTS may be omitted or 'none' (random initialisation)
    and --size defaults to the backbone's."""
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    if backbones:
        ap.add_argument("weights", nargs="?",
                        help="Keras .h5 weights file, or none: random initialisation "
                             "(the default for every backbone but mobilenet)")
        ap.add_argument("--backbone", choices=list(backbones), default=next(iter(backbones)))
    else:
        ap.add_argument("weights")
    ap.add_argument("--frozen-epochs", type=int, default=15)
    ap.add_argument("--tune-epochs", type=int, default=5)
    if backbones:
        ap.add_argument("--size", type=int, help="input size in pixels (default: " + ", ".join(
            f"{size} for {name}" for name, size in backbones.items()) + ")")
    else:
        ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--bn-inference", action="store_true",
                    help="keep the fine-tuned layers' BatchNorm in inference mode")
    ap.add_argument("--seed", type=int, default=1)
    return ap


def keras_head(channels, feat, init="glorot"):
    """Flatten -> Dense(256, relu) -> Dropout(0.5) -> Dense(1), Glorot-uniform
    weights and zero biases (Keras' initialisation, as transferd's default);
    init="torch" keeps nn.Linear's own (transferd's head init TORCH)."""
    head = nn.Sequential(nn.Flatten(), nn.Linear(channels * feat * feat, 256), nn.ReLU(),
                         nn.Dropout(0.5), nn.Linear(256, 1))
    if init == "glorot":
        for m in head:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
    return head


def tune_start(base, names):
    """Index in `base` where fine-tuning starts: conv_dw_12 (or its padding)."""
    i = next(i for i, m in enumerate(base) if m is dict(names)["conv_dw_12"])
    return i - 1 if isinstance(base[i - 1], nn.ZeroPad2d) else i


def run_epoch(model, base, frozen_upto, loader, optimizer, train, bn_inference=False):
    model.train(train)
    if train:
        # Frozen layers' BatchNorm stays in inference mode (Keras semantics);
        # with bn_inference the trainable ones too.
        for i, m in enumerate(base):
            if (i < frozen_upto or bn_inference) and isinstance(m, nn.BatchNorm2d):
                m.eval()
    loss_fn = nn.BCEWithLogitsLoss()
    total, correct, loss_sum = 0, 0, 0.0
    with torch.set_grad_enabled(train):
        for x, y in loader:
            logits = model(x)
            loss = loss_fn(logits, y)
            if train:
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            loss_sum += loss.item() * len(y)
            correct += ((logits > 0).float() == y).sum().item()
            total += len(y)
    return loss_sum / total, correct / total


def main():
    args = recipe_parser().parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(os.cpu_count() or 2)

    # Keras 'tf' preprocessing: x / 127.5 - 1.
    norm = [transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)]
    size = (args.size, args.size)
    augmented = transforms.Compose([transforms.Resize(size), KerasAugment()] + norm)
    plain = transforms.Compose([transforms.Resize(size)] + norm)
    train = DataLoader(Folder(os.path.join(args.data, "train"), augmented), batch_size=20,
                       shuffle=True, num_workers=2, persistent_workers=True)
    val = DataLoader(Folder(os.path.join(args.data, "validation"), plain), batch_size=20,
                     num_workers=2, persistent_workers=True)
    test_dir = os.path.join(args.data, "test")
    test = (DataLoader(Folder(test_dir, plain), batch_size=20, num_workers=2)
            if os.path.isdir(test_dir) else None)

    base, names, channels = mobilenet_v1(0.25)
    load_keras(names, args.weights)
    feat = args.size // 32
    model = nn.Sequential(base, keras_head(channels, feat))
    tune_from = tune_start(base, names)  # layers before it stay frozen

    start = time.perf_counter()
    best, val_acc, test_acc = -1.0, 0.0, None
    epoch = 0
    stages = [(len(base), 2e-5, args.frozen_epochs), (tune_from, 1e-5, args.tune_epochs)]
    for frozen_upto, lr, epochs in stages:
        for i, m in enumerate(base):
            for p in m.parameters():
                p.requires_grad = i >= frozen_upto
        params = [p for p in model.parameters() if p.requires_grad]
        # Keras RMSprop: rho 0.9, epsilon 1e-7.
        optimizer = torch.optim.RMSprop(params, lr=lr, alpha=0.9, eps=1e-7)
        for _ in range(epochs):
            epoch += 1
            t0 = time.perf_counter()
            loss, acc = run_epoch(model, base, frozen_upto, train, optimizer, True,
                                  args.bn_inference)
            val_loss, val_acc = run_epoch(model, base, len(base), val, None, False)
            if val_acc > best:
                best = val_acc
                if test is not None:
                    test_acc = run_epoch(model, base, len(base), test, None, False)[1]
            print(json.dumps({"epoch": epoch, "loss": loss, "accuracy": acc, "val_loss": val_loss,
                              "val_accuracy": val_acc,
                              "seconds": time.perf_counter() - t0}), flush=True)
    wall = time.perf_counter() - start
    images = epoch * len(train.dataset)
    print(json.dumps({"summary": True, "epochs": epoch, "best_val_accuracy": best,
                      "last_val_accuracy": val_acc, "test_accuracy": test_acc,
                      "wall_seconds": wall, "images_per_second": images / wall}), flush=True)


if __name__ == "__main__":
    main()
