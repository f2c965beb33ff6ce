"""Certificate documents: the structured model (``model``), later rendering, anti-forgery
layers, the signed seal and the offline verifier."""
