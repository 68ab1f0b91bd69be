#!/usr/bin/python3
"""Generate reference weights and outputs for the C++ backbone implementations.

Run with Debian's interpreter (needs torch, torchvision, h5py, numpy):

    /usr/bin/python3 make_reference.py --out DIR \
        [--models vgg16,vgg19,resnet50,mobilenet_v2,mobilenet] [--seed 0]

For every model M it writes into DIR:
  M.torchvision.safetensors            conv-base weights, torchvision key names
  M.torchvision.reference.safetensors  input_64/output_64/input_75/output_75
  M.keras.h5                           Keras "*_notop.h5" weight-file layout
  M.keras.reference.safetensors        input_64/output_64/input_75/output_75
(the torchvision files are not written for "mobilenet" = Keras MobileNet v1).
All tensors are float32, images are NCHW. See README.md next to this file.
"""

import argparse
import json
import os
import struct
import sys
import time
from collections import OrderedDict

import h5py
import numpy as np
import torch
import torch.nn.functional as F
import torchvision

ALL_MODELS = ["vgg16", "vgg19", "resnet50", "mobilenet_v2", "mobilenet"]
TORCHVISION_MODELS = ["vgg16", "vgg19", "resnet50", "mobilenet_v2"]
# Fixed per-model seed offsets so that a model's files do not depend on which
# other models were selected with --models.
MODEL_SEED_OFFSET = {m: i + 1 for i, m in enumerate(ALL_MODELS)}
# Expected sizes of the Keras-layout conv bases (include_top=False).
EXPECTED_KERAS_LAYERS = {"vgg16": 19, "vgg19": 22, "resnet50": 175,
                         "mobilenet_v2": 154, "mobilenet": 86}
EXPECTED_KERAS_PARAMS = {"vgg16": 14714688, "vgg19": 20024384,
                         "resnet50": 23587712, "mobilenet_v2": 2257984,
                         "mobilenet": 218544}
REAL_MOBILENET_H5 = "/work/shared/weights/keras/mobilenet_2_5_224_tf_no_top.h5"
KERAS_VERSION = b"2.11.0"


# ----------------------------------------------------------------------------
# safetensors (hand-written; no safetensors package available)
# ----------------------------------------------------------------------------

def write_safetensors(path, tensors):
    """tensors: list of (name, array-like). Stored as F32, in list order."""
    header = OrderedDict()
    header["__metadata__"] = {"format": "pt"}
    blobs = []
    offset = 0
    for name, arr in tensors:
        if isinstance(arr, torch.Tensor):
            arr = arr.detach().cpu().numpy()
        arr = np.ascontiguousarray(arr, dtype="<f4")
        data = arr.tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for data in blobs:
            f.write(data)


def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"), object_pairs_hook=OrderedDict)
    base = 8 + n
    out = OrderedDict()
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32"
        b, e = info["data_offsets"]
        out[name] = np.frombuffer(raw[base + b:base + e], dtype="<f4").reshape(info["shape"])
    return out


# ----------------------------------------------------------------------------
# Keras weight-file (.h5) I/O, same layout as keras.saving.hdf5_format
# ----------------------------------------------------------------------------

