"""Edge-device loop: explain a folder of images, or a camera's frames, with OpenVINO (no torch).

    python samples/edge.py --model out/efficientnet_lite0_xai.xml --source samples/photos
    python samples/edge.py --model model_xai.xml --source camera:0 --frames 100   # needs opencv

Prints each image's top class and the throughput; writes overlays to --out (for a camera, the
latest frame only, so an SD card is not filled). Device AUTO lets OpenVINO pick CPU, iGPU or NPU.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ovxai.errors import OvxaiError
from ovxai.metadata import ModelInfo
from ovxai.runtime import Explainer, Explanation, ImageError, named_image_files, pictures


def run_folder(explainer: Explainer, folder: Path, out: Path, jobs: int) -> int:
    names = {str(file): name for file, name in named_image_files([folder]).items()}  # unique per subfolder
    files = list(names)
    if not files:
        raise OvxaiError(f"no images in '{folder}'", "point --source at a folder of JPEG/PNG files")

    def skip(item: object, exc: ImageError) -> None:
        print(f"skipped: {exc}", file=sys.stderr)

    start, count = time.perf_counter(), 0
    for result in explainer.explain_many(files, jobs=jobs, on_error=skip):
        count += 1
        _report(result, time.perf_counter() - start, count)
        pictures.save(result.overlay(0), out / f"{names[result.source]}_saliency.jpg")
    return count


def run_camera(explainer: Explainer, index: int, out: Path, frames: int) -> int:
    try:
        import cv2  # only the camera needs it
    except ImportError:
        raise OvxaiError("camera capture needs OpenCV", "pip install opencv-python-headless") from None
    camera = cv2.VideoCapture(index)
    if not camera.isOpened():
        raise OvxaiError(f"camera {index} cannot be opened", "check the device index or use --source FOLDER")
    start, count = time.perf_counter(), 0
    try:
        while frames <= 0 or count < frames:
            ok, frame = camera.read()
            if not ok:
                break
            result = explainer.explain(frame[..., ::-1].copy())[0]  # OpenCV delivers BGR
            count += 1
            _report(result, time.perf_counter() - start, count)
            pictures.save(result.overlay(0), out / "latest.jpg")  # whole: a viewer never reads half
    finally:
        camera.release()
    return count


def _report(result: Explanation, elapsed: float, count: int) -> None:
    best = result.top[0]
    print(f"{count:5d}  {best.label.split(',')[0]:<30} {best.score * 100:5.1f} %   {count / elapsed:6.1f} images/s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--source", required=True, help="a folder of images, or camera:INDEX")
    parser.add_argument("--device", default="AUTO")
    parser.add_argument("--out", type=Path, default=Path("out/edge"))
    parser.add_argument("--jobs", type=int, default=2, help="requests in flight for a folder")
    parser.add_argument("--frames", type=int, default=0, help="stop after this many camera frames (0: never)")
    parser.add_argument("--mean", help="per-channel mean, needed if the model records none (e.g. 0)")
    parser.add_argument("--scale", help="per-channel scale, needed if the model records none (e.g. 1)")
    args = parser.parse_args(argv)
    try:
        given = ModelInfo.from_options(mean=args.mean, scale=args.scale)
        explainer = Explainer.load(args.model, device=args.device, mean=given.mean, scale=given.scale)
        args.out.mkdir(parents=True, exist_ok=True)
        if args.source.startswith("camera:"):
            count = run_camera(explainer, int(args.source.split(":", 1)[1] or 0), args.out, args.frames)
        else:
            count = run_folder(explainer, Path(args.source), args.out, args.jobs)
    except (OvxaiError, ValueError) as exc:
        print("edge: error: " + re.sub(r"\b(mean|scale|jobs)=\s*", r"--\1 ", str(exc)), file=sys.stderr)  # our flags
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"done: {count} image(s), overlays in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
