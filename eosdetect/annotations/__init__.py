"""Label files: Pascal VOC (as LabelImg writes it), point tables, masks, MoNuSeg XML, painted points, QuPath GeoJSON, napari points."""