def write_keras_h5(path, layers, weights):
    """layers: Keras layer list (model.layers order); weights: layer name ->
    list of (short weight name, np.ndarray), e.g. ("kernel", HWIO array)."""
    with h5py.File(path, "w") as f:
        # Fixed-length byte-string arrays (|S<n>) like the keras.io files;
        # the two scalar byte strings end up as variable-length ASCII strings.
        f.attrs["layer_names"] = np.asarray([L["name"].encode("utf8") for L in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = KERAS_VERSION
        # Keras creates the groups in sorted(layer.name) order.
        for L in sorted(layers, key=lambda L: L["name"]):
            name = L["name"]
            g = f.create_group(name)
            ws = weights.get(name, [])
            wnames = ["%s/%s:0" % (name, short) for short, _ in ws]
            # Empty list -> float64 empty array, like in the keras.io files.
            g.attrs["weight_names"] = np.asarray([w.encode("utf8") for w in wnames])
            for wn, (_, val) in zip(wnames, ws):
                val = np.ascontiguousarray(val, dtype=np.float32)
                d = g.create_dataset(wn, val.shape, dtype=val.dtype)
                d[...] = val


def read_keras_h5(path):
    """Returns (layer_names, weights dict like write_keras_h5 takes)."""
    weights = OrderedDict()
    with h5py.File(path, "r") as f:
        names = [n.decode("utf8") for n in f.attrs["layer_names"]]
        for name in names:
            g = f[name]
            ws = []
            for wn in g.attrs["weight_names"]:
                wn = wn.decode("utf8")
                assert wn.startswith(name + "/") and wn.endswith(":0"), wn
                ws.append((wn[len(name) + 1:-2], np.array(g[wn])))
            if ws:
                weights[name] = ws
    return names, weights


# ----------------------------------------------------------------------------
# Keras architectures as layer lists + a PyTorch (NCHW) interpreter
# ----------------------------------------------------------------------------

class Graph:
    def __init__(self):
        self.layers = []

    def add(self, name, kind, inputs=None, **cfg):
        if inputs is None:
            inputs = [self.layers[-1]["name"]] if self.layers else []
        self.layers.append(dict(name=name, kind=kind, inputs=inputs, **cfg))
        return name

    def conv(self, name, cin, cout, k, stride=1, padding="valid", bias=False,
             act=None, inputs=None):
        return self.add(name, "conv", inputs, cin=cin, cout=cout, k=k, stride=stride,
                        padding=padding, bias=bias, act=act, depthwise=False)

    def dwconv(self, name, c, k=3, stride=1, padding="same", inputs=None):
        return self.add(name, "conv", inputs, cin=c, cout=c, k=k, stride=stride,
                        padding=padding, bias=False, act=None, depthwise=True)

    def bn(self, name, c, eps, inputs=None):
        return self.add(name, "bn", inputs, c=c, eps=eps)


def make_divisible(v, divisor, min_value=None):
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


VGG_CFG = {"vgg16": [2, 2, 3, 3, 3], "vgg19": [2, 2, 4, 4, 4]}
VGG_FILTERS = [64, 128, 256, 512, 512]


def keras_vgg(model):
    g = Graph()
    g.add("input_1", "input")
    cin = 3
    for b, (n, f) in enumerate(zip(VGG_CFG[model], VGG_FILTERS), start=1):
        for i in range(1, n + 1):
            g.conv("block%d_conv%d" % (b, i), cin, f, 3, padding="same", bias=True, act="relu")
            cin = f
        g.add("block%d_pool" % b, "maxpool", k=2, stride=2)
    return g.layers


def keras_resnet50(stride_in_3x3=False):
    """Keras ResNet50 (v1). stride_in_3x3=True is a torchvision-v1.5 variant
    used only for the internal cross-check against torchvision."""
    eps = 1.001e-5
    g = Graph()
    g.add("input_1", "input")
    g.add("conv1_pad", "zeropad", pad=(3, 3, 3, 3))
    g.conv("conv1_conv", 3, 64, 7, stride=2, bias=True)
    g.bn("conv1_bn", 64, eps)
    g.add("conv1_relu", "relu")
    g.add("pool1_pad", "zeropad", pad=(1, 1, 1, 1))
    g.add("pool1_pool", "maxpool", k=3, stride=2)
    cin = 64
    for s, (blocks, f) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), start=2):
        for b in range(1, blocks + 1):
            p = "conv%d_block%d" % (s, b)
            x = g.layers[-1]["name"]
            stride = 2 if (b == 1 and s > 2) else 1
            s1, s2 = (1, stride) if stride_in_3x3 else (stride, 1)
            g.conv(p + "_1_conv", cin, f, 1, stride=s1, bias=True, inputs=[x])
            g.bn(p + "_1_bn", f, eps)
            g.add(p + "_1_relu", "relu")
            g.conv(p + "_2_conv", f, f, 3, stride=s2, padding="same", bias=True)
            g.bn(p + "_2_bn", f, eps)
            r = g.add(p + "_2_relu", "relu")
            if b == 1:
                # Keras model.layers order (topological, by depth, ties broken
                # by DFS discovery from the output where the shortcut branch is
                # visited first): _0_conv, _3_conv, _0_bn, _3_bn.
                g.conv(p + "_0_conv", cin, 4 * f, 1, stride=stride, bias=True, inputs=[x])
                g.conv(p + "_3_conv", f, 4 * f, 1, bias=True, inputs=[r])
                g.bn(p + "_0_bn", 4 * f, eps, inputs=[p + "_0_conv"])
                g.bn(p + "_3_bn", 4 * f, eps, inputs=[p + "_3_conv"])
                g.add(p + "_add", "add", inputs=[p + "_0_bn", p + "_3_bn"])
            else:
                g.conv(p + "_3_conv", f, 4 * f, 1, bias=True)
                g.bn(p + "_3_bn", 4 * f, eps)
                g.add(p + "_add", "add", inputs=[x, p + "_3_bn"])
            g.add(p + "_out", "relu")
            cin = 4 * f
    return g.layers


