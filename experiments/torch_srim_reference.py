# Copied unchanged from ../shared/bench/torch_srim_reference.py (issue #13), so that a clone without
# ../shared can run `experiments/bench_imle.py --against_torch`.
"""PyTorch reference for SRIM's IMLE selection and update step, on CPU or CUDA (--device cuda).

Mirrors what niopeng/SRIM-pytorch does (codes/dci_util.py get_code and
models/modules/architecture.py IMRRDBNet): for each input in the pool, draw m
codes, forward the m samples as one batch, score each with
0.01*L1(pixels) + L1(VGG19 conv5_4 features), keep the argmin.
Written here from those facts, for timing only (random weights).

Prints JSON: selection samples/s and update steps/s for a config.
"""
import argparse, json, time
import torch
import torch.nn as nn
import torch.nn.functional as F


class DenseBlock5C(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.c = nn.ModuleList([nn.Conv2d(nf + i * gc, gc if i < 4 else nf, 3, 1, 1) for i in range(5)])

    def forward(self, x):
        feats = [x]
        for i, conv in enumerate(self.c):
            out = conv(torch.cat(feats, 1))
            if i < 4:
                out = F.leaky_relu(out, 0.2)
                feats.append(out)
        return out * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, nf, gc):
        super().__init__()
        self.b = nn.Sequential(DenseBlock5C(nf, gc), DenseBlock5C(nf, gc), DenseBlock5C(nf, gc))

    def forward(self, x):
        return self.b(x) * 0.2 + x


class IMRRDBNet(nn.Module):
    def __init__(self, nf=64, nb=24, gc=128, code_nc=5, scale=8):
        super().__init__()
        self.fea = nn.Conv2d(3 + code_nc, nf, 3, 1, 1)
        self.trunk = nn.Sequential(*[RRDB(nf, gc) for _ in range(nb)])
        self.lr_conv = nn.Conv2d(nf, nf, 3, 1, 1)
        self.ups = nn.ModuleList([nn.Conv2d(nf, nf, 3, 1, 1) for _ in range(scale.bit_length() - 1)])
        self.hr0 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.hr1 = nn.Conv2d(nf, 3, 3, 1, 1)

    def forward(self, img, code):
        x = self.fea(torch.cat([img, code], 1))
        x = x + self.lr_conv(self.trunk(x))
        for conv in self.ups:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="nearest")), 0.2)
        return torch.sigmoid(self.hr1(F.leaky_relu(self.hr0(x), 0.2)))


def vgg19_to_conv5_4():
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
    layers, c = [], 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, 1, 1), nn.ReLU(inplace=False)]
            c = v
    return nn.Sequential(*layers[:-1])  # conv5_4 before its ReLU (layer 34)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--lr", type=int, default=8)
    p.add_argument("--nf", type=int, default=64)
    p.add_argument("--nb", type=int, default=24)
    p.add_argument("--gc", type=int, default=128)
    p.add_argument("--m", type=int, default=100)
    p.add_argument("--pool", type=int, default=4)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast in selection (CUDA)")
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    dev = torch.device(a.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)
    hr = a.lr * 8
    g = IMRRDBNet(a.nf, a.nb, a.gc).to(dev).eval()
    f = vgg19_to_conv5_4().to(dev).eval()
    for q in f.parameters():
        q.requires_grad_(False)
    lr_imgs = torch.rand(a.pool, 3, a.lr, a.lr, device=dev)
    hr_imgs = torch.rand(a.pool, 3, hr, hr, device=dev)

    def select(n_inputs):
        chosen = []
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.amp):
            for i in range(n_inputs):
                codes = torch.randn(a.m, 5, a.lr, a.lr, device=dev)
                out = g(lr_imgs[i:i + 1].expand(a.m, -1, -1, -1), codes)
                tgt = hr_imgs[i:i + 1].expand(a.m, -1, -1, -1)
                loss = 0.01 * (out - tgt).abs().mean((1, 2, 3)) + (f(out) - f(tgt)).abs().mean((1, 2, 3))
                chosen.append(codes[int(loss.argmin())])
        return torch.stack(chosen)

    select(1); sync()  # warm-up
    t = time.perf_counter(); select(a.pool); sync(); sel_s = time.perf_counter() - t
    g.train()
    opt = torch.optim.Adam(g.parameters(), lr=1e-5)
    codes = torch.randn(a.batch, 5, a.lr, a.lr, device=dev)
    x, y = lr_imgs[:a.batch].repeat(max(1, a.batch // a.pool + 1), 1, 1, 1)[:a.batch], hr_imgs[:a.batch].repeat(max(1, a.batch // a.pool + 1), 1, 1, 1)[:a.batch]

    def step():
        opt.zero_grad()
        out = g(x, codes)
        loss = 0.01 * (out - y).abs().mean() + (f(out) - f(y)).abs().mean()
        loss.backward(); opt.step()

    step(); sync()
    t = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    upd_s = (time.perf_counter() - t) / a.steps
    print(json.dumps({"impl": "torch-ref", "lr": a.lr, "hr": hr, "nf": a.nf, "nb": a.nb, "gc": a.gc, "m": a.m,
                      "selection_samples_per_s": a.pool * a.m / sel_s, "update_steps_per_s": 1.0 / upd_s,
                      "batch": a.batch, "threads": torch.get_num_threads(), "device": str(dev),
                      "tf32_conv": torch.backends.cudnn.allow_tf32, "amp_bf16": a.amp}))


if __name__ == "__main__":
    main()
