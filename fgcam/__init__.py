"""fgcam: FG-CAM (Fine-Grained CAM, AAAI 2024) and its baselines, exact to the authors' reference code.

>>> import fgcam
>>> maps = fgcam.explain(model, images, "fg-grad-cam", "features.13")   # [B, 56, 56] for VGG16-BN at 224 px
"""
from .explain import METHODS, ChannelWeights, Explainer, default_cam_layer, explain
from .graph import leaf_names
from . import data, models  # noqa: E402  (fgcam.data.make_shapes, fgcam.models.load)

__version__ = "0.1.0"
__all__ = ["data", "models", "METHODS", "ChannelWeights", "Explainer", "default_cam_layer", "explain", "leaf_names",
           "__version__"]