# (expansion, filters, stride) for block_id 0..16, from keras mobilenet_v2.py
MOBILENET_V2_BLOCKS = [(1, 16, 1),
                       (6, 24, 2), (6, 24, 1),
                       (6, 32, 2), (6, 32, 1), (6, 32, 1),
                       (6, 64, 2), (6, 64, 1), (6, 64, 1), (6, 64, 1),
                       (6, 96, 1), (6, 96, 1), (6, 96, 1),
                       (6, 160, 2), (6, 160, 1), (6, 160, 1),
                       (6, 320, 1)]


def keras_mobilenet_v2(alpha=1.0):
    eps = 1e-3
    g = Graph()
    g.add("input_1", "input")
    c = make_divisible(32 * alpha, 8)
    g.conv("Conv1", 3, c, 3, stride=2, padding="same")
    g.bn("bn_Conv1", c, eps)
    g.add("Conv1_relu", "relu6")
    for block_id, (t, filters, stride) in enumerate(MOBILENET_V2_BLOCKS):
        inp = g.layers[-1]["name"]
        pw = make_divisible(int(filters * alpha), 8)
        if block_id:
            prefix = "block_%d_" % block_id
            e = t * c
            g.conv(prefix + "expand", c, e, 1, padding="same")
            g.bn(prefix + "expand_BN", e, eps)
            g.add(prefix + "expand_relu", "relu6")
        else:
            prefix = "expanded_conv_"
            e = c
        if stride == 2:
            g.add(prefix + "pad", "correct_pad", k=3)
        g.dwconv(prefix + "depthwise", e, 3, stride=stride,
                 padding="same" if stride == 1 else "valid")
        g.bn(prefix + "depthwise_BN", e, eps)
        g.add(prefix + "depthwise_relu", "relu6")
        g.conv(prefix + "project", e, pw, 1, padding="same")
        g.bn(prefix + "project_BN", pw, eps)
        if c == pw and stride == 1:
            g.add(prefix + "add", "add", inputs=[inp, prefix + "project_BN"])
        c = pw
    last = make_divisible(1280 * alpha, 8) if alpha > 1.0 else 1280
    g.conv("Conv_1", c, last, 1)
    g.bn("Conv_1_bn", last, eps)
    g.add("out_relu", "relu6")
    return g.layers


MOBILENET_V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                       (512, 1), (512, 1), (512, 1), (512, 1), (512, 1),
                       (1024, 2), (1024, 1)]


def keras_mobilenet_v1(alpha=0.25):
    eps = 1e-3
    g = Graph()
    g.add("input_1", "input")
    c = int(32 * alpha)
    g.conv("conv1", 3, c, 3, stride=2, padding="same")
    g.bn("conv1_bn", c, eps)
    g.add("conv1_relu", "relu6")
    for block_id, (f, stride) in enumerate(MOBILENET_V1_BLOCKS, start=1):
        if stride == 2:
            g.add("conv_pad_%d" % block_id, "zeropad", pad=(0, 1, 0, 1))
        g.dwconv("conv_dw_%d" % block_id, c, 3, stride=stride,
                 padding="same" if stride == 1 else "valid")
        g.bn("conv_dw_%d_bn" % block_id, c, eps)
        g.add("conv_dw_%d_relu" % block_id, "relu6")
        pw = int(f * alpha)
        g.conv("conv_pw_%d" % block_id, c, pw, 1, padding="same")
        g.bn("conv_pw_%d_bn" % block_id, pw, eps)
        g.add("conv_pw_%d_relu" % block_id, "relu6")
        c = pw
    return g.layers


