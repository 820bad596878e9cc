"""FlexyFace GPU worker."""
