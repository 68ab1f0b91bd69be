"""The Python torch baseline of backbone_bench: the same conv-base forwards
(batch 32; VGG16 at 150 px via torchvision, Keras MobileNet alpha 0.25 at 224
px written as a PyTorch user would) in the same variants. Prints JSON lines.

Run with Debian's interpreter: /usr/bin/python3 bench/backbone_bench.py
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torchvision


def mobilenet_v1(alpha=0.25):
    def bn_relu(c):
        return [nn.BatchNorm2d(c, eps=1e-3), nn.ReLU6()]

    first = int(32 * alpha)
    # Keras conv1: 'same' with stride 2 pads bottom/right (even input).
    layers = [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, first, 3, 2, bias=False)]
    layers += bn_relu(first)
    filters = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    strides = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    c = first
    for f, s in zip(filters, strides):
        out = int(f * alpha)
        if s == 2:
            layers += [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(c, c, 3, 2, groups=c, bias=False)]
        else:
            layers += [nn.Conv2d(c, c, 3, 1, 1, groups=c, bias=False)]
        layers += bn_relu(c)
        layers += [nn.Conv2d(c, out, 1, bias=False)] + bn_relu(out)
        c = out
    return nn.Sequential(*layers)


def measure(model, x, bf16, seconds):
    if x.dtype == torch.bfloat16:
        bf16 = False
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        model(x)
        model(x)
        n = 0
        start = time.perf_counter()
        while True:
            model(x)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and n >= 2:
                return n * x.shape[0] / elapsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--no-bf16", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    models = [("vgg16", torchvision.models.vgg16().features, 150),
              ("mobilenet", mobilenet_v1(0.25), 224)]
    variants = [("fp32 NCHW", False, False), ("fp32 channels-last", True, False),
                ("bf16 autocast NCHW", False, True),
                ("bf16 autocast channels-last", True, True),
                ("bf16 weights channels-last", True, "weights")]
    if args.no_bf16:
        variants = [v for v in variants if not v[2]]
    for name, model, size in models:
        model.eval()
        x = torch.randn(args.batch, 3, size, size)
        for vname, channels_last, bf16 in variants:
            m, inp = model, x
            if channels_last:
                m = model.to(memory_format=torch.channels_last)
                inp = x.contiguous(memory_format=torch.channels_last)
            if bf16 == "weights":
                m = model.to(torch.bfloat16)
                inp = inp.to(torch.bfloat16)
            ips = measure(m, inp, bf16, args.seconds)
            print(json.dumps({"impl": "python", "model": name, "variant": vname,
                              "images_per_second": round(ips, 2)}), flush=True)


if __name__ == "__main__":
    main()
