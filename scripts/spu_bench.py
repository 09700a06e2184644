#!/usr/bin/env python3
"""Networks A and C of `securenn bench` under SecretFlow SPU (ABY3 and SEMI2K), in our schema.

Loads the same trained weights (models/<model>.safetensors, F32) and the same images (the first
`batch` images of the bundled sample's test split, pixels / 255) as `securenn bench` does, builds
the networks in jax exactly as src/models.rs computes them (NHWC activations, HWIO conv kernels,
VALID stride-1 convolutions, ReLU before 2x2 max pooling, row-major NHWC flatten, dense
`x @ kernel + bias`, argmax inside the secure computation), and runs them under SPU's
three-party simulator: three threads, one SPU runtime each, joined by in-memory links (field FM64,
SPU's default fixed point: 18 fractional bits). Images and weights are both secret inputs; only
the argmax is reconstructed, outside the runtimes (so, like our `bytes`, the figures exclude
revealing the class).

Per cell (model, batch, protocol): the program is compiled once; each of `--runs` runs makes new
runtimes and links and is timed from the threads' start to their join (the online run; shares
are made before and the output reconstructed after). SPU's profiling logs each runtime's link
totals ("Link details: total send bytes, send actions"), which are summed over the three parties
into `bytes` and `messages` and checked equal across runs. SPU does not count rounds: `rounds`
is null. `seconds` is the median wall time on this machine (`network` = "local": no
network delay), `cpu_seconds` the median CPU time of the three parties together (less sensitive
to a busy machine than wall time); the predictions are compared with a plaintext numpy run of the same network.

Python is only the tool that wrote the committed JSON; nothing in the build or the tests needs
it. Setup, outside the repository (never commit a venv):

    python3 -m venv /tmp/spu-venv
    /tmp/spu-venv/bin/pip install spu safetensors
    /tmp/spu-venv/bin/python scripts/spu_bench.py --out bench/spu.json

then `securenn bench --compare bench/spu.json` puts our rows beside these.
"""

import argparse
import datetime
import gzip
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER_NAMES = {"a": "A", "b": "B", "c": "C", "d-as-benchmarked": "D"}
LINK_RE = re.compile(
    r"Link details: total send bytes (\d+), recv bytes (\d+), send actions (\d+), recv actions (\d+)"
)


def load_weights(model):
    from safetensors.numpy import load_file

    path = os.path.join(ROOT, "models", f"{model}.safetensors")
    w = load_file(path)
    for name, t in w.items():
        if t.dtype != np.float32:
            sys.exit(f"{path}: tensor {name} is {t.dtype}, expected float32")
    return w


