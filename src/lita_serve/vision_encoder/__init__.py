"""Visual side of LITA: CLIP vision tower, projector, and LITA's visual-token layouts."""
