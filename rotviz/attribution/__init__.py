"""Attribution maps of a network's neurons (saliency and Captum methods)."""
