"""Embedding throughput and memory: prints figures against the targets (not a test).

1. raw encoder throughput on random tensors (efficientnet_lite0 on the CPU; UNI's
   architecture with random weights, bf16, when CUDA is available);
2. end-to-end throughput (patch reading + DataLoader + encoder) on a real legacy ST
   section; target >= 90% of raw;
3. peak RSS of the process tree while embedding 5,000 spots of a generated
   40,000 x 40,000 px tiled pyramidal TIFF; target < 1.5 GB.

    python -m benchmarks.embedding_throughput --quick
    python -m benchmarks.embedding_throughput --her2st ../shared/data/her2st --section C2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

WSI_PX = 40_000
WSI_SPOTS = 5_000
TILE = 512


def raw_throughput(encoder, device, batch_size: int, batches: int) -> float:
    """Patches/s of normalisation + forward on random uint8 batches already in memory."""
    import torch

    from spahgc_kedro.encoders import forward_uint8, on_device

    on_cuda = device.type == "cuda"
    model, mean, std = on_device(encoder, device)
    size = encoder.spec.input_px
    batch = torch.randint(0, 256, (batch_size, size, size, 3), dtype=torch.uint8)
    with torch.inference_mode(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        for step in range(batches + 1):
            if step == 1:  # the first batch warms up kernels and allocators
                if on_cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
            forward_uint8(model, batch, mean, std, device).float().cpu()
    return batch_size * batches / (time.perf_counter() - start)


def end_to_end(encoder, device, patches, batch_size: int, num_workers: int) -> float:
    """Patches/s of the pipeline's own path: SpotPatches -> DataLoader -> encode_patches."""
    from spahgc_kedro.encoders import encode_patches

    start = time.perf_counter()
    encode_patches(encoder, patches, device, batch_size=batch_size, num_workers=num_workers, description="end-to-end")
    return len(patches) / (time.perf_counter() - start)


