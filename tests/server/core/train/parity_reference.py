#!/usr/bin/python3
"""Reference training in plain PyTorch for trainer_parity_test.

Reads, from the folder given as the only argument (all written by the C++
test):
  init.safetensors  the classifier's initial weights (backbone tensors under
                    Keras layer names, head under head.*)
  plan.json         {"model": "vgg16" | "mobilenet", "alpha" (mobilenet),
                    "hidden_units", "optimizer": "sgd" | "rmsprop",
                    "stages": [{"epochs", "batch_size", "lr", "momentum"
                    (sgd), "rho" and "epsilon" (rmsprop), "trainable":
                    [layer names]}],
                    "orders": [[example indices of epoch 1], ...],
                    and either "images": [[file, label], ...] or nothing}
  data.safetensors  without "images" in the plan: "images" (N x 3 x S x S
                    float32, already preprocessed) and "labels" (N int64)

With "images" the script builds its inputs itself: it decodes each file with
PIL (no resizing: the files have the model's input size) and applies Keras'
'tf' preprocessing (x / 127.5 - 1). It builds the backbone (VGG16 with Keras
'same' padding = symmetric for 3x3 stride 1; or Keras' MobileNet v1 with
BatchNorm epsilon 1e-3, TF 'same' padding and ReLU6), a Flatten ->
Dense(hidden, relu) -> Dense(1) head, trains each stage (binary cross-entropy
on the logit; every BatchNorm layer in inference mode: frozen ones as Keras
runs them, trainable ones as the trainer's batch_norm_inference) in the given
example order, and prints {"losses": [mean training loss of each epoch],
"input_sum", "input_sum_squares"} as JSON on stdout.

Needs only torch, numpy and PIL (Debian's python3-torch, python3-pil);
safetensors is parsed here.
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

DTYPES = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64,
          "I32": torch.int32, "U8": torch.uint8}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        if end > begin:
            t = torch.frombuffer(bytearray(data[base + begin:base + end]), dtype=dtype)
        else:
            t = torch.zeros(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out


class Head(torch.nn.Module):
    """Keras' channels-last Flatten -> Dense(hidden, relu) -> Dense(1)."""

    def __init__(self, feature_dim, hidden):
        super().__init__()
        self.hidden = torch.nn.Linear(feature_dim, hidden)
        self.output = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        x = x.permute(0, 2, 3, 1).flatten(1)
        return self.output(F.relu(self.hidden(x)))

    def load(self, tensors):
        with torch.no_grad():
            self.hidden.weight.copy_(tensors["head.hidden.weight"])
            self.hidden.bias.copy_(tensors["head.hidden.bias"])
            self.output.weight.copy_(tensors["head.output.weight"])
            self.output.bias.copy_(tensors["head.output.bias"])


class Vgg16Classifier(torch.nn.Module):
    def __init__(self, feature_dim, hidden):
        super().__init__()
        self.blocks = []
        self.convs = torch.nn.ModuleDict()
        in_ch = 3
        for b, (count, filters) in enumerate(zip([2, 2, 3, 3, 3],
                                                 [64, 128, 256, 512, 512])):
            names = []
            for i in range(count):
                name = f"block{b + 1}_conv{i + 1}"
                self.convs[name] = torch.nn.Conv2d(in_ch, filters, 3, padding=1)
                names.append(name)
                in_ch = filters
            self.blocks.append(names)
        self.head = Head(feature_dim, hidden)

    def forward(self, x):
        for names in self.blocks:
            for name in names:
                x = F.relu(self.convs[name](x))
            x = F.max_pool2d(x, 2, 2)
        return self.head(x)

    def load(self, tensors):
        with torch.no_grad():
            for name, conv in self.convs.items():
                conv.weight.copy_(tensors[name + ".weight"])
                conv.bias.copy_(tensors[name + ".bias"])
        self.head.load(tensors)