def test_split(n, path=None):
    """The first n images of the bundled sample's test split, as src/data.rs `split_order` picks
    them: per digit, the last fifth of its images in file order; then round-robin over digits."""
    path = path or os.path.join(ROOT, "data", "mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        rows = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels, labels = rows[:, :784], rows[:, 784]
    parts = []
    for d in range(10):
        idx = np.nonzero(labels == d)[0]
        parts.append(idx[len(idx) - len(idx) // 5 :])
    order = [p[k] for k in range(max(map(len, parts))) for p in parts if k < len(p)]
    if n > len(order):
        sys.exit(f"batch {n}: the test split has only {len(order)} images")
    pick = np.array(order[:n])
    images = (pixels[pick] / 255.0).astype(np.float32).reshape(n, 28, 28, 1)  # NHWC
    return images, labels[pick]


def network(model, xp, lax=None):
    """The network as a function of (images NHWC, weights dict) returning class indices, written
    once for numpy-like `xp` (jax.numpy under SPU, numpy for the plaintext reference)."""

    def dense(x, w, layer):
        return x @ w[f"{layer}.dense.kernel"] + w[f"{layer}.dense.bias"]

    def relu(x):
        return xp.maximum(x, 0)

    if model == "a":

        def f(x, w):
            x = x.reshape(x.shape[0], -1)
            x = relu(dense(x, w, 1))
            x = relu(dense(x, w, 3))
            return xp.argmax(dense(x, w, 5), axis=-1)

        return f

    if model == "c":

        def conv(x, w, layer):
            if lax is not None:
                y = lax.conv_general_dilated(
                    x,
                    w[f"{layer}.conv2d.kernel"],
                    window_strides=(1, 1),
                    padding="VALID",
                    dimension_numbers=("NHWC", "HWIO", "NHWC"),
                )
            else:
                y = np_conv_valid(x, w[f"{layer}.conv2d.kernel"])
            return y + w[f"{layer}.conv2d.bias"]

        def maxpool2(x):
            if lax is not None:
                import jax.numpy as jnp

                return lax.reduce_window(
                    x, -jnp.inf, lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID"
                )
            b, h, wd, c = x.shape
            return x.reshape(b, h // 2, 2, wd // 2, 2, c).max(axis=(2, 4))

        def f(x, w):
            x = maxpool2(relu(conv(x, w, 0)))
            x = maxpool2(relu(conv(x, w, 3)))
            x = x.reshape(x.shape[0], -1)  # NHWC row-major, as our flatten
            x = relu(dense(x, w, 7))
            return xp.argmax(dense(x, w, 9), axis=-1)

        return f

    sys.exit(f"--models: {model!r} is not built here (a, c)")


def np_conv_valid(x, k):
    """VALID, stride-1 convolution, NHWC input and HWIO kernel, in numpy."""
    kh, kw, _, _ = k.shape
    b, h, w, c = x.shape
    oh, ow = h - kh + 1, w - kw + 1
    cols = np.stack(
        [x[:, i : i + oh, j : j + ow, :] for i in range(kh) for j in range(kw)], axis=3
    )  # b, oh, ow, kh*kw, c
    return cols.reshape(b, oh, ow, kh * kw * c) @ k.reshape(kh * kw * c, -1)


class Capture:
    """SPU's C++ log lines, written to a file by its own logger (console logging off)."""

    def __init__(self, libspu):
        self.path = os.path.join(tempfile.mkdtemp(prefix="spu-bench-"), "spu.log")
        opts = libspu.logging.LogOptions()
        opts.enable_console_logger = False
        opts.system_log_path = self.path
        libspu.logging.setup_logging(opts)
        self.seen = 0

    def new_links(self):
        """The 'Link details' lines logged since the last call."""
        try:
            with open(self.path, errors="replace") as f:
                text = f.read()
        except FileNotFoundError:
            return []
        lines = LINK_RE.findall(text[self.seen :])
        self.seen = len(text)
        return [tuple(int(v) for v in m) for m in lines]


def run_once(libspu, spu_api, config, executable, shares, capture):
    """One run at three parties over in-memory links: wall seconds, CPU seconds (the process's,
    all threads), the outputs and each party's link totals."""
    desc = libspu.link.Desc()
    for rank in range(3):
        desc.add_party(f"id_{rank}", f"thread_{rank}")
    outs, errors = [None] * 3, []
    start = threading.Barrier(4)

    def party(rank):
        try:
            lctx = libspu.link.create_mem(desc, rank)
            rt = spu_api.Runtime(lctx, libspu.RuntimeConfig(config))
            for name, share in zip(executable.input_names, shares):
                rt.set_var(name, share[rank])
            start.wait()
            rt.run(executable)
            outs[rank] = [rt.get_var(n) for n in executable.output_names]
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
            start.abort()

    threads = [threading.Thread(target=party, args=(r,)) for r in range(3)]
    for t in threads:
        t.start()
    try:
        start.wait()
    except threading.BrokenBarrierError:
        pass
    t0, c0 = time.perf_counter(), time.process_time()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    cpu = time.process_time() - c0
    if errors:
        raise errors[0]
    time.sleep(0.05)  # the log file is flushed by the logger's thread
    links = capture.new_links()
    if len(links) != 3:
        raise RuntimeError(f"expected 3 'Link details' log lines, found {len(links)}")
    return seconds, cpu, outs, links


def loadavg():
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="a,c", help="comma-separated: a, c (default a,c)")
    ap.add_argument("--batches", default="1,128", help="comma-separated (default 1,128)")
    ap.add_argument(
        "--protocols",
        default="aby3,semi2k",
        help="comma-separated SPU protocols: aby3, semi2k, securenn (default aby3,semi2k)",
    )
    ap.add_argument("--runs", type=int, default=3, help="runs per cell, median reported (3)")
    ap.add_argument("--out", required=True, help="JSON file to write (refuses to overwrite)")
    ap.add_argument("--force", action="store_true", help="overwrite --out")
    args = ap.parse_args()
    if os.path.exists(args.out) and not args.force:
        sys.exit(f"{args.out} exists; pass --force to overwrite it")
    if args.runs < 1:
        sys.exit("--runs must be at least 1")

    import spu.libspu as libspu

    capture = Capture(libspu)
    import jax
    import jax.numpy as jnp
    from jax import lax

    import spu.api as spu_api
    import spu.utils.frontend as spu_fe

    version = libspu._get_version()
    protocols = {
        "aby3": libspu.ProtocolKind.ABY3,
        "semi2k": libspu.ProtocolKind.SEMI2K,
        "securenn": libspu.ProtocolKind.SECURENN,
    }
    models = [m for m in args.models.split(",") if m]
    batches = [int(b) for b in args.batches.split(",") if b]
    prots = [p for p in args.protocols.split(",") if p]
    for p in prots:
        if p not in protocols:
            sys.exit(f"--protocols: unknown protocol {p!r}; known: {', '.join(protocols)}")
    images_all, labels_all = test_split(max(batches))
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = []
    for model in models:
        weights = load_weights(model)
        names = sorted(weights)
        plain = network(model, np)
        secure = network(model, jnp, lax)
        for batch in batches:
            x, labels = images_all[:batch], labels_all[:batch]
            reference = plain(x, weights)

            def fn(x, *ws):
                return secure(x, dict(zip(names, ws)))

            args_flat = [x] + [weights[n] for n in names]
            t0 = time.perf_counter()
            executable, _ = spu_fe.compile(
                spu_fe.Kind.JAX,
                fn,
                args_flat,
                {},
                [f"in{i}" for i in range(len(args_flat))],
                [libspu.Visibility.VIS_SECRET] * len(args_flat),
                lambda outs: [f"out{i}" for i in range(len(outs))],
            )
            compile_seconds = time.perf_counter() - t0
            for prot in prots:
                config = libspu.RuntimeConfig(
                    protocol=protocols[prot], field=libspu.FieldType.FM64
                )
                config.enable_hal_profile = True  # logs each runtime's link totals
                io = spu_api.Io(3, config)
                shares = [
                    io.make_shares(np.asarray(a), libspu.Visibility.VIS_SECRET)
                    for a in args_flat
                ]
                load_before = loadavg()
                seconds_all, cpu_all, traffic = [], [], None
                for run in range(args.runs):
                    print(
                        f"  {model} batch {batch} {prot}: run {run + 1}/{args.runs}",
                        file=sys.stderr,
                        flush=True,
                    )
                    s, cpu, outs, links = run_once(
                        libspu, spu_api, config, executable, shares, capture
                    )
                    seconds_all.append(s)
                    cpu_all.append(cpu)
                    t = (sum(l[0] for l in links), sum(l[2] for l in links))
                    if traffic is not None and t != traffic:
                        sys.exit(
                            f"{model} batch {batch} {prot}: runs moved different traffic: "
                            f"{traffic} then {t}"
                        )
                    traffic = t
                predicted = np.asarray(io.reconstruct([o[0] for o in outs]))
                predicted = predicted.reshape(-1).astype(np.int64)
                seconds = statistics.median(seconds_all)
                row = {
                    "model": model,
                    "paper_network": PAPER_NAMES.get(model),
                    "batch": batch,
                    "network": "local",
                    "layout": "spu",
                    "protocol": prot,
                    "runs": args.runs,
                    "seconds": seconds,
                    "seconds_all": seconds_all,
                    "network_bound_seconds": None,
                    "bytes": traffic[0],
                    "reveal_bytes": None,
                    "rounds": None,
                    "messages": traffic[1],
                    "warm_seconds": None,
                    "warm_bytes": None,
                    "warm_rounds": None,
                    "wall_seconds": seconds,
                    "cpu_seconds": statistics.median(cpu_all),
                    "seed": None,
                    "engine": f"spu {version}",
                    "field": "FM64",
                    "fxp_fraction_bits": config.fxp_fraction_bits or 18,
                    "compile_seconds": compile_seconds,
                    "agreement": float(np.mean(predicted == reference)),
                    "accuracy": float(np.mean(predicted == labels)),
                    "plaintext_accuracy": float(np.mean(reference == labels)),
                    "loadavg_before": load_before,
                    "loadavg_after": loadavg(),
                    "date": date,
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                    "python": platform.python_version(),
                    "jax": jax.__version__,
                }
                print(
                    f"  {model} batch {batch} {prot}: {seconds:.3f} s, {traffic[0]} bytes, "
                    f"agreement {row['agreement']:.3f}",
                    file=sys.stderr,
                    flush=True,
                )
                rows.append(row)
    with open(args.out, "w") as f:
        json.dump(rows, f, indent=2)
        f.write("\n")
    print(f"rows written to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
