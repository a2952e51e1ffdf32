"""The thin runtime: load a patched model anywhere, get predictions and saliency pictures.

Needs numpy, pillow and one backend (openvino or onnxruntime) — never torch, onnx, cv2 or
matplotlib, so it runs in inference services and on edge devices as is::

    from ovxai.runtime import Explainer, pictures

    explainer = Explainer.load("resnet50_xai.xml", device="AUTO")
    for result in explainer.explain(["cat.jpg", "dog.png"], targets="top2"):  # or targets=[281, 285]
        print(result.top[0], result.maps.shape)
        pictures.save(result.overlay(0), "cat_saliency.jpg")  # JPEG, PNG or WebP by the extension

The steps of ``explain`` are public for callers that schedule inference themselves (benchmarks,
servers): ``batch = explainer.prepare(images)``, ``outputs = explainer.infer(batch)``,
``explainer.postprocess(batch, outputs, targets, top_k)``.
"""

from ovxai.runtime.explainer import Explainer, contact_sheet
from ovxai.runtime.images import ImageError, Preprocessing, image_files, named_image_files
from ovxai.runtime.reading import Batch, Explanation, Prediction, Targets, check_targets, parse_targets

__all__ = [
    "Batch",
    "Explainer",
    "Explanation",
    "ImageError",
    "Prediction",
    "Preprocessing",
    "Targets",
    "check_targets",
    "contact_sheet",
    "image_files",
    "named_image_files",
    "parse_targets",
]