class MobileNetClassifier(torch.nn.Module):
    """Keras' MobileNet v1 (alpha) with the test's head."""
    FILTERS = [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    STRIDES = [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]

    def __init__(self, alpha, feature_dim, hidden):
        super().__init__()
        first = int(32 * alpha)
        self.layers = torch.nn.ModuleDict()
        self.layers["conv1"] = torch.nn.Conv2d(3, first, 3, 2, 0, bias=False)
        self.layers["conv1_bn"] = torch.nn.BatchNorm2d(first, eps=1e-3)
        in_ch = first
        for i, (filters, stride) in enumerate(zip(self.FILTERS, self.STRIDES)):
            dw, pw, out = f"conv_dw_{i + 1}", f"conv_pw_{i + 1}", int(filters * alpha)
            self.layers[dw] = torch.nn.Conv2d(in_ch, in_ch, 3, stride,
                                              1 if stride == 1 else 0,
                                              groups=in_ch, bias=False)
            self.layers[dw + "_bn"] = torch.nn.BatchNorm2d(in_ch, eps=1e-3)
            self.layers[pw] = torch.nn.Conv2d(in_ch, out, 1, bias=False)
            self.layers[pw + "_bn"] = torch.nn.BatchNorm2d(out, eps=1e-3)
            in_ch = out
        self.head = Head(feature_dim, hidden)

    def forward(self, x):
        L = self.layers
        # TF 'same' for the 3x3 stride-2 stem: the extra row and column of
        # padding go at the bottom and right.
        size = x.shape[-1]
        total = max((-(-size // 2) - 1) * 2 + 3 - size, 0)
        x = F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))
        x = F.relu6(L["conv1_bn"](L["conv1"](x)))
        for i, stride in enumerate(self.STRIDES):
            if stride == 2:
                x = F.pad(x, (0, 1, 0, 1))  # Keras' ZeroPadding2D(((0, 1), (0, 1)))
            x = F.relu6(L[f"conv_dw_{i + 1}_bn"](L[f"conv_dw_{i + 1}"](x)))
            x = F.relu6(L[f"conv_pw_{i + 1}_bn"](L[f"conv_pw_{i + 1}"](x)))
        return self.head(x)

    def load(self, tensors):
        with torch.no_grad():
            for name, module in self.layers.items():
                module.weight.copy_(tensors[name + ".weight"])
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.bias.copy_(tensors[name + ".bias"])
                    module.running_mean.copy_(tensors[name + ".running_mean"])
                    module.running_var.copy_(tensors[name + ".running_var"])
        self.head.load(tensors)

    def backbone_layers(self):
        return self.layers.items()


def decode_images(entries):
    """The files' pixels with Keras' 'tf' preprocessing, N x 3 x S x S."""
    batch = []
    for path, _ in entries:
        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"), dtype=np.float32)
        batch.append(torch.from_numpy(rgb / 127.5 - 1.0).permute(2, 0, 1))
    labels = torch.tensor([label for _, label in entries], dtype=torch.long)
    return torch.stack(batch), labels


def main():
    folder = sys.argv[1]
    torch.set_num_threads(1)
    plan = json.load(open(f"{folder}/plan.json"))
    init = read_safetensors(f"{folder}/init.safetensors")
    if "images" in plan:
        images, labels = decode_images(plan["images"])
    else:
        data = read_safetensors(f"{folder}/data.safetensors")
        images, labels = data["images"].float(), data["labels"].long()
    n = images.shape[0]
    hidden = plan["hidden_units"]
    feature_dim = init["head.hidden.weight"].shape[1]
    if plan.get("model", "vgg16") == "mobilenet":
        model = MobileNetClassifier(plan["alpha"], feature_dim, hidden)
        model.load(init)
        model.eval()  # every BatchNorm on its moving statistics; no dropout
        layers = model.backbone_layers()
    else:
        model = Vgg16Classifier(feature_dim, hidden)
        model.load(init)
        model.train()
        layers = model.convs.items()
    layers = list(layers)

    losses = []
    epoch = 0
    for stage in plan["stages"]:
        trainable = set(stage["trainable"])
        for name, module in layers:
            for p in module.parameters():
                p.requires_grad_(name in trainable)
        params = [p for p in model.parameters() if p.requires_grad]
        if plan.get("optimizer", "sgd") == "rmsprop":
            opt = torch.optim.RMSprop(params, lr=stage["lr"], alpha=stage["rho"],
                                      eps=stage["epsilon"])
        else:
            opt = torch.optim.SGD(params, lr=stage["lr"], momentum=stage["momentum"])
        bs = stage["batch_size"]
        for _ in range(stage["epochs"]):
            order = plan["orders"][epoch]
            epoch += 1
            total = 0.0
            for begin in range(0, n, bs):
                idx = torch.tensor(order[begin:begin + bs], dtype=torch.long)
                x, y = images[idx], labels[idx].float()
                opt.zero_grad()
                loss = F.binary_cross_entropy_with_logits(model(x)[:, 0], y)
                loss.backward()
                opt.step()
                total += loss.item() * len(idx)
            losses.append(total / n)
    print(json.dumps({"losses": losses,
                      "input_sum": images.double().sum().item(),
                      "input_sum_squares": images.double().pow(2).sum().item()}))


if __name__ == "__main__":
    main()
