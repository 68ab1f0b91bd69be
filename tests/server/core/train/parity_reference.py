#!/usr/bin/python3
"""Reference training in plain PyTorch for trainer_parity_test.

Reads, from the folder given as the only argument (all written by the C++
test):
  init.safetensors  the classifier's initial weights (backbone tensors under
                    Keras layer names, head under head.*)
  data.safetensors  "images" (N x 3 x S x S float32, already preprocessed)
                    and "labels" (N int64)
  plan.json         {"hidden_units", "stages": [{"epochs", "batch_size",
                    "lr", "momentum", "trainable": [conv names]}],
                    "orders": [[example indices of epoch 1], ...]}
builds VGG16 (Keras 'same' padding = symmetric for 3x3 stride 1) with a
Flatten -> Dense(hidden, relu) -> Dense(1) head, trains each stage with SGD
(binary cross-entropy on the logit) in the given example order, and prints
{"losses": [mean training loss of each epoch]} as JSON on stdout.

Needs only torch (Debian's python3-torch); safetensors is parsed here.
"""
import json
import struct
import sys

import torch
import torch.nn.functional as F

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
        self.hidden = torch.nn.Linear(feature_dim, hidden)
        self.output = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        for names in self.blocks:
            for name in names:
                x = F.relu(self.convs[name](x))
            x = F.max_pool2d(x, 2, 2)
        x = x.permute(0, 2, 3, 1).flatten(1)  # Keras' channels-last Flatten
        x = F.relu(self.hidden(x))
        return self.output(x)

    def load(self, tensors):
        with torch.no_grad():
            for name, conv in self.convs.items():
                conv.weight.copy_(tensors[name + ".weight"])
                conv.bias.copy_(tensors[name + ".bias"])
            self.hidden.weight.copy_(tensors["head.hidden.weight"])
            self.hidden.bias.copy_(tensors["head.hidden.bias"])
            self.output.weight.copy_(tensors["head.output.weight"])
            self.output.bias.copy_(tensors["head.output.bias"])


def main():
    folder = sys.argv[1]
    torch.set_num_threads(1)
    plan = json.load(open(f"{folder}/plan.json"))
    init = read_safetensors(f"{folder}/init.safetensors")
    data = read_safetensors(f"{folder}/data.safetensors")
    images, labels = data["images"].float(), data["labels"].long()
    n = images.shape[0]
    hidden = plan["hidden_units"]
    model = Vgg16Classifier(init["head.hidden.weight"].shape[1], hidden)
    model.load(init)
    model.train()

    losses = []
    epoch = 0
    for stage in plan["stages"]:
        trainable = set(stage["trainable"])
        for name, conv in model.convs.items():
            for p in conv.parameters():
                p.requires_grad_(name in trainable)
        params = [p for p in model.parameters() if p.requires_grad]
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
    print(json.dumps({"losses": losses}))


if __name__ == "__main__":
    main()
