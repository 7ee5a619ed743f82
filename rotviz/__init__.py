"""rotviz: study self-supervised rotation prediction with saliency maps."""

__version__ = "0.1.0"