def tf_same_pad(n, k, s):
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def keras_forward(layers, weights, x, eps_override=None, calibrate=False):
    """Runs the Keras architecture on NCHW input x with Keras-layout weights.
    calibrate=True replaces the BN moving statistics in `weights` (in place)
    with calibrated_stats() of the BN inputs."""
    acts = {}
    for L in layers:
        kind = L["kind"]
        ins = [acts[i] for i in L["inputs"]]
        w = OrderedDict((k, torch.from_numpy(np.asarray(v, dtype=np.float32)))
                        for k, v in weights.get(L["name"], []))
        if kind == "input":
            y = x
        elif kind == "conv":
            (h,) = ins
            k, s = L["k"], L["stride"]
            if L["depthwise"]:
                wt = w["depthwise_kernel"].permute(2, 3, 0, 1).contiguous()  # (C,1,kh,kw)
                groups = wt.shape[0]
            else:
                wt = w["kernel"].permute(3, 2, 0, 1).contiguous()  # OIHW
                groups = 1
            b = w.get("bias")
            if L["padding"] == "same":
                pt, pb = tf_same_pad(h.shape[2], k, s)
                pl, pr = tf_same_pad(h.shape[3], k, s)
            else:
                pt = pb = pl = pr = 0
            if pt == pb and pl == pr:
                y = F.conv2d(h, wt, b, s, (pt, pl), 1, groups)
            else:
                y = F.conv2d(F.pad(h, (pl, pr, pt, pb)), wt, b, s, 0, 1, groups)
            if L["act"] == "relu":
                y = F.relu(y)
        elif kind == "bn":
            (h,) = ins
            eps = L["eps"] if eps_override is None else eps_override
            if calibrate:
                rm, rv = calibrated_stats(h)
                ws = dict(weights[L["name"]])
                ws["moving_mean"], ws["moving_variance"] = rm.numpy(), rv.numpy()
                weights[L["name"]] = [(n, ws[n]) for n, _ in weights[L["name"]]]
                w["moving_mean"], w["moving_variance"] = rm, rv
            y = F.batch_norm(h, w["moving_mean"], w["moving_variance"], w["gamma"],
                             w["beta"], False, 0.0, eps)
        elif kind == "relu":
            y = F.relu(ins[0])
        elif kind == "relu6":
            y = F.hardtanh(ins[0], 0.0, 6.0)
        elif kind == "zeropad":
            t, b_, l, r = L["pad"]
            y = F.pad(ins[0], (l, r, t, b_))
        elif kind == "correct_pad":
            # imagenet_utils.correct_pad with a known (static) input size
            h = ins[0]
            c = L["k"] // 2
            at, al = 1 - h.shape[2] % 2, 1 - h.shape[3] % 2
            y = F.pad(h, (c - al, c, c - at, c))
        elif kind == "maxpool":
            y = F.max_pool2d(ins[0], L["k"], L["stride"])
        elif kind == "add":
            y = ins[0] + ins[1]
        else:
            raise ValueError(kind)
        acts[L["name"]] = y
    return acts[layers[-1]["name"]]


# ----------------------------------------------------------------------------
# Weights
# ----------------------------------------------------------------------------

def calibrated_stats(h):
    """Random BN moving statistics around the real per-channel statistics of
    the BN input h (N,C,H,W): running_mean = mean + 0.2*std*N(0,1),
    running_var = var * U(0.5, 1.5). Purely random statistics let the
    activations drift through deep nets until the output no longer depends on
    the input (MobileNetV2 became input-independent to 2e-7)."""
    c = h.shape[1]
    mean = h.mean(dim=(0, 2, 3))
    var = h.var(dim=(0, 2, 3), unbiased=False).clamp_min(1e-4)
    rm = mean + 0.2 * var.sqrt() * torch.randn(c)
    rv = var * (torch.rand(c) + 0.5)
    return rm, rv


def randomise_bn(module, fwd, calib):
    """gamma ~ U(0.5,1.5), beta ~ 0.1*N(0,1); moving stats from
    calibrated_stats(), set BN by BN in forward order in eval mode."""
    hooks = []

    def pre_hook(m, args):
        rm, rv = calibrated_stats(args[0])
        m.running_mean.copy_(rm)
        m.running_var.copy_(rv)

    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            with torch.no_grad():
                m.weight.copy_(torch.rand(c) + 0.5)
                m.bias.copy_(torch.randn(c) * 0.1)
            hooks.append(m.register_forward_pre_hook(pre_hook))
    with torch.no_grad():
        fwd(calib)
    for h in hooks:
        h.remove()


def calibration_input():
    return torch.randn(4, 3, 64, 64)


