"""fgcam: FG-CAM (Fine-Grained CAM, AAAI 2024) and its baselines, exact to the authors' reference code."""
