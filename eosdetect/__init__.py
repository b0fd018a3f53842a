"""eosdetect: find and count eosinophils (or any cell type) in stained slide images.

Pipeline: image -> tiles -> U-Net probability map -> stitched map -> watershed
-> cell detections -> counts, overlays, CSV/JSON, Pascal VOC XML.

TensorFlow is imported lazily (only by the functions that run a network), so
``import eosdetect`` and the array functions stay light.
"""

__version__ = "0.1.0"