def tv_conv_kernel(t, depthwise):
    t = t.detach()
    if depthwise:
        return t.permute(2, 3, 0, 1).contiguous().numpy()  # (C,1,kh,kw)->(kh,kw,C,1)
    return t.permute(2, 3, 1, 0).contiguous().numpy()  # OIHW -> HWIO


def keras_weights_from_tv(layers, sd, name_map, random_bias=False):
    """name_map: keras layer name -> torchvision state_dict prefix."""
    weights = OrderedDict()
    for L in layers:
        if L["kind"] not in ("conv", "bn"):
            continue
        p = name_map[L["name"]]
        if L["kind"] == "conv":
            ws = [("depthwise_kernel" if L["depthwise"] else "kernel",
                   tv_conv_kernel(sd[p + ".weight"], L["depthwise"]))]
            if L["bias"]:
                if p + ".bias" in sd:
                    b = sd[p + ".bias"].detach().numpy().copy()
                else:
                    assert random_bias, p
                    b = (torch.randn(L["cout"]) * 0.1).numpy()
                ws.append(("bias", b))
        else:
            ws = [("gamma", sd[p + ".weight"]), ("beta", sd[p + ".bias"]),
                  ("moving_mean", sd[p + ".running_mean"]),
                  ("moving_variance", sd[p + ".running_var"])]
            ws = [(n, t.detach().numpy().copy()) for n, t in ws]
        weights[L["name"]] = ws
    unused = set(k.rsplit(".", 1)[0] for k in sd if not k.endswith("num_batches_tracked"))
    unused -= set(name_map.values())
    assert not unused, sorted(unused)
    return weights


def keras_weights_random(layers):
    weights = OrderedDict()
    for L in layers:
        if L["kind"] == "conv":
            k = L["k"]
            if L["depthwise"]:
                std = (2.0 / (k * k)) ** 0.5
                ws = [("depthwise_kernel", (torch.randn(k, k, L["cin"], 1) * std).numpy())]
            else:
                std = (2.0 / (k * k * L["cin"])) ** 0.5
                ws = [("kernel", (torch.randn(k, k, L["cin"], L["cout"]) * std).numpy())]
            if L["bias"]:
                ws.append(("bias", (torch.randn(L["cout"]) * 0.1).numpy()))
            weights[L["name"]] = ws
        elif L["kind"] == "bn":
            c = L["c"]
            weights[L["name"]] = [("gamma", (torch.rand(c) + 0.5).numpy()),
                                  ("beta", (torch.randn(c) * 0.1).numpy()),
                                  ("moving_mean", (torch.randn(c) * 0.1).numpy()),
                                  ("moving_variance", (torch.rand(c) + 0.5).numpy())]
    return weights


def check_weight_shapes(layers, weights):
    for L in layers:
        if L["kind"] == "conv":
            ws = dict(weights[L["name"]])
            k = L["k"]
            if L["depthwise"]:
                assert ws["depthwise_kernel"].shape == (k, k, L["cin"], 1), L["name"]
            else:
                assert ws["kernel"].shape == (k, k, L["cin"], L["cout"]), L["name"]
            assert ("bias" in ws) == L["bias"], L["name"]
            if L["bias"]:
                assert ws["bias"].shape == (L["cout"],), L["name"]
        elif L["kind"] == "bn":
            ws = weights[L["name"]]
            assert [n for n, _ in ws] == ["gamma", "beta", "moving_mean", "moving_variance"]
            assert all(v.shape == (L["c"],) for _, v in ws), L["name"]
        else:
            assert L["name"] not in weights, L["name"]


# ----------------------------------------------------------------------------
# Per-model builders: return (torchvision conv-base state dict or None,
# torchvision conv-base forward or None, Keras layer list, Keras weights)
# ----------------------------------------------------------------------------