def write_wsi(path: Path, size: int, levels: int = 3) -> None:
    """A tiled, JPEG-compressed pyramidal TIFF written tile by tile from a generator (low memory)."""
    import tifffile

    rng = np.random.default_rng(0)
    palette = []
    for _ in range(8):
        blobs = np.kron(rng.random((TILE // 16, TILE // 16, 3)), np.ones((16, 16, 1)))
        palette.append((np.array([230, 150, 200]) * blobs + 255 * (1 - blobs)).astype(np.uint8))
    palette.append(np.full((TILE, TILE, 3), 245, np.uint8))

    def tiles(side: int):
        count = -(-side // TILE)
        for row in range(count):
            for col in range(count):
                yield palette[(row * 7 + col * 3) % len(palette)]

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        options = {"tile": (TILE, TILE), "photometric": "rgb", "compression": "jpeg", "dtype": np.uint8}
        tif.write(tiles(size), shape=(size, size, 3), subifds=levels - 1, **options)
        for level in range(1, levels):
            side = size // 2**level
            tif.write(tiles(side), shape=(side, side, 3), subfiletype=1, **options)


class PeakRss:
    """Samples the memory of this process and its children (DataLoader workers) in a thread.

    `peak` sums PSS (shared pages split between the processes sharing them), since forked
    workers share torch's libraries with the parent and summed RSS would count them twice;
    `peak_rss_sum` is the plain RSS sum, an upper bound.
    """

    def __init__(self, interval: float = 0.25) -> None:
        import psutil

        self._process, self._interval, self.peak, self.peak_rss_sum = psutil.Process(), interval, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import psutil

        while not self._stop.is_set():
            pss = rss = 0
            for process in [self._process, *self._process.children(recursive=True)]:
                try:
                    memory = process.memory_full_info()
                except psutil.Error:
                    continue
                pss, rss = pss + memory.pss, rss + memory.rss
            self.peak, self.peak_rss_sum = max(self.peak, pss), max(self.peak_rss_sum, rss)
            time.sleep(self._interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def wsi_peak_rss(args: argparse.Namespace) -> None:
    """Child-process entry: embed the generated WSI's spots and print the peak RSS."""
    import torch

    from spahgc_kedro.encoders import build_encoder, encode_patches, select_device
    from spahgc_kedro.patches import SpotPatches

    if args.threads:
        torch.set_num_threads(args.threads)
    with PeakRss() as rss:
        encoder, device = build_encoder("efficientnet_lite0"), select_device(args.device)
        centres = np.random.default_rng(1).uniform(0, WSI_PX, size=(args.wsi_spots, 2))
        patches = SpotPatches(args.wsi, centres, patch_px=224, output_px=encoder.spec.input_px)
        start = time.perf_counter()
        features = encode_patches(
            encoder, patches, device, batch_size=args.batch_size, num_workers=args.num_workers, description="wsi"
        )
        elapsed = time.perf_counter() - start
    print(
        f"WSI_RESULT {rss.peak / 2**30:.3f} {rss.peak_rss_sum / 2**30:.3f} {len(features) / elapsed:.1f} "
        f"{features.shape[0]} {features.shape[1]}"
    )


def throughput_figures(args: argparse.Namespace, device, batches: int) -> None:
    """Raw and end-to-end patches/s, printed."""
    from spahgc_kedro.encoders import REGISTRY, Encoder, build_encoder, create_architecture
    from spahgc_kedro.patches import SpotPatches
    from spahgc_kedro.readers import st_legacy

    encoder = build_encoder("efficientnet_lite0")
    raw = raw_throughput(encoder, device, args.batch_size, batches)
    print(f"[raw] efficientnet_lite0 on {device}: {raw:.1f} patches/s")
    if device.type == "cuda":
        uni = Encoder(REGISTRY["uni"], create_architecture(REGISTRY["uni"]).eval(), "random", "random")
        print(
            f"[raw] uni architecture (random weights, bf16) on {device}: "
            f"{raw_throughput(uni, device, 128, batches):.1f} patches/s"
        )

    her2st = Path(args.her2st)
    if her2st.is_dir():
        section = st_legacy.read_section(her2st, args.section)
        start = time.perf_counter()
        patches = SpotPatches(section.uns["image_path"], section.obsm["spatial"], patch_px=224, output_px=224)
        decode = time.perf_counter() - start
        e2e = end_to_end(encoder, device, patches, args.batch_size, args.num_workers)
        print(
            f"[end-to-end] her2st {args.section}: {len(patches)} spots, image decoded once in {decode:.1f} s, "
            f"{e2e:.1f} patches/s = {100 * e2e / raw:.0f}% of raw (target >= 90%)"
        )
    else:
        print(f"[end-to-end] skipped: no her2st data at {her2st}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1 torch thread, 1 worker, fewer raw batches")
    parser.add_argument("--her2st", default=str(Path(__file__).resolve().parents[1].parent / "shared/data/her2st"))
    parser.add_argument("--section", default="C2")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--wsi-spots", type=int, default=WSI_SPOTS, help="spots embedded on the generated WSI")
    parser.add_argument("--skip-raw", action="store_true", help="only the generated-WSI memory figure")
    parser.add_argument("--wsi", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.threads = args.threads or (1 if args.quick else 0)
    args.num_workers = args.num_workers if args.num_workers is not None else (1 if args.quick else 2)
    if args.wsi:
        return wsi_peak_rss(args)

    import subprocess

    import torch

    from spahgc_kedro.encoders import select_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    batches = 3 if args.quick else 10
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, DataLoader workers {args.num_workers}, "
        f"batch {args.batch_size}"
    )

    if not args.skip_raw:
        throughput_figures(args, device, batches)

    with tempfile.TemporaryDirectory() as tmp:
        wsi = Path(tmp) / "wsi.tif"
        start = time.perf_counter()
        write_wsi(wsi, WSI_PX)
        print(
            f"[wsi] generated {WSI_PX} x {WSI_PX} px pyramidal TIFF ({wsi.stat().st_size / 2**20:.0f} MiB) "
            f"in {time.perf_counter() - start:.0f} s"
        )
        child = subprocess.run(
            [
                sys.executable,
                __file__,
                "--wsi",
                str(wsi),
                "--wsi-spots",
                str(args.wsi_spots),
                "--device",
                args.device,
                "--batch-size",
                str(args.batch_size),
                "--num-workers",
                str(args.num_workers),
                "--threads",
                str(args.threads),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        peak, rss_sum, speed, rows, dim = next(
            line.split()[1:] for line in child.stdout.splitlines() if line.startswith("WSI_RESULT")
        )
        print(
            f"[wsi] {rows} spots -> [{rows}, {dim}] at {float(speed):.1f} patches/s; peak memory of process + "
            f"workers {float(peak):.2f} GB PSS (target < 1.5 GB; summed RSS, shared pages counted twice: "
            f"{float(rss_sum):.2f} GB)"
        )


if __name__ == "__main__":
    main()
