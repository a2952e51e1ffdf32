"""Evaluation harness: Recipro-CAM (ovxai) against the CAM family, Integrated Grad-CAM and RISE on a real
pretrained CNN. Run ``python -m tools.eval [--quick]`` from the repository root; see ``run.py``."""