def build_vgg(model):
    tv = getattr(torchvision.models, model)(weights=None).eval()
    with torch.no_grad():  # torchvision initialises conv biases to 0: randomise them
        for m in tv.features:
            if isinstance(m, torch.nn.Conv2d):
                m.bias.copy_(torch.randn(m.out_channels) * 0.1)
    sd = OrderedDict((k, v) for k, v in tv.state_dict().items() if k.startswith("features."))
    layers = keras_vgg(model)
    convs = [L["name"] for L in layers if L["kind"] == "conv"]
    idx = [i for i, m in enumerate(tv.features) if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == len(idx)
    name_map = {c: "features.%d" % i for c, i in zip(convs, idx)}
    return sd, tv.features, layers, keras_weights_from_tv(layers, sd, name_map)


def resnet_name_map():
    m = {"conv1_conv": "conv1", "conv1_bn": "bn1"}
    for s, blocks in zip(range(2, 6), (3, 4, 6, 3)):
        for b in range(1, blocks + 1):
            p, q = "conv%d_block%d" % (s, b), "layer%d.%d" % (s - 1, b - 1)
            for i in (1, 2, 3):
                m["%s_%d_conv" % (p, i)] = "%s.conv%d" % (q, i)
                m["%s_%d_bn" % (p, i)] = "%s.bn%d" % (q, i)
            if b == 1:
                m[p + "_0_conv"] = q + ".downsample.0"
                m[p + "_0_bn"] = q + ".downsample.1"
    return m


def build_resnet50():
    tv = torchvision.models.resnet50(weights=None).eval()

    def fwd(x):
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        return tv.layer4(tv.layer3(tv.layer2(tv.layer1(x))))

    randomise_bn(tv, fwd, calibration_input())
    sd = OrderedDict((k, v) for k, v in tv.state_dict().items()
                     if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    layers = keras_resnet50()
    kw = keras_weights_from_tv(layers, sd, resnet_name_map(), random_bias=True)
    return sd, fwd, layers, kw


def mobilenet_v2_name_map():
    m = {"Conv1": "features.0.0", "bn_Conv1": "features.0.1",
         "expanded_conv_depthwise": "features.1.conv.0.0",
         "expanded_conv_depthwise_BN": "features.1.conv.0.1",
         "expanded_conv_project": "features.1.conv.1",
         "expanded_conv_project_BN": "features.1.conv.2",
         "Conv_1": "features.18.0", "Conv_1_bn": "features.18.1"}
    for i in range(1, 17):
        p, q = "block_%d_" % i, "features.%d.conv." % (i + 1)
        m.update({p + "expand": q + "0.0", p + "expand_BN": q + "0.1",
                  p + "depthwise": q + "1.0", p + "depthwise_BN": q + "1.1",
                  p + "project": q + "2", p + "project_BN": q + "3"})
    return m


def build_mobilenet_v2():
    tv = torchvision.models.mobilenet_v2(weights=None).eval()
    randomise_bn(tv, tv.features, calibration_input())
    sd = OrderedDict((k, v) for k, v in tv.state_dict().items()
                     if k.startswith("features.") and not k.endswith("num_batches_tracked"))
    layers = keras_mobilenet_v2(1.0)
    kw = keras_weights_from_tv(layers, sd, mobilenet_v2_name_map())
    return sd, tv.features, layers, kw


def build_mobilenet_v1():
    layers = keras_mobilenet_v1(0.25)
    kw = keras_weights_random(layers)
    with torch.no_grad():
        keras_forward(layers, kw, calibration_input(), calibrate=True)
    return None, None, layers, kw


BUILDERS = {"vgg16": lambda: build_vgg("vgg16"), "vgg19": lambda: build_vgg("vgg19"),
            "resnet50": build_resnet50, "mobilenet_v2": build_mobilenet_v2,
            "mobilenet": build_mobilenet_v1}


# ----------------------------------------------------------------------------
# Main
# ----------------------------------------------------------------------------

def max_rel_diff(a, b):
    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return float((a - b).abs().max()) / max(1.0, float(b.abs().max()))


def shape_str(t):
    return "x".join(str(d) for d in t.shape)


def report(path, extra=""):
    print("wrote %s (%d bytes)%s" % (path, os.path.getsize(path), extra), flush=True)


def cross_check_against_torchvision(model, kw, tv_fwd):
    """Independent check of the Keras-arch graph + weight mapping for models
    whose Keras architecture differs from torchvision's: configure the
    Keras graph like torchvision (eps 1e-5, no conv biases, ResNet stride in
    the 3x3 conv) and use a 65x65 input, where every stride-2 'same'/correct_pad
    padding becomes symmetric, so both must agree."""
    if model == "resnet50":
        layers = keras_resnet50(stride_in_3x3=True)
        kw = OrderedDict((n, [(s, np.zeros_like(v) if s == "bias" else v) for s, v in ws])
                         for n, ws in kw.items())
    else:
        layers = keras_mobilenet_v2(1.0)
    x = torch.randn(1, 3, 65, 65, generator=torch.Generator().manual_seed(12345))
    with torch.no_grad():
        ref = tv_fwd(x)
        got = keras_forward(layers, kw, x, eps_override=1e-5)
    d = max_rel_diff(got, ref)
    assert got.shape == ref.shape and d < 1e-4, (model, got.shape, ref.shape, d)


def check_against_real_mobilenet(layers, weights):
    if not os.path.exists(REAL_MOBILENET_H5):
        return
    names, real = read_keras_h5(REAL_MOBILENET_H5)
    ours = [L["name"] for L in layers if not L["name"].startswith("conv_pad_")]
    assert names[:-1] == ours and names[-1].startswith("global_average_pooling2d"), names
    for n, ws in real.items():
        assert [(s, v.shape) for s, v in ws] == [(s, v.shape) for s, v in weights[n]], n


def run_model(model, out, seed, inputs):
    torch.manual_seed(seed * 100 + MODEL_SEED_OFFSET[model])
    tv_sd, tv_fwd, layers, kw = BUILDERS[model]()
    names = [L["name"] for L in layers]
    assert len(names) == len(set(names))
    assert len(names) == EXPECTED_KERAS_LAYERS[model], (model, len(names))
    check_weight_shapes(layers, kw)
    if model == "mobilenet":
        check_against_real_mobilenet(layers, kw)

    # (a) torchvision
    tv_out = {}
    if tv_sd is not None:
        p = os.path.join(out, model + ".torchvision.safetensors")
        write_safetensors(p, list(tv_sd.items()))
        back = read_safetensors(p)
        assert list(back) == list(tv_sd)
        assert all(np.array_equal(back[k], v.numpy()) for k, v in tv_sd.items())
        report(p, ", %d tensors, %d params" % (len(back), sum(v.size for v in back.values())))
        tensors = []
        with torch.no_grad():
            for sz, x in inputs:
                y = tv_fwd(x)
                tv_out[sz] = y
                tensors += [("input_%d" % sz, x), ("output_%d" % sz, y)]
        p = os.path.join(out, model + ".torchvision.reference.safetensors")
        write_safetensors(p, tensors)
        report(p, ", " + ", ".join("output_%d %s max|y|=%.3g" % (sz, shape_str(y), float(y.abs().max()))
                                   for sz, y in tv_out.items()))
        if model in ("resnet50", "mobilenet_v2"):
            cross_check_against_torchvision(model, kw, tv_fwd)

    # (b) Keras layout
    p = os.path.join(out, model + ".keras.h5")
    write_keras_h5(p, layers, kw)
    back_names, back_w = read_keras_h5(p)
    assert back_names == names
    nparams = sum(v.size for ws in back_w.values() for _, v in ws)
    assert nparams == EXPECTED_KERAS_PARAMS[model], (model, nparams)
    report(p, ", %d layers, %d params" % (len(names), nparams))
    tensors, kout = [], {}
    with torch.no_grad():
        for sz, x in inputs:
            y = keras_forward(layers, kw, x)
            y2 = keras_forward(layers, back_w, x)  # rebuilt from the .h5
            assert torch.equal(y, y2), (model, sz, max_rel_diff(y2, y))
            if model.startswith("vgg"):
                d = max_rel_diff(y, tv_out[sz])
                assert d < 1e-5, (model, sz, d)
            kout[sz] = y
            tensors += [("input_%d" % sz, x), ("output_%d" % sz, y)]
    p = os.path.join(out, model + ".keras.reference.safetensors")
    write_safetensors(p, tensors)
    report(p, ", " + ", ".join("output_%d %s max|y|=%.3g" % (sz, shape_str(y), float(y.abs().max()))
                               for sz, y in kout.items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=",".join(ALL_MODELS))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    models = [m for m in args.models.split(",") if m]
    bad = [m for m in models if m not in ALL_MODELS]
    if bad:
        ap.error("unknown model(s) %s; choose from %s" % (bad, ",".join(ALL_MODELS)))
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    os.makedirs(args.out, exist_ok=True)
    gen = torch.Generator().manual_seed(args.seed)
    inputs = [(64, torch.randn(2, 3, 64, 64, generator=gen)),
              (75, torch.randn(2, 3, 75, 75, generator=gen))]
    t0 = time.time()
    for m in models:
        run_model(m, args.out, args.seed, inputs)
    print("done: %s in %.1f s" % (",".join(models), time.time() - t0), file=sys.stderr)


if __name__ == "__main__":
    main()
